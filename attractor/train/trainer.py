"""One training loop for every model.

The loop owns what every run needs: gradient accumulation, autocast (bf16 on CUDA,
float32 on CPU), clipping, a guard that skips non-finite steps, the learning-rate
schedule, EMA weights, periodic evaluation, logs, checkpoints and exact resume, on one
process or many (torchrun; DDP or FSDP2). What is trained comes from a task object:
`next_batch()`, `loss(model, batch) -> (loss, output)`, `step_flops(model, output)`,
`evaluate(model)` and its data position; a task with deep supervision (the puzzles) runs
its supervision steps inside `loss`, in this same loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from attractor.core.atomic import atomic_write_json
from attractor.core.provenance import provenance
from attractor.core.typed_config import merge, to_data
from attractor.data.puzzles import split_geometry
from attractor.models import (
    GridModel,
    Model,
    config_with,
    family,
    load_pretrained_with,
    model_from_config,
)
from attractor.train.checkpoint import (
    config_changes,
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)
from attractor.train.compile import compile_blocks
from attractor.train.config import ModelSpec, RunConfig
from attractor.train.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    setup_distributed,
    wrap_model,
)
from attractor.train.ema import EMA
from attractor.train.lm_task import LanguageModelingTask
from attractor.train.metrics_log import MetricsLog
from attractor.train.optim import make_optimizer
from attractor.train.puzzle_task import PuzzleTask
from attractor.train.schedule import lr_factor

TRAINING_RECORD = "training.json"
BUILT = "model as built"  # a resume compares the built model's config too: presets change


def build_run_model(spec: ModelSpec, data: dict[str, Any] | None = None) -> Model:
    """The preset with `data`'s fields (a puzzle split's grid geometry), then the spec's
    overrides on top (nested configs such as solvers as mappings); with `spec.init_from`
    the imported model, its config with the overrides on top."""
    if spec.init_from is not None:
        return load_pretrained_with(spec.init_from, spec.overrides)
    overrides = merge(data or {}, spec.overrides)
    return model_from_config(config_with(spec.preset, overrides, "model.overrides"))


def build_model_and_task(cfg: RunConfig, info: DistInfo) -> tuple[Model, Any]:
    """The run's model on its device and the task that feeds it: next-token prediction for
    language models, deep supervision on a puzzle split for grid models (whose grid size
    and vocabulary come from the split)."""
    from attractor.models import PRESETS

    grid = cfg.model.init_from is None and issubclass(
        family(PRESETS[cfg.model.preset][0])[0], GridModel
    )
    if grid:
        model = build_run_model(cfg.model, split_geometry(cfg.data.source)).to(info.device)
        return model, PuzzleTask(cfg.data, info, model)
    model = build_run_model(cfg.model).to(info.device)
    return model, LanguageModelingTask(cfg.data, info, model.config.vocab_size)


TIME_BAR = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
)


@dataclasses.dataclass
class StepResult:
    loss: float
    grad_norm: float
    skipped: bool
    solver_iters: float | None
    solver_stalled: float | None  # fraction of solver samples stopped at the noise floor
    flops: float  # this step's training FLOPs over every process


class Trainer:
    """Builds model, task, optimizer and logs from a RunConfig; `fit()` runs the loop."""

    def __init__(self, cfg: RunConfig, info: DistInfo | None = None):
        self.cfg = cfg
        self.info = info or setup_distributed(
            None if cfg.train.device == "auto" else cfg.train.device
        )
        torch.manual_seed(cfg.train.seed)
        self.raw, self.task = build_model_and_task(cfg, self.info)
        if cfg.train.compile:  # the blocks only: the solver loop and its hooks stay eager
            compile_blocks(self.raw)
        self.model = wrap_model(self.raw, cfg.train.strategy, self.info)
        self.opt = make_optimizer(self.raw, cfg.optim)
        self.ema = EMA(self.raw, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.out_dir = Path(cfg.train.out_dir)
        self.log = MetricsLog(self.out_dir, self.info.is_main, self.task.eval_fields)
        self.train_seconds = 0.0  # time in train_step, evaluation and checkpoints excluded
        self.train_flops = 0.0  # counted from the iterations each step ran
        self.step, self.bad_steps = 0, 0
        self.history: list[dict[str, Any]] = []
        self._resume()

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        if self.info.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> StepResult:
        """Accumulate gradients over micro-batches, clip, and step unless non-finite."""
        accum = self.cfg.train.grad_accum
        self.lr_factor = self._lr_factor()
        self.opt.set_lr_factor(self.lr_factor)
        self.opt.set_step(min(self.step, self.cfg.train.steps), self.cfg.train.steps)
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.info.device)
        iters, stalled, flops = [], [], []
        for i in range(accum):
            batch = self.task.next_batch()
            no_sync = getattr(self.model, "no_sync", None)
            sync_ctx = (
                no_sync() if no_sync is not None and i < accum - 1 else contextlib.nullcontext()
            )
            with sync_ctx, self._autocast():
                loss, out = self.task.loss(self.model, batch)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
            if out.solver is not None:
                iters.append(out.solver.iters)
                if out.solver.stalled is not None:
                    stalled.append(out.solver.stalled.float().mean())
            flops.append(self.task.step_flops(self.raw, out) * self.info.world_size)
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), clip)
        loss_mean = all_reduce_mean(loss_sum / accum)
        finite = bool(torch.isfinite(loss_mean) & torch.isfinite(grad_norm))
        if finite and self.cfg.optim.updates_at(self.step):
            self.opt.step()
            if self.ema is not None:
                self.ema.update(self.raw)
            self.bad_steps = 0
        else:
            self.opt.zero_grad(set_to_none=True)
            self.bad_steps += 1
            if self.bad_steps >= self.cfg.train.max_bad_steps:
                raise RuntimeError(
                    f"train: {self.bad_steps} non-finite steps in a row at step {self.step}; "
                    "lower optim.lr, raise train.grad_clip protection, or check the data"
                )
        self.step += 1
        return StepResult(
            loss=float(loss_mean),
            grad_norm=float(grad_norm),
            skipped=not finite,
            solver_iters=sum(iters) / len(iters) if iters else None,
            solver_stalled=float(torch.stack(stalled).mean()) if stalled else None,
            flops=sum(flops),
        )

    # ------------------------------------------------------------------ the loop
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        try:
            if self.ema is not None:
                with self.ema.applied(self.raw):
                    return self.task.evaluate(self.model, self.cfg.train.eval_batches)
            return self.task.evaluate(self.model, self.cfg.train.eval_batches)
        finally:
            self.model.train()

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until cfg.train.steps (or `stop_at`, to pause a run); returns the last row."""
        t = self.cfg.train
        end = min(t.steps, stop_at if stop_at is not None else t.steps)
        bar = self._progress(end)
        tokens = self.task.tokens_per_batch() * t.grad_accum * self.info.world_size
        row: dict[str, Any] = {}
        if t.eval_every and self.step == 0:  # the untrained baseline
            self.log.write({"step": 0, **self.evaluate()})
        self.model.train()
        while self.step < end and not self.out_of_time():
            start = time.perf_counter()
            result = self.train_step()
            self.train_seconds += time.perf_counter() - start
            self.train_flops += result.flops
            row = {
                "step": self.step,
                "loss": result.loss,
                "lr_factor": self.lr_factor,
                "grad_norm": result.grad_norm,
                "tokens_per_s": tokens / (time.perf_counter() - start),
                "solver_iters": result.solver_iters,
                "solver_stalled": result.solver_stalled,
                "skipped": int(result.skipped),
                "elapsed_s": self.train_seconds,
                "train_flops": self.train_flops,
            }
            last = self.step == t.steps or self.out_of_time()
            evaluated = t.eval_every > 0 and (self.step % t.eval_every == 0 or last)
            if evaluated:
                row.update(self.evaluate())
            if self.step % t.log_every == 0 or evaluated or result.skipped:
                self.log.write(row)
            self.history.append(row)
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save()
            if bar is not None:
                seconds = min(round(self.train_seconds, 1), bar.total)  # the last step overshoots
                bar.update(1 if bar.unit == "it" else seconds - bar.n)
                bar.set_postfix(_postfix(row))
        if bar is not None:
            bar.close()
        self.save()
        if self.step >= t.steps or self.out_of_time():
            self.export()
        return row

    def out_of_time(self) -> bool:
        """True once train.time_budget_s (when set) of training steps have run."""
        budget = self.cfg.train.time_budget_s
        return budget > 0 and self.train_seconds >= budget

    def _lr_factor(self) -> float:
        """The schedule at this step; with a time budget, at the larger of the step's and
        the elapsed time's share of the run (warm-up stays in steps)."""
        t, step = self.cfg.train, self.step
        if t.time_budget_s > 0 and step >= self.cfg.schedule.warmup_steps:
            step = max(step, int(t.steps * self.train_seconds / t.time_budget_s))
        return lr_factor(min(step, t.steps), t.steps, self.cfg.schedule)

    def export(self) -> Path:
        """The finished model (EMA weights when kept) with its tokenizer, as a checkpoint
        directory for `attractor eval` and `attractor generate`: out_dir/model, with
        training.json recording the data (and so the validation split) it trained on and
        the EMA decay of the weights saved (0: the raw weights)."""
        directory = self.out_dir / "model"
        if self.info.is_main:
            weights = (
                self.ema.applied(self.raw) if self.ema is not None else contextlib.nullcontext()
            )
            with weights:
                self.raw.save_pretrained(str(directory))
            self.task.export(directory)
            ema = self.cfg.train.ema_decay if self.ema is not None else 0.0
            record = {"data": to_data(self.cfg.data), "steps": self.step, "ema_decay": ema}
            record.update(provenance())
            atomic_write_json(directory / TRAINING_RECORD, record)
        return directory

    def _progress(self, end: int):
        if not (self.cfg.train.progress and self.info.is_main):
            return None
        from tqdm.auto import tqdm

        budget = self.cfg.train.time_budget_s
        if budget > 0:  # the bar counts training seconds
            return tqdm(
                total=budget,
                initial=round(self.train_seconds, 1),
                unit="s",
                desc="train",
                dynamic_ncols=True,
                bar_format=TIME_BAR,
            )
        return tqdm(total=end, initial=self.step, desc="train", dynamic_ncols=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": to_data(self.cfg),
            "model_config": self.raw.config_dict(),  # the preset as built, which code can change
            "step": self.step,
            "bad_steps": self.bad_steps,
            "train_seconds": self.train_seconds,
            "train_flops": self.train_flops,
            "model": self.raw.state_dict(),
            "optimizer": self.opt.state_dict(),
            "ema": None if self.ema is None else self.ema.shadow,
            "rng": all_gather_object(rng_state()),
            "data": all_gather_object(self.task.state_dict()),
        }

    def save(self) -> None:
        state = self.state_dict()  # every rank joins the gathers
        if self.info.is_main:
            save_training_state(state, self.out_dir)

    def _resume(self) -> None:
        state = load_training_state(self.out_dir)
        if state is None:
            return
        if len(state["data"]) != self.info.world_size:
            raise ValueError(
                f"resume: the checkpoint in {self.out_dir} was written by "
                f"{len(state['data'])} processes, this run has {self.info.world_size}; "
                "resume with the same number of processes or use a new train.out_dir"
            )
        now = {**to_data(self.cfg), BUILT: self.raw.config_dict()}
        then = {**state.get("config", now), BUILT: state.get("model_config", now[BUILT])}
        changes = config_changes(then, now)
        if changes:
            raise ValueError(
                f"resume: the checkpoint in {self.out_dir} is of a run with another "
                f"configuration ({'; '.join(changes[:4])}"
                f"{f'; and {len(changes) - 4} more' if len(changes) > 4 else ''}); resume "
                "with the configuration and code it was written by (only train.steps and how "
                "the run is logged, evaluated and placed may change) or use a new train.out_dir"
            )
        self.raw.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.shadow = state["ema"]
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.train_seconds = state.get("train_seconds", 0.0)
        self.train_flops = state.get("train_flops", 0.0)
        self.task.load_state_dict(state["data"][self.info.rank])
        set_rng_state(state["rng"][self.info.rank])
        self.log.drop_after(self.step)  # rows a killed run logged past its last checkpoint


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{row['loss']:.3f}", "tok/s": f"{row['tokens_per_s']:.0f}"}
    if row.get("solver_iters") is not None:
        out["iters"] = f"{row['solver_iters']:.1f}"
    if row.get("solver_stalled"):
        out["stalled"] = f"{row['solver_stalled']:.0%}"
    if "val_loss" in row:
        out["val"] = f"{row['val_loss']:.3f}"
    if "exact_acc" in row:
        out["exact"] = f"{row['exact_acc']:.3f}"
    return out
