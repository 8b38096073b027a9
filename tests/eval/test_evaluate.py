"""attractor/eval (lm_metrics, depth_sweep, loading) and eval/plots.py: numbers against a
hand computation, the depth sweep, the validation split of a trained model, and the
eval -> JSON -> plot round trip through the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch

import attractor as at
from attractor.cli import main
from attractor.data.lm import Windows
from attractor.eval.depth_sweep import depth_sweep, sweep_depths
from attractor.eval.lm_metrics import evaluate_lm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOLVER = at.SolverConfig("anderson", tol=1e-3, max_iter=8, freeze_converged=True)
DEQ_SOLVER = at.SolverConfig("anderson", tol=1e-3, max_iter=8)  # DEQ's f takes no mask


@pytest.fixture
def tiny(tiny_lm):
    """`tiny(kind)`: conftest's tiny LM of that kind at max_seq_len 32, in eval mode, the
    solver models with SOLVER / DEQ_SOLVER in evaluation."""
    solvers = {"attractor": SOLVER, "deq": DEQ_SOLVER}

    def make(kind: str = "attractor"):
        fields = {}
        if kind in solvers:
            fields["fixed_point"] = at.FixedPointConfig(eval_solver=solvers[kind])
        return tiny_lm(kind, max_seq_len=32, **fields).eval()

    return make


def windows(seq_len: int = 16, n: int = 5) -> Windows:
    tokens = torch.randint(0, 257, (seq_len * n + 1,), generator=torch.Generator().manual_seed(1))
    return Windows(tokens, seq_len)


def hand_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Sum of -log softmax(logits)[label] over labelled positions, written out, and the count."""
    logp = logits.double() - logits.double().logsumexp(dim=-1, keepdim=True)  # (B, T, V)
    mask = labels != -100
    picked = logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)
    return float(-(picked * mask).sum()), int(mask.sum())


@pytest.mark.parametrize("kind", ["attractor", "gpt"])
def test_evaluate_lm_matches_a_hand_computation(tiny, kind):
    model, data = tiny(kind), windows()
    result = evaluate_lm(model, data, batch_size=2, max_batches=2, bytes_per_token=1.5)
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in ([0, 1], [2, 3]):  # two batches of two windows; window 4 is left out
            x, y = data.batch(idx)
            s, c = hand_loss(model(x).logits, y)
            total, count = total + s, count + c
    loss = total / count
    assert result["tokens"] == count == 4 * 16 and result["windows"] == 4
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert result["bpb"] == pytest.approx(total / (count * 1.5 * math.log(2)), rel=1e-5)
    assert ("iters_mean" in result) == (kind == "attractor")


class Masked:
    """Windows whose first half of labels is ignored (-100)."""

    def __init__(self, inner: Windows):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, indices):
        x, y = self.inner.batch(indices)
        y = y.clone()
        y[:, : y.size(1) // 2] = -100
        return x, y


def test_evaluate_lm_averages_over_labelled_tokens_only(tiny):
    model, data = tiny("gpt"), Masked(windows())
    result = evaluate_lm(model, data, batch_size=8)
    with torch.no_grad():
        x, y = data.batch(list(range(len(data))))
        total, count = hand_loss(model(x).logits, y)
    assert result["tokens"] == count == 5 * 8
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)


def test_sweep_depths_doubles_up_to_t_max():
    assert sweep_depths(8) == [0, 1, 2, 4, 8]
    assert sweep_depths(6) == [0, 1, 2, 4, 6]
    assert sweep_depths(1) == [0, 1]


