"""PuzzleTask (deep supervision with a batch in flight) and the trainer on a puzzle split."""

import csv
from collections import Counter

import pytest
import torch

from attractor.train.config import DataConfig, load_config
from attractor.data import sudoku
from attractor.data.puzzles import build_sudoku_split, load_split
from attractor.models import build_model
from attractor.models.pretrained import load_pretrained
from attractor.train.distributed import DistInfo
from attractor.train.puzzle_task import PuzzleTask, split_geometry
from attractor.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TINY = dict(dim=32, n_heads=2)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sudoku6")
    build_sudoku_split(directory, box=(2, 3), n_train=40, n_test=20, seed=0, minimal=True)
    return directory


def tiny(split, preset: str = "reasoner-cpu", **fields):
    torch.manual_seed(0)
    return build_model(preset, **TINY, **split_geometry(str(split)), **fields)


def task_for(split, model, batch_size: int = 6, augment: bool = False) -> PuzzleTask:
    cfg = DataConfig(source=str(split), batch_size=batch_size, augment=augment, seed=0)
    return PuzzleTask(cfg, CPU, model)


def grid(tokens: torch.Tensor):
    return sudoku.from_tokens(tokens.numpy())


def train_questions(split) -> list[bytes]:
    train, _, _ = load_split(split)
    return [bytes(sudoku.to_tokens(p.question).astype("int8")) for p in train]


def as_key(tokens: torch.Tensor) -> bytes:
    return bytes(tokens.numpy().astype("int8"))


def test_split_geometry_of_a_6x6_split(split):
    assert split_geometry(str(split)) == {"vocab_size": 8, "side": 6, "box_rows": 2, "box_cols": 3}


def test_first_batch_holds_distinct_train_puzzles_and_the_initial_carry(split):
    model = tiny(split)
    task = task_for(split, model, batch_size=8)
    inputs, labels, carry = task.next_batch()
    questions = train_questions(split)
    assert inputs.shape == labels.shape == (8, 36)
    rows = [as_key(row) for row in inputs]
    assert len(set(rows)) == 8 and set(rows) <= set(questions)
    for q, a in zip(inputs, labels, strict=True):
        assert sudoku.is_solution(grid(a), grid(q))
    torch.testing.assert_close(carry, model.initial_carry(8), rtol=0, atol=0)


def test_augmented_rows_are_valid_puzzles_with_a_train_puzzle_s_givens(split):
    task = task_for(split, tiny(split), batch_size=8, augment=True)
    inputs, labels, _ = task.next_batch()
    train, _, _ = load_split(split)
    givens = Counter(int((p.question != 0).sum()) for p in train)
    plain = set(train_questions(split))
    augmented = 0
    for q, a in zip(inputs, labels, strict=True):
        assert sudoku.is_solution(grid(a), grid(q))
        assert givens[int((grid(q) != 0).sum())] > 0
        augmented += as_key(q) not in plain
    assert augmented > 0  # augmentation changed at least one of the 8 rows


def test_rows_that_halt_are_refilled_and_reset_the_others_keep_their_state(split):
    model = tiny(split, n_sup=3, halt_explore=0.0)
    task = task_for(split, model)
    initial = model.initial_carry(6)
    with torch.no_grad():
        model.readout.halt.bias.fill_(-50.0)  # the halting logit never fires

    # one step: nobody halts, everything carries over
    batch = task.next_batch()
    before = batch[0].clone()
    _, out = task.loss(model, batch)
    moved = out.carry.clone()
    assert not torch.allclose(moved, initial)
    inputs, _, carry = task.next_batch()
    torch.testing.assert_close(inputs, before, rtol=0, atol=0)
    torch.testing.assert_close(carry, moved, rtol=0, atol=0)

    # rows 0 and 1 reach n_sup on the next step; rows 2..5 have one step to go
    task.steps[:2] = 2
    _, out = task.loss(model, (inputs, task.labels, carry))
    moved = out.carry.clone()
    inputs2, labels2, carry2 = task.next_batch()
    torch.testing.assert_close(carry2[:2], initial[:2], rtol=0, atol=0)
    torch.testing.assert_close(carry2[2:], moved[2:], rtol=0, atol=0)
    torch.testing.assert_close(inputs2[2:], before[2:], rtol=0, atol=0)
    seen = {as_key(row) for row in before}
    assert all(as_key(row) not in seen for row in inputs2[:2])  # fresh puzzles
    for q, a in zip(inputs2, labels2, strict=True):
        assert sudoku.is_solution(grid(a), grid(q))
    assert task.steps.tolist() == [0, 0, 2, 2, 2, 2]

    # a positive halting logit ends every row after its step
    with torch.no_grad():
        model.readout.halt.bias.fill_(50.0)
    kept = inputs2.clone()
    _, out = task.loss(model, (inputs2, labels2, carry2))
    assert (out.halt_logits > 0).all()
    inputs3, _, carry3 = task.next_batch()
    torch.testing.assert_close(carry3, initial, rtol=0, atol=0)
    assert all(not torch.equal(a, b) for a, b in zip(inputs3, kept, strict=True))
    assert task.steps.tolist() == [0] * 6


