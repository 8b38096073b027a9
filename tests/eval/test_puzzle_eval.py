"""Puzzle metrics: `batch_metrics` and `summarize` against counts made by hand, and
`evaluate_puzzles` with stand-in models whose answers are known."""

import pytest
import torch

from attractor.data import sudoku
from attractor.data.puzzles import PuzzleDataset, build_sudoku_split, load_split
from attractor.engine import SolverStats
from attractor.eval.puzzle_metrics import evaluate_puzzles
from attractor.models.grid import GridConfig, GridModel, GridOutput
from attractor.models.grid_metrics import batch_metrics, summarize

V = 6  # token ids 0..5


def one_hot_logits(preds: list[list[int]]) -> torch.Tensor:
    """Logits whose argmax is preds: (B, L, V)."""
    return 5.0 * torch.nn.functional.one_hot(torch.tensor(preds), V).float() - 1.0


def stats(iters: int, batch: int) -> SolverStats:
    zeros = torch.zeros(batch, dtype=torch.bool)
    return SolverStats(iters, torch.zeros(batch), zeros, zeros)


# Four puzzles of five cells; token 1 is a blank. Three supervision steps.
INPUTS = [[1, 3, 1, 4, 1], [2, 1, 1, 1, 5], [1, 1, 1, 1, 1], [2, 3, 4, 5, 2]]
LABELS = [[2, 3, 4, 4, 5], [2, 3, 4, 2, 5], [5, 4, 3, 2, 2], [2, 3, 4, 5, 2]]
PREDS = [  # per step, per puzzle
    [[2, 3, 4, 4, 5], [2, 2, 2, 2, 5], [5, 4, 3, 2, 3], [2, 3, 4, 5, 2]],
    [[2, 3, 4, 4, 4], [2, 3, 4, 2, 5], [5, 4, 3, 2, 2], [2, 3, 4, 5, 3]],
    [[2, 3, 4, 4, 4], [2, 3, 4, 2, 2], [5, 4, 3, 2, 2], [2, 3, 4, 5, 2]],
]
HALT = [[1.0, -1.0, -2.0, -1.0], [-1.0, 2.0, -1.0, -1.0], [-1.0, -1.0, 3.0, -1.0]]
ITERS = [5, 7, 9]


def outputs(with_solver: bool) -> list[GridOutput]:
    return [
        GridOutput(
            one_hot_logits(PREDS[s]),
            torch.tensor(HALT[s]),
            None,
            stats(ITERS[s], 4) if with_solver else None,
        )
        for s in range(3)
    ]


def brute_force() -> dict[str, float]:
    """The metrics counted cell by cell from the lists above."""
    n, steps = len(INPUTS), len(PREDS)
    exact = right = blanks = right_all = cells = halt_total = halt_exact = 0
    for b in range(n):
        final = PREDS[-1][b]
        exact += final == LABELS[b]
        for i, (q, a) in enumerate(zip(INPUTS[b], LABELS[b], strict=True)):
            cells += 1
            right_all += final[i] == a
            if q != a:
                blanks += 1
                right += final[i] == a
        halt = next((s for s in range(steps) if HALT[s][b] > 0), steps - 1)
        halt_total += halt + 1
        halt_exact += PREDS[halt][b] == LABELS[b]
    return {
        "exact_acc": exact / n,
        "cell_acc": right / blanks,
        "cell_acc_all": right_all / cells,
        "halt_step": halt_total / n,
        "halt_exact_acc": halt_exact / n,
        "solver_iters": sum(ITERS) / len(ITERS),
    }


def test_batch_metrics_and_summarize_match_a_hand_count():
    totals = batch_metrics(outputs(True), torch.tensor(INPUTS), torch.tensor(LABELS))
    want = brute_force()
    # the case at hand: puzzle 0 halts at step 1 while right, puzzle 1 at 2 (right then),
    # puzzle 2 at 3, puzzle 3 never (counted at the last step, where it is right)
    assert want == pytest.approx(
        {
            "exact_acc": 2 / 4,
            "cell_acc": 10 / 11,
            "cell_acc_all": 18 / 20,  # puzzle 0's cell 4 and puzzle 1's cell 4 are wrong
            "halt_step": (1 + 2 + 3 + 3) / 4,
            "halt_exact_acc": 4 / 4,
            "solver_iters": 7.0,
        }
    )
    assert summarize(totals) == pytest.approx(want)


