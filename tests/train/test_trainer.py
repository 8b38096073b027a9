"""The training loop: exact resume, kill-safe checkpoints, the non-finite guard,
accumulation, EMA, schedules, distributed equivalence and the command line."""

import csv
import faulthandler
import gc
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from spawn import run_processes

from attractor.cli import main as cli_main
from attractor.train.checkpoint import STALE_TEMPORARIES, load_training_state, save_training_state
from attractor.train.config import RunConfig, ScheduleConfig, load_config, named_configs
from attractor.train.distributed import setup_distributed, teardown_distributed
from attractor.train.schedule import lr_factor
from attractor.train.trainer import Trainer

TINY = {"vocab_size": 257, "dim": 32, "n_heads": 2, "max_seq_len": 32}


def tiny_config(out_dir, preset="gpt-cpu", steps=6, extra=(), **train) -> RunConfig:
    sets = [
        f"model.preset={preset}",
        "model.overrides=" + repr(TINY | ({"n_layers": 2} if preset == "gpt-cpu" else {})),
        "data.seq_len=16",
        "data.batch_size=4",
        f"train.steps={steps}",
        "train.eval_every=0",
        "train.progress=false",
        f"train.out_dir={out_dir}",
        "train.device=cpu",
        "optim.name=muon-ns",  # exact comparisons: no bfloat16 orthogonalisation, no skipped step
    ] + [f"train.{k}={v}" for k, v in train.items()]
    sets += list(extra)  # last, so they override the defaults above
    return load_config(None, sets)


def param_vector(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.raw.parameters()])


@pytest.mark.parametrize("preset", ["gpt-cpu", "attractor-cpu"])
def test_resume_gives_the_same_losses_as_a_straight_run(tmp_path, preset):
    straight = Trainer(tiny_config(tmp_path / "a", preset, steps=20, ema_decay=0.9))
    straight.fit()
    paused = Trainer(tiny_config(tmp_path / "b", preset, steps=20, ema_decay=0.9))
    paused.fit(stop_at=10)
    resumed = Trainer(tiny_config(tmp_path / "b", preset, steps=20, ema_decay=0.9))
    assert resumed.step == 10
    resumed.fit()
    losses = [r["loss"] for r in paused.history + resumed.history]
    expected = [r["loss"] for r in straight.history]
    assert len(losses) == 20
    assert max(abs(a - b) for a, b in zip(losses, expected, strict=True)) <= 1e-6
    assert torch.allclose(param_vector(resumed), param_vector(straight), atol=1e-6)


def _logged_steps(out_dir) -> list[int]:
    with (Path(out_dir) / "metrics.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_a_run_killed_after_its_checkpoint_resumes_and_logs_each_step_once(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", steps=12, log_every=1))
    straight.fit()
    run = Trainer(tiny_config(tmp_path / "b", steps=12, log_every=1))
    run.fit(stop_at=5)  # the last checkpoint: step 5
    checkpoint = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    run.fit(stop_at=8)  # steps 6-8 logged, then "killed": their checkpoint is lost
    (tmp_path / "b" / "checkpoint.pt").write_bytes(checkpoint)
    resumed = Trainer(tiny_config(tmp_path / "b", steps=12, log_every=1))
    assert resumed.step == 5
    resumed.fit()
    assert _logged_steps(tmp_path / "b") == list(range(1, 13))
    with (tmp_path / "b" / "metrics.csv").open(newline="") as fh:
        logged = [float(row["loss"]) for row in csv.DictReader(fh)]
    expected = [r["loss"] for r in straight.history]
    assert max(abs(a - b) for a, b in zip(logged, expected, strict=True)) <= 1e-6


