"""One training loop for every model.

The loop owns what every run needs: gradient accumulation, autocast (bf16 on CUDA,
float32 on CPU), clipping, a guard that skips non-finite steps, the learning-rate
schedule, EMA weights, periodic evaluation, logs, checkpoints and exact resume, on one
process or many (torchrun; DDP or FSDP2). What is trained comes from a task object:
`next_batch()`, `loss(model, batch) -> (loss, output)`, `evaluate(model)` and its data
position; a task with deep supervision (the puzzles) runs its supervision steps inside
`loss`, in this same loop.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attractor.config import DataConfig, ModelSpec, RunConfig, to_dict
from attractor.data.lm import Windows, pydoc_documents, split_documents, token_stream
from attractor.data.sampler import ShardedSampler
from attractor.data.tokenizer import ByteTokenizer
from attractor.flops import train_flops_per_token
from attractor.models.base import LanguageModel, ModelOutput
from attractor.presets import PRESETS, preset_config
from attractor.pretrained import config_from_dict
from attractor.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from attractor.train.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    setup_distributed,
    wrap_model,
)
from attractor.train.optim import build_optimizer
from attractor.train.schedule import lr_factor


def build_run_model(spec: ModelSpec, data: dict[str, Any] | None = None) -> LanguageModel:
    """The preset with `data`'s fields (a puzzle split's grid geometry), then the spec's
    overrides on top (nested configs such as solvers may be dicts)."""
    from attractor.presets import model_from_config

    base = dataclasses.asdict(preset_config(spec.preset))
    merged = _deep_merge(_deep_merge(base, data or {}), spec.overrides)
    return model_from_config(config_from_dict({"kind": PRESETS[spec.preset][0], **merged}))


def _deep_merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class LanguageModelingTask:
    """Next-token prediction on (x, y) windows, each rank reading its own shard."""

    eval_fields = ("val_loss", "val_ppl")

    def __init__(self, cfg: DataConfig, info: DistInfo, vocab_size: int):
        self.cfg, self.info = cfg, info
        self.tokenizer = ByteTokenizer()
        if cfg.source == "synthetic":
            self.train, self.val = self._synthetic(vocab_size)
        elif cfg.source == "pydoc":
            if vocab_size < ByteTokenizer.vocab_size:
                raise ValueError(
                    f"data: the byte-level corpus needs vocab_size >= "
                    f"{ByteTokenizer.vocab_size}, the model has {vocab_size}; "
                    "set model.overrides.vocab_size"
                )
            docs = split_documents(pydoc_documents(), cfg.val_fraction, cfg.seed)
            self.train, self.val = (Windows(token_stream(d), cfg.seq_len) for d in docs)
        else:
            self.train, self.val = self._prepared(cfg.source, vocab_size)
        self.sampler = ShardedSampler(
            len(self.train), rank=info.rank, world_size=info.world_size, seed=cfg.seed
        )
        self._batches = self.sampler.batches(cfg.batch_size)

    def _prepared(self, directory: str, vocab_size: int) -> tuple[Any, Any]:
        """Token shards made by `attractor data text --out DIRECTORY`."""
        from attractor.data.text import ShardWindows

        if not Path(directory).is_dir():
            raise ValueError(
                f"data.source: {directory!r} is neither pydoc, synthetic nor a directory of "
                "token shards; make one with `attractor data text --source ... --out DIR`"
            )
        train = ShardWindows(directory, "train", seq_len=self.cfg.seq_len)
        if train.meta["vocab_size"] > vocab_size:
            raise ValueError(
                f"data: the tokenizer in {directory} has {train.meta['vocab_size']} tokens, the "
                f"model only {vocab_size}; set model.overrides.vocab_size"
            )
        self.tokenizer = train.tokenizer
        return train, ShardWindows(directory, "val", seq_len=self.cfg.seq_len)

    def _synthetic(self, vocab_size: int) -> tuple[Windows, Windows]:
        """Uniform random tokens (seeded): for throughput measurements, nothing to learn."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        n = 64 * self.cfg.batch_size * (self.cfg.seq_len + 1)
        tokens = torch.randint(0, vocab_size, (2 * n,), generator=gen)
        return Windows(tokens[:n], self.cfg.seq_len), Windows(tokens[n:], self.cfg.seq_len)

    def tokens_per_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len

    def next_batch(self) -> tuple[Tensor, Tensor]:
        x, y = self.train.batch(next(self._batches))
        return x.to(self.info.device), y.to(self.info.device)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, ModelOutput]:
        x, y = batch
        out = model(x, labels=y)
        return out.loss, out

    def step_flops(self, model: LanguageModel, out: ModelOutput) -> float:
        """Training FLOPs of one micro-batch, counted from the solver iterations (or the
        looped model's depth) it ran: `attractor.flops.train_flops_per_token` x tokens."""
        per_token = train_flops_per_token(
            model,
            self.cfg.seq_len,
            solver_iters=float(out.solver.iters) if out.solver is not None else 0.0,
            depth=getattr(model, "depth_used", None),
        )
        return per_token * self.tokens_per_batch()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: int) -> dict[str, float]:
        """Mean validation loss over the first `batches` batches (shared out over ranks)."""
        n = min(len(self.val), batches * self.cfg.batch_size)
        mine = list(range(self.info.rank, n, self.info.world_size))
        total = torch.zeros(2, device=self.info.device)  # loss sum, windows
        for i in range(0, len(mine), self.cfg.batch_size):
            x, y = self.val.batch(mine[i : i + self.cfg.batch_size])
            out = model(x.to(self.info.device), labels=y.to(self.info.device))
            total[0] += out.loss.float() * x.shape[0]
            total[1] += x.shape[0]
        total = all_reduce_mean(total)
        loss = float(total[0] / total[1].clamp_min(1))
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def export(self, directory: Path) -> None:
        """Save the tokenizer beside the exported model."""
        self.tokenizer.save(directory)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._batches = self.sampler.batches(self.cfg.batch_size)


