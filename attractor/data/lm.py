"""Language-model windows over a token stream, and the always-present pydoc corpus.

The stream is the documents' tokens joined by a separator; it is cut into
non-overlapping windows of seq_len + 1 tokens, and window i gives the pair
(x, y) = (w[:-1], w[1:]). Train and validation are split by document, deterministically.
"""

from __future__ import annotations

import hashlib

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
