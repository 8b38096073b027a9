"""Language-model windows over a token stream, and the always-present pydoc corpus.

The stream is the documents' tokens joined by a separator; it is cut into
non-overlapping windows of seq_len + 1 tokens, and window i gives the pair
(x, y) = (w[:-1], w[1:]). Train and validation are split by document, deterministically.
`text_split` is the one split of every text source, shared by the trainer and `attractor
eval`, so an evaluation scores the documents its model never trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attractor.data.tokenizer import ByteTokenizer, Tokenizer


def pydoc_documents() -> list[str]:
    """The Python standard library's own help topics (pydoc_data.topics, about 0.5 MB)."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def document_score(doc: str, seed: int = 0) -> float:
    """A document's place in [0, 1) for the split: sha256 of f"{seed}\\0{doc}", first 8 bytes."""
    digest = hashlib.sha256(f"{seed}\0{doc}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_validation(doc: str, val_fraction: float, seed: int = 0) -> bool:
    """The split of one document, decidable while streaming: score below val_fraction."""
    return document_score(doc, seed) < val_fraction


def split_documents(
    docs: list[str], val_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """A deterministic split by document: a document goes to validation when the hash of
    (seed, its text) falls below val_fraction; at least one document on each side."""
    if len(docs) < 2:
        raise ValueError(f"data: need at least 2 documents to split, got {len(docs)}")
    scores = [document_score(d, seed) for d in docs]
    val = [d for d, s in zip(docs, scores, strict=True) if s < val_fraction]
    train = [d for d, s in zip(docs, scores, strict=True) if s >= val_fraction]
    if not val or not train:  # tiny corpora: move the lowest-scoring document over
        order = sorted(range(len(docs)), key=scores.__getitem__)
        val, train = [docs[order[0]]], [docs[i] for i in order[1:]]
    return train, val


def token_stream(docs: list[str], tokenizer: Tokenizer | None = None) -> Tensor:
    """Tokens of the documents, each followed by the end-of-document token (int64, 1-D);
    bytes when no tokenizer is given."""
    tokenizer = tokenizer or ByteTokenizer()
    tokens: list[int] = []
    for doc in docs:
        tokens.extend(tokenizer.encode(doc))
        tokens.append(tokenizer.eot_id)
    return torch.tensor(tokens, dtype=torch.long)


class Windows:
    """Non-overlapping (x, y) windows of length seq_len over a 1-D token tensor."""

    def __init__(self, tokens: Tensor, seq_len: int):
        if tokens.numel() < seq_len + 1:
            raise ValueError(
                f"data: {tokens.numel()} tokens cannot fill one window of {seq_len + 1}; "
                "use a shorter data.seq_len or more text"
            )
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return (self.tokens.numel() - 1) // self.seq_len

    def batch(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """x, y of shape (len(indices), seq_len)."""
        starts = torch.tensor(indices, dtype=torch.long) * self.seq_len
        offsets = torch.arange(self.seq_len + 1)
        w = self.tokens[starts[:, None] + offsets]  # (B, seq_len + 1)
        return w[:, :-1], w[:, 1:]


@dataclass
class TextSplit:
    """The train and validation windows of a corpus, its tokenizer, and the bytes per token
    of each split (None for synthetic tokens), for bits per byte."""

    train: Any
    val: Any
    tokenizer: Tokenizer
    bytes_per_token: dict[str, float | None]

    def windows(self, split: str) -> Any:
        """The windows of "train" or "val"."""
        if split not in ("train", "val"):
            raise ValueError(f"data: the splits are train and val, not {split!r}")
        return self.train if split == "train" else self.val


def text_split(
    source: str,
    seq_len: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    vocab_size: int | None = None,
    batch_size: int = 16,
) -> TextSplit:
    """The one train/validation split of a text source, for the trainer and the evaluator:

    pydoc      the stdlib's help topics at byte level, split by document (`split_documents`
               with val_fraction and seed);
    synthetic  uniform random tokens from seed, 64 batches a split (throughput runs);
    DIRECTORY  token shards from `attractor data text`, split when they were made.

    With `vocab_size` (the model's), a tokenizer larger than the model is an error."""
    if source == "synthetic":
        if vocab_size is None:
            raise ValueError("data: synthetic tokens need the model's vocab_size")
        gen = torch.Generator().manual_seed(seed)
        n = 64 * batch_size * (seq_len + 1)
        tokens = torch.randint(0, vocab_size, (2 * n,), generator=gen)
        train, val = Windows(tokens[:n], seq_len), Windows(tokens[n:], seq_len)
        return TextSplit(train, val, ByteTokenizer(), {"train": None, "val": None})
    if source == "pydoc":
        return _pydoc_split(seq_len, val_fraction, seed, vocab_size)
    return _shard_split(source, seq_len, vocab_size)


def _pydoc_split(seq_len: int, val_fraction: float, seed: int, vocab_size: int | None) -> TextSplit:
    tokenizer = ByteTokenizer()
    if vocab_size is not None and vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"data: the byte-level corpus needs vocab_size >= {tokenizer.vocab_size}, the "
            f"model has {vocab_size}; set model.overrides.vocab_size or prepare a corpus for "
            "this tokenizer"
        )
    docs = split_documents(pydoc_documents(), val_fraction, seed)
    streams = [token_stream(d, tokenizer) for d in docs]
    per_token = {
        name: sum(len(d.encode("utf-8")) for d in split) / stream.numel()
        for name, split, stream in zip(("train", "val"), docs, streams, strict=True)
    }
    train, val = (Windows(s, seq_len) for s in streams)
    return TextSplit(train, val, tokenizer, per_token)


def _shard_split(directory: str, seq_len: int, vocab_size: int | None) -> TextSplit:
    from attractor.data.shards import ShardWindows

    if not Path(directory).is_dir():
        raise ValueError(
            f"data.source: {directory!r} is neither pydoc, synthetic nor a directory of token "
            "shards; make one with `attractor data text --source ... --out DIR`"
        )
    train = ShardWindows(directory, "train", seq_len=seq_len)
    val = ShardWindows(directory, "val", seq_len=seq_len)
    if vocab_size is not None and train.meta["vocab_size"] > vocab_size:
        raise ValueError(
            f"data: the tokenizer in {directory} has {train.meta['vocab_size']} tokens, the "
            f"model only {vocab_size}; set model.overrides.vocab_size"
        )
    per_token = {"train": train.bytes_per_token, "val": val.bytes_per_token}
    return TextSplit(train, val, train.tokenizer, per_token)