def test_resuming_with_another_configuration_is_refused_and_keeps_the_checkpoint(tmp_path):
    Trainer(tiny_config(tmp_path, steps=6, log_every=1)).fit(stop_at=3)
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError) as err:
        Trainer(tiny_config(tmp_path, steps=6, extra=["optim.lr=0.5", "data.seed=3"]))
    message = str(err.value)
    assert "another configuration" in message and "new train.out_dir" in message
    assert "optim.lr: 0.008 then, 0.5 now" in message and "data.seed: 0 then, 3 now" in message
    with pytest.raises(ValueError, match=r"model\.overrides\.dim: 32 then, 48 now"):
        Trainer(tiny_config(tmp_path, extra=["model.overrides.dim=48"]))  # before any shape error
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved
    state = load_training_state(tmp_path)
    built = state["model_config"]["mlp_ratio"]
    state["model_config"]["mlp_ratio"] = built + 1  # the preset as other code built it
    save_training_state(state, tmp_path)
    with pytest.raises(ValueError, match=rf"model as built\.mlp_ratio: {built + 1} then"):
        Trainer(tiny_config(tmp_path))
    state["model_config"]["mlp_ratio"] = built
    save_training_state(state, tmp_path)
    longer = Trainer(tiny_config(tmp_path, steps=9, log_every=3, eval_every=3))
    assert longer.step == 3  # the length and the logging may change


_SAVER = """
import sys, torch
from attractor.train.checkpoint import save_training_state
big = torch.randn(4_000_000)
i = 0
while True:
    i += 1
    save_training_state({"step": i, "payload": big}, sys.argv[1])
    print(i, flush=True)
"""


def test_sigkill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    save_training_state({"step": 0, "payload": torch.zeros(3)}, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline()  # at least one complete save happened
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(STALE_TEMPORARIES)) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert list(tmp_path.glob(STALE_TEMPORARIES))  # caught in the middle of a save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(tmp_path.glob(STALE_TEMPORARIES))  # the dead process left its temp file
    state = load_training_state(tmp_path)
    assert state["step"] >= 1 and state["payload"].numel() == 4_000_000
    save_training_state({"step": -1}, tmp_path)  # the next save clears the dead one's temp file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_training_state(tmp_path) == {"step": -1}


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, steps=8, max_bad_steps=3, log_every=1))
    real_loss = trainer.task.loss
    calls = [0]

    def sometimes_nan(model, batch):
        calls[0] += 1
        loss, out = real_loss(model, batch)
        return (loss * math.nan if calls[0] in (2, 4, 5, 6) else loss), out

    monkeypatch.setattr(trainer.task, "loss", sometimes_nan)
    before = param_vector(trainer)
    trainer.train_step()
    after_good = param_vector(trainer)
    result = trainer.train_step()  # NaN: skipped, weights untouched
    assert result.skipped and torch.equal(param_vector(trainer), after_good)
    assert not torch.equal(after_good, before)
    trainer.train_step()  # good again: the counter resets
    with pytest.raises(RuntimeError, match="3 non-finite steps in a row"):
        trainer.fit()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert any(r["skipped"] == "1" for r in rows)


def grad_vector(trainer) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in trainer.raw.parameters()])


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    one = Trainer(tiny_config(tmp_path / "a", steps=1, grad_clip=0))
    one.cfg.data.batch_size = 8
    one.task = type(one.task)(one.cfg.data, one.info, 257)
    one.train_step()
    two = Trainer(tiny_config(tmp_path / "b", steps=1, grad_clip=0, grad_accum=2))
    two.train_step()
    assert torch.allclose(grad_vector(one), grad_vector(two), rtol=1e-5, atol=1e-8)


def test_ema_follows_its_recurrence(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, steps=3, ema_decay=0.5))
    name = "embed.weight"
    ema = trainer.raw.state_dict()[name].clone()
    for _ in range(3):
        trainer.train_step()
        ema = 0.5 * ema + 0.5 * trainer.raw.state_dict()[name]
    assert torch.allclose(trainer.ema.shadow[name], ema, atol=1e-7)


def test_schedules_match_their_formulas():
    trap = ScheduleConfig("trapezoid", warmup_steps=2, decay_fraction=0.5)
    assert [lr_factor(s, 10, trap) for s in range(10)] == pytest.approx(
        [0.5, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2]
    )
    cos = ScheduleConfig("cosine", warmup_steps=0, min_factor=0.1)
    assert lr_factor(0, 11, cos) == pytest.approx(1.0)
    assert lr_factor(5, 11, cos) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 11))
    )
    assert lr_factor(3, 10, ScheduleConfig("constant", warmup_steps=4)) == pytest.approx(1.0)
    with pytest.raises(
        ValueError, match="'linear' is not one of 'trapezoid', 'cosine', 'constant'"
    ):
        ScheduleConfig("linear")


# AdamW's first steps are lr * g / (|g| + eps): with a tiny eps, gradients of size ~1e-9
# (rounding noise of summing two halves instead of one batch) move a weight by ~lr.
STABLE = ("optim.eps=1e-4",)