def build_model_and_task(cfg: RunConfig, info: DistInfo) -> tuple[LanguageModel, Any]:
    """The run's model on its device and the task that feeds it: next-token prediction for
    language models, deep supervision on a puzzle split for grid models (whose grid size
    and vocabulary come from the split)."""
    from attractor.models.grid import GridModel
    from attractor.presets import KINDS
    from attractor.train.puzzle_task import PuzzleTask, split_geometry

    if cfg.model.preset not in PRESETS:
        preset_config(cfg.model.preset)  # raises the unknown-preset error
    if issubclass(KINDS[PRESETS[cfg.model.preset][0]][0], GridModel):
        geometry = _split_geometry_or_error(cfg.data.source, split_geometry)
        model = build_run_model(cfg.model, geometry).to(info.device)
        return model, PuzzleTask(cfg.data, info, model)
    model = build_run_model(cfg.model).to(info.device)
    return model, LanguageModelingTask(cfg.data, info, model.config.vocab_size)


def _split_geometry_or_error(source: str, read: Any) -> dict[str, int]:
    try:
        return read(source)
    except FileNotFoundError:
        raise ValueError(
            f"data.source: {source!r} holds no puzzle split (split.json); make one with "
            "`attractor data puzzles --kind sudoku --out DIR`"
        ) from None


TIME_BAR = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
)


class EMA:
    """Exponential moving average of the weights: s <- d s + (1 - d) p after every step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v, 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Run the body with the EMA weights loaded, then restore the live ones."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(live)


class MetricsLog:
    """metrics.csv (one row per logged step) and TensorBoard when it is installed."""

    TRAIN_FIELDS = (
        "step",
        "loss",
        "lr_factor",
        "grad_norm",
        "tokens_per_s",
        "solver_iters",
        "skipped",
        "elapsed_s",
        "train_flops",
    )

    def __init__(self, directory: Path, enabled: bool, eval_fields: tuple[str, ...] = ()):
        self.enabled = enabled
        self.fields = self.TRAIN_FIELDS + tuple(eval_fields)
        self.writer = None
        if not enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.csv"
        if not self.path.exists():
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self.fields)
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(directory / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in self.fields])
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])


@dataclasses.dataclass
class StepResult:
    loss: float
    grad_norm: float
    skipped: bool
    solver_iters: float | None
    flops: float | None  # this step's training FLOPs over every process, when counted


class Trainer:
    """Builds model, task, optimizer and logs from a RunConfig; `fit()` runs the loop."""

    def __init__(self, cfg: RunConfig, info: DistInfo | None = None):
        self.cfg = cfg
        self.info = info or setup_distributed(
            None if cfg.train.device == "auto" else cfg.train.device
        )
        torch.manual_seed(cfg.train.seed)
        self.raw, self.task = build_model_and_task(cfg, self.info)
        self.model = wrap_model(self.raw, cfg.train.strategy, self.info)
        self.opt = build_optimizer(self.raw, cfg.optim)
        self.ema = EMA(self.raw, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.out_dir = Path(cfg.train.out_dir)
        self.log = MetricsLog(self.out_dir, self.info.is_main, self.task.eval_fields)
        self.train_seconds = 0.0  # time in train_step, evaluation and checkpoints excluded
        self.train_flops = 0.0  # counted from the iterations each step ran (LM tasks)
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
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.info.device)
        iters, flops = [], []
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
            step_flops = getattr(self.task, "step_flops", None)
            if step_flops is not None:
                flops.append(step_flops(self.raw, out) * self.info.world_size)
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), clip)
        loss_mean = all_reduce_mean(loss_sum / accum)
        finite = bool(torch.isfinite(loss_mean) & torch.isfinite(grad_norm))
        if finite:
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
            flops=sum(flops) if flops else None,
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
            self.train_flops += result.flops or 0.0
            row = {
                "step": self.step,
                "loss": result.loss,
                "lr_factor": self.lr_factor,
                "grad_norm": result.grad_norm,
                "tokens_per_s": tokens / (time.perf_counter() - start),
                "solver_iters": result.solver_iters,
                "skipped": int(result.skipped),
                "elapsed_s": self.train_seconds,
                "train_flops": self.train_flops if result.flops is not None else None,
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
        directory for `attractor eval` and `attractor generate`: out_dir/model."""
        directory = self.out_dir / "model"
        if self.info.is_main:
            weights = (
                self.ema.applied(self.raw) if self.ema is not None else contextlib.nullcontext()
            )
            with weights:
                self.raw.save_pretrained(str(directory))
            self.task.export(directory)
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
            "config": to_dict(self.cfg),
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
            save_checkpoint(state, self.out_dir)

    def _resume(self) -> None:
        state = load_checkpoint(self.out_dir)
        if state is None:
            return
        if len(state["data"]) != self.info.world_size:
            raise ValueError(
                f"resume: the checkpoint in {self.out_dir} was written by "
                f"{len(state['data'])} processes, this run has {self.info.world_size}; "
                "resume with the same number of processes or use a new train.out_dir"
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


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{row['loss']:.3f}", "tok/s": f"{row['tokens_per_s']:.0f}"}
    if row.get("solver_iters") is not None:
        out["iters"] = f"{row['solver_iters']:.1f}"
    if "val_loss" in row:
        out["val"] = f"{row['val_loss']:.3f}"
    if "exact_acc" in row:
        out["exact"] = f"{row['exact_acc']:.3f}"
    return out