def test_depth_sweep_on_the_attractor(tiny):
    model, data = tiny(), windows()
    result = depth_sweep(model, data, tolerances=(1e-2, 1e-4), batch_size=5)
    assert [row["T"] for row in result["depth"]] == [0, 1, 2, 4, 8]
    with torch.no_grad():
        x, y = data.batch(list(range(5)))
        total, count = hand_loss(model.decode(model.proposal(x)), y)  # T = 0: y0 decoded
    assert result["depth"][0]["loss"] == pytest.approx(total / count, rel=1e-5)
    loose, tight = result["tolerance"]
    assert loose["iters_mean"] <= tight["iters_mean"] <= SOLVER.max_iter
    assert loose["iters_max_mean"] <= tight["iters_max_mean"]
    assert loose["iters_mean"] < tight["iters_mean"]  # the tolerance really changed
    assert model.config.fixed_point.eval_solver == SOLVER  # restored after the sweep


@pytest.mark.parametrize("kind", ["looped", "deq"])
def test_depth_sweep_on_looped_and_deq(tiny, kind):
    model = tiny(kind)
    result = depth_sweep(model, windows(), tolerances=(1e-2,), max_batches=1)
    t_max = 4 if kind == "looped" else SOLVER.max_iter
    assert [row["T"] for row in result["depth"]][-1] == t_max
    assert len(result["tolerance"]) == (0 if kind == "looped" else 1)
    with torch.no_grad():
        x, y = windows().batch(list(range(5)))
        total, count = hand_loss(model(x, depth=2).logits, y)
    row = next(r for r in result["depth"] if r["T"] == 2)
    assert row["loss"] == pytest.approx(total / count, rel=1e-5)


def test_depth_sweep_refuses_a_model_without_depth(tiny):
    with pytest.raises(ValueError, match="no solver depth"):
        depth_sweep(tiny("gpt"), windows())


@pytest.fixture
def checkpoint(tiny, byte_checkpoint, tmp_path):
    return byte_checkpoint(tiny(), tmp_path / "model")


def test_cli_eval_sweep_writes_json_and_plot_redraws_it(checkpoint, tmp_path, capsys):
    out = tmp_path / "results" / "sweep.json"
    args = ["eval", str(checkpoint), "--seq-len", "32", "--batch-size", "2", "--batches", "1"]
    assert main([*args, "--sweep", "--depths", "0,1,2", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "pydoc val: loss" in printed and "bpb" in printed and "T=2" in printed
    result = json.loads(out.read_text())
    assert result["result"] == "depth_sweep" and result["kind"] == "attractor"
    assert [row["T"] for row in result["depth"]] == [0, 1, 2]
    assert result["fixed_depth"] is None  # no --depth: the plain evaluation at its own depth
    assert len(result["tolerance"]) == 5 and result["model"]["kind"] == "attractor"
    assert {"date", "command", "default", "data"} <= set(result)
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC

    png = tmp_path / "again.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_plot_draws_a_residual_trace(tmp_path):
    path = tmp_path / "solve.json"
    path.write_text(json.dumps({"result": "solve", "trace": [1.0, 0.1, 0.01, 1e-4]}))
    assert main(["plot", str(path)]) == 0
    assert path.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"result": "mystery"}', "no plot for result kind 'mystery'"),
        ("{not json", "is not valid JSON"),
        (None, "does not exist"),
    ],
)
def test_plot_bad_input_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    assert main(["plot", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_eval_bad_input_is_one_line(checkpoint, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert main(["eval", str(checkpoint), "--data", str(tmp_path / "nowhere")]) == 2
    (checkpoint / "tokenizer.json").unlink()
    assert main(["eval", str(checkpoint)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("attractor eval: ") for line in lines)
    assert "does not exist" in lines[0] and "not a directory" in lines[1]
    assert "tokenizer.json" in lines[2]


def test_evaluate_lm_max_windows_scores_only_the_first_windows(tiny):
    model, data = tiny("gpt"), windows()
    result = evaluate_lm(model, data, batch_size=2, max_windows=3)
    with torch.no_grad():
        x, y = data.batch([0, 1, 2])
        total, count = hand_loss(model(x).logits, y)
    assert result["windows"] == 3 and result["tokens"] == count
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(ValueError, match="max_windows must be >= 1"):
        evaluate_lm(model, data, max_windows=0)