def _ddp_worker(rank: int, init_file: str, out_dir: str, result_file: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # two workers on two cores: more threads wait on each other
    faulthandler.dump_traceback_later(150, exit=True)  # a hang prints every thread's stack
    info = setup_distributed("cpu", init_method=f"file://{init_file}")
    trainer = Trainer(tiny_config(out_dir, steps=5, extra=STABLE, strategy="ddp"), info)
    trainer.fit()
    if rank == 0:
        torch.save(param_vector(trainer), result_file)
    # DDP's reducer goes before the process group, not at interpreter exit, where gloo's
    # release of the last collectives can deadlock (pytorch/pytorch#75097 reports the hang)
    del trainer
    gc.collect()
    teardown_distributed()


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "params.pt")
        args = (os.path.join(tmp, "pg"), str(tmp_path / "ddp"), result)
        run_processes(_ddp_worker, args, nprocs=2, timeout=180.0)
        ddp = torch.load(result)
    single = Trainer(tiny_config(tmp_path / "one", steps=5, extra=STABLE))
    single.cfg.data.batch_size = 8  # the same global batch: 2 x 4
    single.task = type(single.task)(single.cfg.data, single.info, 257)
    single.fit()
    assert (ddp - param_vector(single)).abs().max() < 1e-5


def test_unknown_config_key_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^train.stpes: unknown key; valid keys under train: "):
        load_config(None, ["train.stpes=3"])
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("model:\n  presett: gpt-cpu\n")
    assert cli_main(["train", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.presett" in err[0] and "preset" in err[0]


def test_cli_trains_and_lowers_validation_loss(tmp_path, capsys):
    sets = [
        f"--set={s}"
        for s in [
            "model.preset=gpt-cpu",
            "model.overrides=" + repr(TINY | {"n_layers": 2}),
            "data.seq_len=32",
            "data.batch_size=8",
            "train.steps=30",
            "train.eval_every=30",
            "train.eval_batches=2",
            "train.progress=false",
            f"train.out_dir={tmp_path}",
            "train.device=cpu",
            "optim.lr=0.01",
            "optim.muon_lr=0.02",
        ]
    ]
    assert cli_main(["train", *sets]) == 0
    rows = [r for r in csv.DictReader((tmp_path / "metrics.csv").open()) if r["val_loss"]]
    assert rows[0]["step"] == "0" and float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert "done at step 30" in capsys.readouterr().out
    assert (Path(tmp_path) / "checkpoint.pt").is_file()


def test_the_packaged_configs_are_the_yaml_files_of_attractor_configs():
    shipped = Path(__file__).parents[2] / "attractor" / "configs"
    names = sorted(p.stem for p in shipped.glob("*.yaml"))
    assert len(names) >= 10 and named_configs() == names


@pytest.mark.parametrize("name", named_configs())
def test_every_shipped_config_parses_and_names_a_buildable_model(name):
    from attractor.train.trainer import build_run_model

    cfg = load_config(name)
    with torch.device("meta"):
        model = build_run_model(cfg.model)
    assert model.num_params() > 0


def test_finished_run_exports_a_loadable_checkpoint_with_its_tokenizer(tmp_path):
    from attractor.data.tokenizer import load_tokenizer
    from attractor.models.pretrained import load_pretrained

    trainer = Trainer(tiny_config(tmp_path, steps=2, ema_decay=0.5))
    trainer.fit()
    model = load_pretrained(tmp_path / "model")
    with trainer.ema.applied(trainer.raw):
        for name, value in trainer.raw.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), name  # the EMA weights
    assert load_tokenizer(tmp_path / "model").decode([104, 105]) == "hi"


def test_trains_on_prepared_token_shards(tmp_path):
    from attractor.data.text import prepare_text

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox " * 40)
    prepare_text(str(corpus), tmp_path / "shards", vocab_size=300, val_fraction=0.2)
    sets = [f"data.source={tmp_path / 'shards'}", "model.overrides.vocab_size=300"]
    trainer = Trainer(tiny_config(tmp_path / "run", steps=3, extra=sets))
    assert trainer.task.tokenizer.vocab_size <= 300
    row = trainer.fit()
    assert math.isfinite(row["loss"])
    with pytest.raises(ValueError, match="neither pydoc, synthetic nor a directory"):
        Trainer(tiny_config(tmp_path / "run2", extra=["data.source=/no/such/dir"]))


def test_train_flops_add_up_the_hand_counted_matmuls_of_every_step(tmp_path):
    # gpt-cpu at TINY with 2 layers: per token, a block's weights cost 2 (2 d^2 + 2 d kv +
    # 2 d 4d) and attention 4 d (T + 1) / 2 for causal T = 16; the unembedding 2 d V; the
    # value embedding of the last layer a gate Linear(32, n_kv_heads = 2); a training step
    # is 3 forwards (forward + backward). Value-embedding lookups are free.
    d, vocab, seq, batch = 32, 257, 16, 4
    block = 2 * (2 * d * d + 2 * d * d + 2 * d * 4 * d) + 4 * d * (seq + 1) / 2
    gate = 2 * 32 * 2
    per_token = 3 * (2 * block + 2 * d * vocab + gate)
    trainer = Trainer(tiny_config(tmp_path / "a", steps=3, log_every=1))
    assert list(trainer.raw.value_embeds) == ["1"]
    assert tuple(trainer.raw.value_embeds["1"].gate.weight.shape) == (2, 32)
    trainer.fit()
    assert trainer.train_flops == pytest.approx(3 * batch * seq * per_token, rel=1e-9)
    with (tmp_path / "a" / "metrics.csv").open() as fh:
        logged = [float(r["train_flops"]) for r in csv.DictReader(fh) if r["train_flops"]]
    assert logged == pytest.approx([k * batch * seq * per_token for k in (1, 2, 3)])
    resumed = Trainer(tiny_config(tmp_path / "a", steps=5))
    assert resumed.train_flops == pytest.approx(trainer.train_flops)


def test_train_flops_of_the_attractor_count_the_head_applications_each_step_ran(tmp_path):
    # attractor-cpu at TINY (jfb backward): 5 backbone blocks and the tied unembedding are
    # backpropagated (3 forwards); the head (1 block) is counted where it was dispatched: a
    # hook sees the sequences of every call, those of the solve (no graph) at 1 forward, the
    # recorded application at 3 (forward + backward).
    d, vocab, seq, batch = 32, 257, 16, 4
    block = 2 * (2 * d * d + 2 * d * d + 2 * d * 4 * d) + 4 * d * (seq + 1) / 2
    trainer = Trainer(tiny_config(tmp_path / "a", "attractor-cpu", steps=3))
    assert (trainer.raw.config.n_backbone, trainer.raw.config.n_head_layers) == (5, 1)
    assert trainer.raw.config.fixed_point.backward == "jfb"
    calls: list[tuple[int, bool]] = []

    def count(module, inputs, output):
        calls.append((inputs[0].shape[0], torch.is_grad_enabled()))

    trainer.raw.head.register_forward_hook(count)
    for _ in range(3):
        calls.clear()
        result = trainer.train_step()
        solve = sum(rows for rows, graph in calls if not graph)
        recorded = sum(rows for rows, graph in calls if graph)
        assert recorded == batch and solve >= 2 * batch  # min_iter 2: every row twice
        head = block * (solve + 3 * recorded) / batch
        per_token = 3 * (5 * block + 2 * d * vocab) + head
        assert result.flops == pytest.approx(batch * seq * per_token, rel=1e-9)


WRITES = re.compile(
    r"tempfile|mkstemp|os\.replace|\.rename\(|\.write_text\(|\.write_bytes\(|json\.dump\("
    r"|open\([^)]*['\"][wa]b?['\"]"
)


def test_the_train_layer_writes_files_only_through_the_one_atomic_write():
    """No module of attractor/train opens a file for writing, renames or makes a temporary
    file itself (training state, training.json and exports go through attractor.core.atomic
    or the model's save_pretrained); metrics.csv, an appended log, is the one exception."""
    train = Path(sys.modules[Trainer.__module__].__file__).parent
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(train.glob("*.py"))
        if path.name != "metrics_log.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if WRITES.search(line)
    ]
    assert len(list(train.glob("*.py"))) > 5 and not found, found
    users = {p.name for p in train.glob("*.py") if "attractor.core.atomic" in p.read_text()}
    assert {"checkpoint.py", "trainer.py"} <= users
