"""Everything works on an imported model (issue 15, Build 3 and 4): the paper's release
directory tests/data/reference/attractor-tiny (128-entry table, vocabulary 100, no
tokenizer) and its `attractor convert` output, through eval (--data synthetic --sweep),
generate (--prompt-ids; --prompt with a tokenizer.json beside the weights or
--tokenizer), the one-line errors for text without a tokenizer and for pydoc bytes that do
not fit, monitor, save_pretrained and the lm-eval adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import attractor as at
from attractor.cli import main

DATA = Path(__file__).resolve().parent.parent / "data" / "reference"
WORDS = [f"w{i}" for i in range(90)]  # a 91-token word-level tokenizer: fits vocab 100


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """The reference directory, its converted copy, and a copy with a tokenizer.json."""
    root = tmp_path_factory.mktemp("imported")
    converted = root / "converted"
    assert main(["convert", str(DATA / "attractor-tiny"), str(converted)]) == 0
    with_tok = root / "with-tokenizer"
    shutil.copytree(DATA / "attractor-tiny", with_tok)
    write_tokenizer(with_tok / "tokenizer.json")
    return {"reference": DATA / "attractor-tiny", "converted": converted, "tokenized": with_tok}


def write_tokenizer(path: Path) -> Path:
    """A Hugging Face tokenizer.json made with `tokenizers` (word level, <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("which", ["reference", "converted"])
def test_eval_synthetic_sweep(dirs, which, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    argv = ["eval", str(dirs[which]), "--data", "synthetic", "--sweep", "--batches", "1"]
    code, stdout, err = run([*argv, "--depths", "0,1,2", "--out", str(out)], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert [row["T"] for row in result["depth"]] == [0, 1, 2]
    assert all(row["loss"] > 0 and "bpb" not in row for row in result["depth"])
    assert "T=0" in stdout and out.with_suffix(".png").is_file()


@pytest.mark.parametrize("which", ["reference", "converted"])
def test_generate_from_token_ids(dirs, which, capsys):
    code, stdout, err = run(
        ["generate", str(dirs[which]), "--prompt-ids", "1,2,3", "--max-new-tokens", "5"], capsys
    )
    assert code == 0, err
    ids = [int(t) for t in stdout.strip().split(",")]
    assert ids[:3] == [1, 2, 3] and len(ids) == 8 and max(ids) < 100
    model = at.load_pretrained(dirs[which]).eval()  # the cached head against recomputation
    full = model.generate(torch.tensor([[1, 2, 3]]), 5, use_cache=False)
    assert ids == full[0].tolist()


@pytest.mark.parametrize("which", ["reference", "converted"])
def test_one_line_errors_for_text_on_this_model(dirs, which, capsys):
    code, _, err = run(["eval", str(dirs[which]), "--data", "pydoc"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--data pydoc is byte level (257 token ids)" in err and "vocabulary of 100" in err
    code, _, err = run(["generate", str(dirs[which]), "--prompt", "w1 w2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "has no tokenizer.json" in err
    assert "--tokenizer PATH" in err and "--prompt-ids" in err
    code, _, err = run(["generate", str(dirs[which]), "--prompt-ids", "1,100"], capsys)
    assert code == 2 and "100 is not a token of this model (ids 0..99)" in err


def test_a_tokenizer_beside_the_weights_or_given_is_used(dirs, tmp_path, capsys):
    code, stdout, err = run(
        ["generate", str(dirs["tokenized"]), "--prompt", "w1 w2 w3", "--max-new-tokens", "3"],
        capsys,
    )
    assert code == 0, err
    assert stdout.split()[:3] == ["w1", "w2", "w3"] and len(stdout.split()) == 6
    elsewhere = write_tokenizer(tmp_path / "tok" / "tokenizer.json")
    for given in (elsewhere, elsewhere.parent):
        argv = ["generate", str(dirs["reference"]), "--prompt", "w1 w2 w3", "--tokenizer"]
        code, again, err = run([*argv, str(given), "--max-new-tokens", "3"], capsys)
        assert code == 0 and again == stdout, err
    converted = tmp_path / "conv"  # convert carries the tokenizer over
    assert main(["convert", str(dirs["tokenized"]), str(converted)]) == 0
    assert (converted / "tokenizer.json").read_bytes() == (
        dirs["tokenized"] / "tokenizer.json"
    ).read_bytes()


def test_monitor_and_save_pretrained_on_an_imported_model(dirs, tmp_path):
    model = at.load_pretrained(dirs["reference"]).eval()
    ids = torch.randint(0, 100, (2, 12))
    report = model.monitor(ids, spectral=True)
    assert report["iters"] >= 6 and report["residual"] < 3e-4
    raw = torch.load(dirs["reference"] / "model.pt", weights_only=True)
    gates = [
        0.75 * raw[f"transformer.core_block.0.raw_gamma_{b}"].sigmoid().mean()
        for b in ("attn", "mlp")
    ]
    assert report["gates"] == [pytest.approx(tuple(float(g) for g in gates), rel=1e-6)]
    assert 0 < report["spectral_radius"] < 1
    model.save_pretrained(tmp_path / "saved")
    again = at.load_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_the_lm_eval_adapter_scores_an_imported_model(dirs):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from attractor.eval.harness import AttractorHarnessLM

    lm = AttractorHarnessLM(pretrained=str(dirs["tokenized"]), device="cpu", batch_size=2)
    requests = [
        Instance("loglikelihood", {}, ("w1 w2", " w3 w4"), 0),
        Instance("loglikelihood", {}, ("", "w5"), 1),
    ]
    scores = lm.loglikelihood(requests)
    model = at.load_pretrained(dirs["tokenized"]).eval()
    ids = torch.tensor([[2, 3, 4, 5]])  # w1 w2 w3 w4 (w0 is id 1)
    with torch.no_grad():
        logp = model(ids[:, :-1]).logits.log_softmax(-1)
    expected = float(logp[0, 1, 4] + logp[0, 2, 5])  # log p(w3 | w1 w2) + log p(w4 | ...)
    assert abs(scores[0][0] - expected) < 1e-4
    assert all(s < 0 for s, _ in scores)