def test_summarize_adds_over_batches_and_omits_solver_iters_without_a_solver():
    inputs, labels = torch.tensor(INPUTS), torch.tensor(LABELS)
    outs = outputs(False)
    halves = [
        batch_metrics(
            [GridOutput(o.logits[part], o.halt_logits[part]) for o in outs],
            inputs[part],
            labels[part],
        )
        for part in (slice(0, 1), slice(1, 4))
    ]
    whole = batch_metrics(outs, inputs, labels)
    torch.testing.assert_close(halves[0] + halves[1], whole)
    got = summarize(whole)
    assert "solver_iters" not in got
    want = brute_force()
    want.pop("solver_iters")
    assert got == pytest.approx(want)


# ----------------------------------------------------------------------------- evaluate_puzzles


class Scripted(GridModel):
    """A stand-in recurrent model: copies the question until supervision step `solve_at`,
    then answers with the true solution; its halting logit turns positive at `halt_at`."""

    kind = "scripted"
    recurrent = True

    def __init__(self, answers: dict[bytes, torch.Tensor], solve_at: int, halt_at: int):
        super().__init__()
        self.config = GridConfig(vocab_size=8, side=6, box_rows=2, box_cols=3, n_sup=4, dim=8)
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.answers, self.solve_at, self.halt_at = answers, solve_at, halt_at

    def initial_carry(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size)

    def forward(self, inputs, carry=None, depth=None) -> GridOutput:
        step = (torch.zeros(len(inputs)) if carry is None else carry) + 1  # 1-based
        solved = torch.stack([self.answers[bytes(q.numpy().astype("int8"))] for q in inputs])
        preds = torch.where((step >= self.solve_at)[:, None], solved, inputs)
        logits = torch.nn.functional.one_hot(preds, 8).float()
        return GridOutput(logits, (step >= self.halt_at).float() - 0.5, step)


@pytest.fixture(scope="module")
def six_by_six(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sudoku6")
    build_sudoku_split(directory, box=(2, 3), n_train=1, n_test=10, seed=0, minimal=True)
    _, test, _ = load_split(directory)
    return PuzzleDataset(test, "sudoku", augment=False)


def solutions_by_search(data: PuzzleDataset) -> dict[bytes, torch.Tensor]:
    """Token answers found by the exact solver (not read from the dataset's labels)."""
    out = {}
    for ex in data.examples:
        result = sudoku.solve(ex.question, limit=2)
        assert result.unique
        tokens = sudoku.to_tokens(result.solutions[0])
        out[bytes(sudoku.to_tokens(ex.question).astype("int8"))] = torch.from_numpy(tokens)
    return out


def test_evaluate_puzzles_with_a_model_that_solves_at_step_2_and_halts_at_3(six_by_six):
    model = Scripted(solutions_by_search(six_by_six), solve_at=2, halt_at=3)
    got = evaluate_puzzles(model, six_by_six, batch_size=4)
    assert got == pytest.approx(
        {
            "exact_acc": 1.0,
            "cell_acc": 1.0,
            "cell_acc_all": 1.0,
            "halt_step": 3.0,
            "halt_exact_acc": 1.0,
            "puzzles": 10,
        }  # fmt: skip
    )


def test_evaluate_puzzles_halting_before_the_answer_and_a_limit(six_by_six):
    model = Scripted(solutions_by_search(six_by_six), solve_at=4, halt_at=1)
    got = evaluate_puzzles(model, six_by_six, batch_size=3, limit=7)
    assert got == pytest.approx(
        {
            "exact_acc": 1.0,
            "cell_acc": 1.0,
            "cell_acc_all": 1.0,
            "halt_step": 1.0,
            "halt_exact_acc": 0.0,
            "puzzles": 7,
        }  # fmt: skip
    )


def test_evaluate_puzzles_copying_the_question_gets_no_blank_cell_right(six_by_six):
    model = Scripted(solutions_by_search(six_by_six), solve_at=99, halt_at=99)
    got = evaluate_puzzles(model, six_by_six, batch_size=10)
    assert got["exact_acc"] == 0.0 and got["cell_acc"] == 0.0
    givens = sum(int((ex.question != 0).sum()) for ex in six_by_six.examples)
    assert got["cell_acc_all"] == pytest.approx(givens / (36 * len(six_by_six)))  # the givens
    assert got["halt_step"] == 4.0  # never halts: counted at n_sup
