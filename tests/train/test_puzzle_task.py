"""PuzzleTask (deep supervision with a batch in flight) and the trainer on a puzzle split.

References are computed here: the halting and refill bookkeeping by a hand-simulated
schedule (a scripted stand-in model fixes when each puzzle is solved and wants to halt, the
draw order is the sampler's documented rule), the loss by the stable-max and BCE formulas
in numpy, and the evaluation metrics by counting a hand-run loop's predictions puzzle by
puzzle."""

import csv
import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attractor.data import sudoku
from attractor.data.puzzles import build_sudoku_split, load_split, split_geometry
from attractor.models import build_model
from attractor.models.grid import GridOutput
from attractor.models.pretrained import load_pretrained
from attractor.train.config import DataConfig, load_config
from attractor.train.distributed import DistInfo
from attractor.train.puzzle_task import PuzzleTask
from attractor.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TINY = dict(dim=32, n_heads=2)
N_TRAIN, N_TEST, VOCAB, CELLS = 40, 20, 8, 36


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sudoku6")
    build_sudoku_split(directory, box=(2, 3), n_train=N_TRAIN, n_test=N_TEST, seed=0, minimal=True)
    return directory


def tiny(split, preset: str = "reasoner-joint-cpu", **fields):
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


def tokens_of(puzzles, field: str) -> list[Tensor]:
    return [torch.from_numpy(sudoku.to_tokens(getattr(p, field))) for p in puzzles]


# ----------------------------------------------------------------------------- a scripted model


class Scripted(nn.Module):
    """A recurrent stand-in for a grid model whose outputs follow a script keyed by the
    question: the carry counts the steps a row has run on its puzzle; from step `solved` on
    every cell is predicted right (before: the question as it is, so every blank is wrong),
    from step `halts` on the halting logit is +1 (before: -1). Logits are 3 one-hot - 1
    plus seeded noise of std 0.3, so they take both signs and the argmax is the scripted
    token."""

    recurrent = True

    def __init__(self, n_sup: int, halt_explore: float = 0.0):
        super().__init__()
        self.config = SimpleNamespace(cells=CELLS, n_sup=n_sup, halt_explore=halt_explore)
        self.script: dict[bytes, tuple[int, int]] = {}  # question -> (solved, halts)
        self.answers: dict[bytes, Tensor] = {}
        self.gen = torch.Generator().manual_seed(5)

    def learn(self, puzzles, solved: list[int], halts: list[int]) -> None:
        """Script `puzzles` (sudoku.Puzzle) with their steps of solving and halting."""
        questions, answers = tokens_of(puzzles, "question"), tokens_of(puzzles, "answer")
        for q, a, s, h in zip(questions, answers, solved, halts, strict=True):
            self.script[as_key(q)] = (s, h)
            self.answers[as_key(q)] = a

    def initial_carry(self, batch_size: int) -> Tensor:
        return torch.zeros(batch_size, dtype=torch.long)

    def forward(self, inputs: Tensor, carry: Tensor | None = None, depth=None) -> GridOutput:
        run = (self.initial_carry(len(inputs)) if carry is None else carry) + 1
        script = torch.tensor([self.script[as_key(q)] for q in inputs])  # (B, 2)
        answers = torch.stack([self.answers[as_key(q)] for q in inputs])
        predicted = torch.where((run >= script[:, 0])[:, None], answers, inputs)
        noise = 0.3 * torch.randn(*predicted.shape, VOCAB, generator=self.gen)
        logits = 3.0 * F.one_hot(predicted, VOCAB).float() - 1.0 + noise
        halt = torch.where(run >= script[:, 1], 1.0, -1.0)
        return GridOutput(logits, halt, carry=run)


def documented_draws(n: int, seed: int = 0, epochs: int = 3) -> list[int]:
    """The order one process draws training puzzles in: epoch e is torch.randperm(n) from a
    generator seeded seed + e (attractor.data.sampler's documented rule)."""
    draws = []
    for epoch in range(epochs):
        draws += torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return draws


# ----------------------------------------------------------------------------- references


def stablemax_ce(logits: Tensor, labels: Tensor) -> float:
    """Mean over cells of -log p_label, p = s(v) / sum s(v), s(v) = v + 1 (v >= 0) or
    1 / (1 - v) (v < 0), in float64."""
    v = logits.detach().double().numpy()
    s = np.where(v >= 0, v + 1.0, 1.0 / (1.0 - v))
    p = s / s.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(p, labels.numpy()[..., None], axis=-1)[..., 0]
    return float(-np.log(picked).mean())


