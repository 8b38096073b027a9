"""`attractor generate`: the printed text is the prompt plus model.generate's continuation."""

from __future__ import annotations

import pytest
import torch

import attractor as at
from attractor.cli import main
from attractor.data.tokenizer import ByteTokenizer


@pytest.fixture
def checkpoint(tiny_attractor, byte_checkpoint, tmp_path):
    return byte_checkpoint(tiny_attractor(), tmp_path / "model")


def test_cli_generate_prints_prompt_and_greedy_continuation(checkpoint, capsys):
    prompt = "def fixed_point(f):"
    code = main(
        [
            "generate",
            str(checkpoint),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "12",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    model, tok = at.load_pretrained(checkpoint).eval(), ByteTokenizer()
    ids = model.generate(torch.tensor([tok.encode(prompt)]), 12, temperature=0.0)
    assert ids.shape == (1, len(prompt) + 12)
    assert printed == tok.decode(ids[0].tolist()) + "\n"
    assert printed.startswith(prompt)


def test_cli_generate_sampling_is_seeded(checkpoint, capsys):
    args = [
        "generate",
        str(checkpoint),
        "--prompt",
        "x = ",
        "--max-new-tokens",
        "16",
        "--temperature",
        "1.0",
        "--top-k",
        "20",
        "--device",
        "cpu",
    ]
    outs = []
    for seed in ("1", "1", "2"):
        assert main([*args, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", ""], "the prompt is empty"),
        (["--prompt", "hi", "--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
        (["--prompt", "hi", "--top-k", "0"], "--top-k must be >= 1"),
    ],
)
def test_cli_generate_bad_arguments(checkpoint, capsys, extra, message):
    assert main(["generate", str(checkpoint), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_generate_missing_checkpoint(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attractor generate: ") and "does not exist" in err
    assert len(err.strip().splitlines()) == 1
