"""Bug 2 of issue 14: `attractor eval --data pydoc` scores exactly the documents its model's
trainer held out (the val_fraction and seed in the exported training.json), none it trained
on. The expected split is the hash rule of `split_documents`, and the expected windows and
loss are built here by hand from the documents' bytes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attractor.cli import main
from attractor.data.lm import pydoc_documents, split_documents
from attractor.data.tokenizer import ByteTokenizer
from attractor.eval.loading import load_text, training_record
from attractor.models import load_pretrained
from attractor.train.config import load_config
from attractor.train.trainer import Trainer

SEQ = 64
FRACTION, SEED = 0.2, 1  # neither is the default (0.1, 0)
EOT = 256


def byte_stream(docs: list[str]) -> torch.Tensor:
    """Each document's UTF-8 bytes, then the end-of-document token 256."""
    return torch.tensor([t for d in docs for t in (*d.encode("utf-8"), EOT)])


def documents_of(stream: torch.Tensor) -> list[str]:
    """The documents of a byte stream: the runs between end-of-document tokens."""
    docs, current = [], []
    for t in stream.tolist():
        if t == EOT:
            docs.append(bytes(current).decode("utf-8"))
            current = []
        else:
            current.append(t)
    assert not current, "the stream does not end with an end-of-document token"
    return docs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-step byte-level GPT trained with data.val_fraction=0.2 and data.seed=1."""
    out = tmp_path_factory.mktemp("split") / "run"
    shape = {"vocab_size": 257, "dim": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": SEQ}
    sets = [
        "model.preset=gpt-cpu",
        f"model.overrides={shape!r}",
        "data.source=pydoc",
        f"data.seq_len={SEQ}",
        "data.batch_size=4",
        f"data.val_fraction={FRACTION}",
        f"data.seed={SEED}",
        "train.steps=1",
        "train.eval_every=0",
        "train.progress=false",
        f"train.out_dir={out}",
        "train.device=cpu",
    ]
    trainer = Trainer(load_config(None, sets))
    trainer.fit()
    return trainer, out / "model"


def test_the_export_records_the_split_it_trained_against(trained):
    _, directory = trained
    data = json.loads((directory / "training.json").read_text())["data"]
    assert (data["source"], data["val_fraction"], data["seed"]) == ("pydoc", FRACTION, SEED)


def test_eval_scores_exactly_the_documents_the_trainer_held_out(trained, tmp_path, capsys):
    trainer, directory = trained
    docs = pydoc_documents()
    train_docs, val_docs = split_documents(docs, FRACTION, SEED)
    # the test can tell the two apart: the default split holds out other documents
    assert set(val_docs) != set(split_documents(docs, 0.1, 0)[1])
    # what the trainer trained on: every document but the held-out ones
    trained_on = documents_of(trainer.task.split.train.tokens)
    assert trained_on == train_docs and not set(trained_on) & set(val_docs)

    out = tmp_path / "eval.json"
    argv = ["eval", str(directory), "--data", "pydoc", "--seq-len", str(SEQ)]
    assert main([*argv, "--batch-size", "256", "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    scored = json.loads(out.read_text())["default"]

    # the reference: every window of SEQ + 1 tokens over the held-out documents' bytes
    stream = byte_stream(val_docs)
    n = (stream.numel() - 1) // SEQ
    windows = stream[: n * SEQ + 1]
    x, y = windows[:-1].view(n, SEQ), windows[1:].view(n, SEQ)
    model = load_pretrained(directory).eval()
    with torch.no_grad():
        logits = model(x).logits.double()
    logp = logits - logits.logsumexp(dim=-1, keepdim=True)
    loss = -float(logp.gather(-1, y[..., None]).mean())
    val_bytes = sum(len(d.encode("utf-8")) for d in val_docs)
    assert scored["windows"] == n and scored["tokens"] == n * SEQ
    assert scored["loss"] == pytest.approx(loss, rel=1e-5)
    assert scored["bpb"] == pytest.approx(loss * stream.numel() / (val_bytes * math.log(2)))


def test_load_text_uses_the_defaults_without_a_record_for_that_source(trained):
    """A hand-saved model (no training.json) or one trained on another source: every pydoc
    document is unseen, so the default split (0.1, seed 0) is as good as any."""
    _, directory = trained
    tokenizer = ByteTokenizer()
    default_val = byte_stream(split_documents(pydoc_documents(), 0.1, 0)[1])
    elsewhere = {"data": {"source": "synthetic", "val_fraction": FRACTION, "seed": SEED}}
    for record in ({}, elsewhere):
        assert torch.equal(load_text("pydoc", SEQ, tokenizer, record).val.tokens, default_val)
    recorded = load_text("pydoc", SEQ, tokenizer, training_record(directory))
    held_out = byte_stream(split_documents(pydoc_documents(), FRACTION, SEED)[1])
    assert torch.equal(recorded.val.tokens, held_out)