def bce(logit: Tensor, target: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logit) against target, in float64."""
    prob = 1.0 / (1.0 + np.exp(-logit.detach().double().numpy()))
    return float(-(target * np.log(prob) + (1 - target) * np.log(1 - prob)).mean())


def direct_counts(model, batches) -> Counter:
    """Run every supervision step by hand (carrying the state; one step for a model without
    one) and count, puzzle by puzzle: exact grids after the last step, blank cells right,
    the first step whose halting logit is positive (the last if none) and exactness there,
    and the solver iterations of each step."""
    counts: Counter = Counter()
    steps = model.config.n_sup if model.recurrent else 1
    for inputs, labels in batches:
        carry, preds, halts, iters = None, [], [], []
        with torch.no_grad():
            for _ in range(steps):
                out = model(inputs, carry=carry)
                carry = out.carry
                preds.append(out.logits.argmax(dim=-1))
                halts.append(out.halt_logits > 0)
                if out.solver is not None:
                    iters.append(out.solver.iters)
        for b in range(len(inputs)):
            blank = inputs[b] == sudoku.BLANK  # the blank token
            counts["puzzles"] += 1
            counts["exact"] += int(torch.equal(preds[-1][b], labels[b]))
            counts["right"] += int(((preds[-1][b] == labels[b]) & blank).sum())
            counts["blanks"] += int(blank.sum())
            counts["right_all"] += int((preds[-1][b] == labels[b]).sum())
            counts["cells"] += labels.shape[1]
            stop = next((s for s in range(steps) if halts[s][b]), steps - 1)
            counts["halt_step"] += stop + 1
            counts["halt_exact"] += int(torch.equal(preds[stop][b], labels[b]))
            if iters:
                counts["iters"] += sum(iters) / len(iters)
                counts["solved"] += 1
    return counts


def metrics_of(counts: Counter) -> dict[str, float]:
    out = {
        "exact_acc": counts["exact"] / counts["puzzles"],
        "cell_acc": counts["right"] / counts["blanks"],
        "cell_acc_all": counts["right_all"] / counts["cells"],
        "halt_step": counts["halt_step"] / counts["puzzles"],
        "halt_exact_acc": counts["halt_exact"] / counts["puzzles"],
    }
    if counts["solved"]:
        out["val_solver_iters"] = counts["iters"] / counts["solved"]
    return out


def batches_of(task: PuzzleTask, groups: list[list[int]]):
    """(inputs, labels) of the test puzzles in each group of indices."""
    for group in groups:
        items = [task.test[i] for i in group]
        yield (
            torch.stack([it["inputs"] for it in items]),
            torch.stack([it["labels"] for it in items]),
        )


# ----------------------------------------------------------------------------- batches


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


def test_halting_and_refills_follow_a_hand_simulated_schedule(split):
    """Puzzle i of the training set wants to halt after 1 + i % 4 steps (n_sup 3 caps the
    4s); a halted row gets the next puzzle of the documented draw order, its carry and step
    count start over, the other rows keep theirs."""
    train, _, _ = load_split(split)
    keys = [as_key(q) for q in tokens_of(train, "question")]
    index = {key: i for i, key in enumerate(keys)}
    wants = [1 + i % 4 for i in range(len(train))]
    model = Scripted(n_sup=3)
    model.learn(train, solved=[99] * len(train), halts=wants)
    task = task_for(split, model, batch_size=5)
    answers = tokens_of(train, "answer")

    draws = iter(documented_draws(len(train)))
    rows: list[int | None] = [None] * 5
    ran = [0] * 5
    lifetimes = []
    for _ in range(14):
        for r in range(5):
            if rows[r] is None:
                rows[r], ran[r] = next(draws), 0
        inputs, labels, carry = task.next_batch()
        assert [index[as_key(q)] for q in inputs] == rows
        assert all(torch.equal(labels[r], answers[rows[r]]) for r in range(5))
        assert carry.tolist() == ran
        task.loss(model, (inputs, labels, carry))
        ran = [k + 1 for k in ran]
        assert task.steps.tolist() == ran
        done = [k >= min(3, wants[i]) for k, i in zip(ran, rows, strict=True)]
        assert task.halted.tolist() == done
        for r in range(5):
            if done[r]:
                lifetimes.append(ran[r])
                rows[r] = None
    assert set(lifetimes) == {1, 2, 3}  # every branch of the schedule ran


@pytest.mark.parametrize("explore, lifetimes", [(0.0, {1}), (1.0, {2, 3, 4})])
def test_exploration_holds_a_halting_row_for_a_random_minimum_of_steps(split, explore, lifetimes):
    """Every halting logit is positive from the first step. Without exploration every row
    halts after one step; when every row explores (probability 1), a row halts only once
    it has run a minimum drawn from 2 .. n_sup, so after 2, 3 or 4 steps, never 1."""
    train, _, _ = load_split(split)
    model = Scripted(n_sup=4, halt_explore=explore)
    model.learn(train, solved=[99] * len(train), halts=[1] * len(train))
    task = task_for(split, model, batch_size=5)
    seen = []
    for _ in range(24):
        task.loss(model, task.next_batch())
        seen += task.steps[task.halted].tolist()
    assert set(seen) == lifetimes


def test_the_loss_is_stablemax_cross_entropy_plus_half_the_halting_bce(split):
    train, _, _ = load_split(split)
    model = Scripted(n_sup=3)
    task = task_for(split, model, batch_size=6)
    inputs, labels, carry = task.next_batch()
    right = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # rows whose grid is solved at step 1
    rows = [next(p for p in train if as_key(q) == as_key(tokens_of([p], "question")[0]))
            for q in inputs]  # fmt: skip
    model.learn(rows, solved=[1 if r else 2 for r in right], halts=[1, 2, 1, 2, 1, 2])
    loss, out = task.loss(model, (inputs, labels, carry))
    assert (out.halt_logits > 0).tolist() == [True, False, True, False, True, False]
    expected = stablemax_ce(out.logits, labels) + 0.5 * bce(out.halt_logits, right)
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    # a real model's logits, and its halting targets (every cell right) counted here
    model = tiny(split)
    task = task_for(split, model, batch_size=6)
    inputs, labels, carry = task.next_batch()
    loss, out = task.loss(model, (inputs, labels, carry))
    predicted = out.logits.argmax(-1)
    right = np.array([float(torch.equal(p, y)) for p, y in zip(predicted, labels, strict=True)])
    expected = stablemax_ce(out.logits, labels) + 0.5 * bce(out.halt_logits, right)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every one


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


def test_evaluate_gives_the_accuracies_of_a_scripted_model(split):
    """Test puzzle j is solved from step solved[j] (3: never, with n_sup 2) and wants to
    halt from step halts[j] (3: never); the metrics follow by hand."""
    _, test, _ = load_split(split)
    model = Scripted(n_sup=2)
    solved, halts = [1, 2, 3, 1, 2, 3, 1, 2], [1, 1, 2, 2, 3, 3, 1, 3]
    model.learn(test[:8], solved, halts)
    task = task_for(split, model, batch_size=8)
    metrics = task.evaluate(model, batches=1)
    blanks = [int((p.question == 0).sum()) for p in test[:8]]
    solved_blanks = sum(b for b, s in zip(blanks, solved, strict=True) if s <= 2)
    assert metrics == pytest.approx(
        {
            "exact_acc": 6 / 8,  # all but puzzles 2 and 5
            "cell_acc": solved_blanks / sum(blanks),  # unsolved rows get every blank wrong
            "cell_acc_all": 1 - (sum(blanks) - solved_blanks) / (8 * CELLS),  # givens right
            "halt_step": (1 + 1 + 2 + 2 + 2 + 2 + 1 + 2) / 8,  # never halting: step 2
            "halt_exact_acc": 5 / 8,  # solved by the halting step: puzzles 0, 3, 4, 6, 7
        }
    )


def test_evaluate_equals_a_direct_count_of_the_predictions(split):
    model = tiny(split, n_sup=2).eval()
    task = task_for(split, model, batch_size=4)
    groups = [[0, 1, 2, 3], [4, 5, 6, 7]]  # what evaluate(batches=2) scores
    with torch.no_grad():  # a random halting head biased so that some halt at step 1
        model.readout.halt.weight.normal_(generator=torch.Generator().manual_seed(3))
        inputs = torch.cat([x for x, _ in batches_of(task, groups)])
        model.readout.halt.bias -= model(inputs).halt_logits.median()
    metrics = task.evaluate(model, batches=2)
    direct = metrics_of(direct_counts(model, batches_of(task, groups)))
    assert set(metrics) == set(task.eval_fields) == set(direct)
    assert metrics == pytest.approx(direct)
    assert 1.0 < direct["halt_step"] < 2.0


def test_a_source_without_a_split_names_the_command(tmp_path):
    model = build_model("reasoner-joint-cpu", **TINY, side=6, box_rows=2, box_cols=3, vocab_size=8)
    with pytest.raises(ValueError, match="attractor data puzzles"):
        PuzzleTask(DataConfig(source=str(tmp_path), batch_size=2), CPU, model)
    with pytest.raises(ValueError, match="attractor data puzzles"):
        Trainer(run_config(tmp_path, tmp_path / "run", steps=1))


# ----------------------------------------------------------------------------- the trainer


def run_config(split, out_dir, steps: int, *extra: str):
    return load_config(
        None,
        [
            "model.preset=reasoner-joint-cpu",
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
    evaluated = [r for r in rows if r["exact_acc"] != ""]
    assert [r["step"] for r in evaluated] == ["0", "2", "4"]
    loaded = load_pretrained(tmp_path / "model").eval()
    assert loaded.kind == "reasoner" and loaded.config.side == 6 and loaded.config.dim == 32
    # the evaluation logged at the last step is a direct count with the exported weights
    # on the first eval_batches x batch_size = 4 test puzzles
    direct = metrics_of(direct_counts(loaded, batches_of(trainer.task, [[0, 1, 2, 3]])))
    assert {k: float(evaluated[-1][k]) for k in direct} == pytest.approx(direct)
    raw = trainer.raw.eval()
    inputs = trainer.task.test[0]["inputs"][None]  # (1, 36)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs).logits, raw(inputs).logits, rtol=0, atol=0)


def test_one_trainer_trains_the_papers_scheme_with_its_prefix_and_exports_ema(
    split, tmp_path, capsys
):
    """reasoner-cpu (the nested scheme) with the paper's puzzle-embedding prefix, through
    the same trainer: the embedding is on sign descent and moves, the export holds the EMA
    weights and says so, and `attractor eval` labels them."""
    from attractor.cli import main
    from attractor.train.optim import SignSGD

    overrides = "{'dim': 32, 'n_heads': 2, 'n_sup': 2, 'prefix': 'puzzle'}"
    extra = ("model.preset=reasoner-cpu", "train.ema_decay=0.5", f"model.overrides={overrides}")
    trainer = Trainer(run_config(split, tmp_path, 2, *extra))
    assert isinstance(trainer.opt.optimizers["signsgd"], SignSGD)
    trainer.fit()
    assert trainer.raw.embed.puzzle.weight.abs().sum() > 0  # it starts at zero
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["ema_decay"] == 0.5
    loaded = load_pretrained(tmp_path / "model")
    assert loaded.kind == "reasoner_nested"
    for name, p in loaded.named_parameters():  # the EMA weights, not the raw ones
        torch.testing.assert_close(p, trainer.ema.shadow[name], rtol=0, atol=0)
    argv = ["eval", "--model", str(tmp_path / "model"), "--data", str(split), "--device", "cpu"]
    assert main(argv) == 0
    assert "2 supervision steps, eval mode, EMA weights (decay 0.5))" in capsys.readouterr().out


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
    # no try/finally: a failing rank exits without teardown's barrier, so its peer fails
    # at its next collective instead of both hanging until the test's timeout
    cfg = run_config(
        split, out_dir, 3, "train.strategy=ddp", "train.eval_every=3", "train.eval_batches=1",
        f"model.preset={preset}",
    )  # fmt: skip
    trainer = Trainer(cfg, info)
    row = trainer.fit()
    params = torch.cat([p.detach().flatten() for p in trainer.raw.parameters()])
    torch.save({"params": params, "row": row}, f"{out_dir}/rank{rank}.pt")
    teardown_distributed()


@pytest.mark.parametrize("preset", ["reasoner-joint-cpu", "grid-transformer-cpu"])
def test_ddp_trains_a_puzzle_model_on_two_processes(split, tmp_path, preset):
    """Every parameter gets a gradient (DDP would stop otherwise), the ranks stay in step,
    and the evaluation is reduced over both ranks: rank r scores test puzzles r and r + 2."""
    from spawn import run_processes

    run_processes(
        _ddp_puzzle_worker, (str(tmp_path / "pg"), str(split), str(tmp_path), preset), nprocs=2
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert ranks[0]["row"]["step"] == 3
    exported = load_pretrained(tmp_path / "model").eval()
    assert torch.equal(torch.cat([p.flatten() for p in exported.parameters()]), ranks[0]["params"])
    task = task_for(split, exported, batch_size=4)
    direct = metrics_of(direct_counts(exported, batches_of(task, [[0, 2], [1, 3]])))
    for got in ranks:
        assert {k: got["row"][k] for k in direct} == pytest.approx(direct)