def test_a_model_without_carry_gets_fresh_puzzles_every_step(split):
    model = tiny(split, "grid-transformer-cpu")
    task = task_for(split, model)
    inputs, _, carry = task.next_batch()
    assert carry is None
    first = inputs.clone()
    loss, _ = task.loss(model, (inputs, task.labels, carry))
    assert torch.isfinite(loss)
    inputs, _, carry = task.next_batch()
    assert carry is None
    assert {as_key(r) for r in inputs}.isdisjoint({as_key(r) for r in first})


def test_evaluate_reports_accuracies_in_range(split):
    model = tiny(split, n_sup=2)
    task = task_for(split, model, batch_size=8)
    metrics = task.evaluate(model, batches=1)
    assert 0.0 <= metrics["exact_acc"] <= 1.0 and 0.0 <= metrics["cell_acc"] <= 1.0
    assert 1.0 <= metrics["halt_step"] <= 2.0
    assert metrics["val_solver_iters"] >= 1.0
    assert set(metrics) <= set(task.eval_fields)


def test_a_source_without_a_split_names_the_command(tmp_path):
    model = build_model("reasoner-cpu", **TINY, side=6, box_rows=2, box_cols=3, vocab_size=8)
    with pytest.raises(ValueError, match="attractor data puzzles"):
        PuzzleTask(DataConfig(source=str(tmp_path), batch_size=2), CPU, model)
    with pytest.raises(ValueError, match="attractor data puzzles"):
        Trainer(run_config(tmp_path, tmp_path / "run", steps=1))


# ----------------------------------------------------------------------------- the trainer


def run_config(split, out_dir, steps: int, *extra: str):
    return load_config(
        None,
        [
            "model.preset=reasoner-cpu",
            "model.overrides={'dim': 32, 'n_heads': 2, 'n_sup': 2}",
            f"data.source={split}",
            "data.batch_size=4",
            f"train.steps={steps}",
            "train.log_every=1",
            "train.eval_every=0",
            "train.progress=false",
            "train.device=cpu",
            f"train.out_dir={out_dir}",
            *extra,
        ],
    )


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_trainer_fits_evaluates_and_exports_a_puzzle_model(split, tmp_path):
    trainer = Trainer(run_config(split, tmp_path, 4, "train.eval_every=2", "train.eval_batches=1"))
    trainer.fit()
    assert trainer.step == 4
    rows = read_rows(tmp_path / "metrics.csv")
    assert "exact_acc" in rows[0] and "cell_acc" in rows[0]
    evaluated = [r for r in rows if r["exact_acc"] != ""]
    assert [r["step"] for r in evaluated] == ["0", "2", "4"]
    assert all(0.0 <= float(r["exact_acc"]) <= 1.0 for r in evaluated)
    loaded = load_pretrained(tmp_path / "model").eval()
    assert loaded.kind == "reasoner" and loaded.config.side == 6 and loaded.config.dim == 32
    raw = trainer.raw.eval()
    inputs = trainer.task.test[0]["inputs"][None]  # (1, 36)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs).logits, raw(inputs).logits, rtol=0, atol=0)


def test_time_budget_stops_the_run_early(split, tmp_path):
    budget = 2.0
    trainer = Trainer(run_config(split, tmp_path, 10**6, f"train.time_budget_s={budget}"))
    trainer.fit()
    assert 0 < trainer.step < 10**6
    rows = read_rows(tmp_path / "metrics.csv")
    assert len(rows) == trainer.step
    assert float(rows[-1]["elapsed_s"]) >= budget
    if len(rows) > 1:  # it stopped at the first step past the budget
        assert float(rows[-2]["elapsed_s"]) < budget
    assert (tmp_path / "model" / "config.json").is_file()


def _ddp_puzzle_worker(rank: int, init_file: str, split: str, out_dir: str, preset: str) -> None:
    import os

    from attractor.train.distributed import setup_distributed, teardown_distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = setup_distributed("cpu", init_method=f"file://{init_file}")
    try:
        cfg = run_config(
            split, out_dir, 3, "train.strategy=ddp", "train.eval_every=3", "train.eval_batches=1",
            f"model.preset={preset}",
        )  # fmt: skip
        trainer = Trainer(cfg, info)
        row = trainer.fit()
        params = torch.cat([p.detach().flatten() for p in trainer.raw.parameters()])
        torch.save({"params": params, "row": row}, f"{out_dir}/rank{rank}.pt")
    finally:
        teardown_distributed()


@pytest.mark.parametrize("preset", ["reasoner-cpu", "grid-transformer-cpu"])
def test_ddp_trains_a_puzzle_model_on_two_processes(split, tmp_path, preset):
    """Every parameter gets a gradient (DDP would stop otherwise), the ranks stay in step,
    and the evaluation is reduced over both ranks."""
    from spawn import run_processes

    run_processes(
        _ddp_puzzle_worker, (str(tmp_path / "pg"), str(split), str(tmp_path), preset), nprocs=2
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert ranks[0]["row"]["step"] == 3
    assert ranks[0]["row"]["exact_acc"] == ranks[1]["row"]["exact_acc"]
    assert 0.0 <= ranks[0]["row"]["cell_acc"] <= 1.0
