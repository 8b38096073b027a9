"""Text corpora to token shards: a trained tokenizer, `.bin` shards and their meta.json.

`prepare_text(source, out_dir)` reads a corpus twice, as a stream (nothing is held in
memory but a chunk of documents per worker):
  1. scan: split each document by the hash rule of `data.lm.is_validation` and train a
     byte-level BPE (Hugging Face `tokenizers`) on the training documents;
  2. encode: tokenize chunks of documents (in this process, where `tokenizers` already
     spreads each batch over the cores, or in a pool of worker processes for corpora over
     64 MB, where the pool also runs the hashing and packing); chunks come back in order,
     so the shards do not depend on the number of workers. Each document's tokens, then
     the end-of-document token, are appended to its split's shards.

A prepared directory holds
  tokenizer.json                 the tokenizer (`data.tokenizer.load_tokenizer` reads it)
  train_000.bin, train_001.bin   raw token ids, little-endian uint16 (vocab <= 65536) or
  val_000.bin                    uint32, at most `shard_tokens` tokens each
  meta.json                      {"tokenizer", "vocab_size", "dtype", "eot_id", "source",
                                  "splits": {"train": {"shards": [{"file", "tokens"}],
                                  "documents", "tokens", "bytes"}, "val": {...}}, "created"}
It is built in a hidden sibling directory and moved into place at the end, meta.json last:
a failed or interrupted run leaves nothing behind. `attractor.data.shards.ShardWindows`
reads a split back as (x, y) windows, the interface of `data.lm.Windows`. Every file is
written by `attractor.core.atomic` inside that directory.

The sources (files, pydoc, python-docs, hf:NAME) are read by `attractor.data.text_sources`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from attractor.core.atomic import atomic_write, atomic_write_json
from attractor.data.lm import document_score
from attractor.data.shards import META_FILE
from attractor.data.staging import publish, staging
from attractor.data.text_sources import iter_documents
from attractor.data.tokenizer import (
    TOKENIZER_FILE,
    BPETokenizer,
    ByteTokenizer,
    Tokenizer,
    load_tokenizer,
)

SPLITS = ("train", "val")
DEFAULT_VOCAB = 32768
POOL_MIN_CHARS = 64 << 20  # smaller corpora are tokenized in this process


# ---------------------------------------------------------------------------- split


@dataclass
class _Scan:
    """Counts of one pass over a source, and the split threshold they imply.

    A document goes to validation when its score is below `val_fraction`; when that leaves
    one side empty (tiny corpora) the lowest-scoring document alone goes to validation, as
    in `data.lm.split_documents`.
    """

    val_fraction: float
    seed: int
    documents: int = 0
    chars: int = 0
    val_documents: int = 0
    min_score: float = 1.0
    max_score: float = 0.0

    def add(self, doc: str) -> float:
        score = document_score(doc, self.seed)
        self.documents += 1
        self.chars += len(doc)
        self.val_documents += score < self.val_fraction
        self.min_score = min(self.min_score, score)
        self.max_score = max(self.max_score, score)
        return score

    @property
    def threshold(self) -> float:
        if 0 < self.val_documents < self.documents:
            return self.val_fraction
        return math.nextafter(self.min_score, 1.0)  # validation = the lowest score


# ---------------------------------------------------------------------------- encoding


@dataclass
class _Chunk:
    """Tokens (each document then EOT) and counts of one chunk, per split."""

    tokens: dict[str, np.ndarray]
    documents: dict[str, int]
    bytes: dict[str, int]
    chars: int


class _Encoder:
    """Tokenizes a chunk of documents and sorts them into train and val."""

    def __init__(self, tokenizer: Tokenizer, dtype: str, threshold: float, seed: int):
        self.tokenizer, self.dtype = tokenizer, np.dtype(dtype)
        self.threshold, self.seed = threshold, seed

    def __call__(self, docs: list[str]) -> _Chunk:
        ids: list
        if isinstance(self.tokenizer, BPETokenizer):
            ids = self.tokenizer.encode_batch(docs)
        elif isinstance(self.tokenizer, ByteTokenizer):
            ids = [np.frombuffer(d.encode("utf-8"), dtype=np.uint8) for d in docs]
        else:
            ids = [self.tokenizer.encode(d) for d in docs]
        is_val = [document_score(d, self.seed) < self.threshold for d in docs]
        chunk = _Chunk({}, {}, {}, sum(map(len, docs)))
        for name, want in (("train", False), ("val", True)):
            picked = [i for i, v in enumerate(is_val) if v == want]
            total = sum(len(ids[i]) + 1 for i in picked)
            out = np.empty(total, dtype=self.dtype)
            pos = 0
            for i in picked:
                n = len(ids[i])
                out[pos : pos + n] = ids[i]
                out[pos + n] = self.tokenizer.eot_id
                pos += n + 1
            chunk.tokens[name] = out
            chunk.documents[name] = len(picked)
            chunk.bytes[name] = sum(len(docs[i].encode("utf-8")) for i in picked)
        return chunk


_WORKER_ENCODER: _Encoder | None = None


def _init_worker(directory: str, dtype: str, threshold: float, seed: int) -> None:
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the pool is the parallelism
    _WORKER_ENCODER = _Encoder(load_tokenizer(directory), dtype, threshold, seed)


def _encode_in_worker(docs: list[str]) -> _Chunk:
    assert _WORKER_ENCODER is not None
    return _WORKER_ENCODER(docs)


def _chunks(docs: Iterable[str], chunk_chars: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc)
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _encode_ordered(
    chunks: Iterator[list[str]], workers: int, init_args: tuple, encoder: _Encoder
) -> Iterator[_Chunk]:
    """Encoded chunks in input order; a process pool with at most 2 chunks per worker in
    flight (Pool.imap would read the whole corpus ahead into memory)."""
    if workers <= 1:
        yield from map(encoder, chunks)
        return
    import multiprocessing

    # spawn: the parent has live tokenizer (rayon) and torch threads, unsafe to fork
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, init_args) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_in_worker, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class _ShardWriter:
    """Appends tokens to split_000.bin, split_001.bin, ... of at most shard_tokens each, each
    shard one `atomic_write`; a context manager whose exit finishes the last shard (or, on
    an exception, drops it)."""

    def __init__(self, directory: Path, split: str, shard_tokens: int):
        self.directory, self.split, self.shard_tokens = directory, split, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.shard = contextlib.ExitStack()  # the open shard's atomic write
        self.file = None
        self.documents = self.bytes = 0

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file = None
        self.shard.__exit__(*exc)

    def write(self, tokens: np.ndarray) -> None:
        while tokens.size:
            if self.file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            part, tokens = tokens[:room], tokens[room:]
            self.file.write(part.astype(part.dtype.newbyteorder("<"), copy=False).tobytes())
            self.shards[-1]["tokens"] += int(part.size)

    def _next_shard(self) -> None:
        self.shard.close()  # the previous shard is complete
        name = f"{self.split}_{len(self.shards):03d}.bin"
        self.file = self.shard.enter_context(atomic_write(self.directory / name, "wb"))
        self.shards.append({"file": name, "tokens": 0})

    def summary(self) -> dict[str, Any]:
        tokens = sum(s["tokens"] for s in self.shards)
        return {"shards": self.shards, "documents": self.documents, "tokens": tokens,
                "bytes": self.bytes}  # fmt: skip


# ---------------------------------------------------------------------------- prepare


def default_workers() -> int:
    """The CPU cores this process may use."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _progress(progress: bool, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="char",
        unit_scale=True,
        disable=not progress,
        leave=False,
        delay=0.5,
    )


def _train_tokenizer(
    docs: Callable[[], Iterator[str]],
    scan: _Scan,
    vocab_size: int,
    threshold: float | None,
    max_chars: int | None,
    progress: bool,
) -> BPETokenizer:
    """BPE on the training documents (the first max_chars characters of them); fills scan
    when threshold is None (the first pass, rule val_fraction)."""
    cut = scan.val_fraction if threshold is None else threshold
    seen = 0

    def training_docs() -> Iterator[str]:
        nonlocal seen
        with _progress(progress, "tokenizer") as bar:
            for doc in docs():
                score = scan.add(doc) if threshold is None else document_score(doc, scan.seed)
                bar.update(len(doc))
                if score >= cut and (max_chars is None or seen < max_chars):
                    seen += len(doc)
                    yield doc

    return BPETokenizer.train(training_docs(), vocab_size)


def _make_tokenizer(
    tokenizer: str,
    vocab_size: int | None,
    docs: Callable[[], Iterator[str]],
    scan: _Scan,
    tokenizer_chars: int | None,
    progress: bool,
) -> Tokenizer:
    """Scan the source once (filling scan); train a BPE on the training documents, or take
    bytes or a saved tokenizer."""
    if tokenizer == "bpe":
        vocab_size = vocab_size or DEFAULT_VOCAB
        if vocab_size < 257:
            raise ValueError(f"data: --vocab-size must be at least 257, got {vocab_size}")
        tok = _train_tokenizer(docs, scan, vocab_size, None, tokenizer_chars, progress)
        _check_corpus(scan)
        if scan.threshold != scan.val_fraction:  # tiny corpus: one document moved to val
            tok = _train_tokenizer(docs, scan, vocab_size, scan.threshold, tokenizer_chars, False)
        return tok
    if tokenizer == "bytes":
        if vocab_size not in (None, ByteTokenizer.vocab_size):
            raise ValueError(f"data: --tokenizer bytes has vocab 257, not {vocab_size}")
        tok: Tokenizer = ByteTokenizer()
    else:
        if not Path(tokenizer).is_dir():
            raise ValueError(
                f"data: --tokenizer {tokenizer!r}: use bpe, bytes or a directory holding "
                f"{TOKENIZER_FILE}"
            )
        tok = load_tokenizer(tokenizer)
    with _progress(progress, "scan") as bar:
        for doc in docs():
            scan.add(doc)
            bar.update(len(doc))
    _check_corpus(scan)
    return tok


def _check_corpus(scan: _Scan) -> None:
    if scan.documents == 0:
        raise ValueError("data: the corpus is empty (no documents with text); check --source")
    if scan.documents < 2:
        raise ValueError("data: the corpus has 1 document; the train/val split needs 2 or more")
    if scan.max_score == scan.min_score:
        raise ValueError("data: all documents are the same text; the split needs 2 different")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"data: --out {out} is a file; pass a directory")
    if (out / META_FILE).exists() and not overwrite:
        raise ValueError(f"data: {out} already holds a prepared dataset; pass --overwrite")


def prepare_text(
    source: str,
    out_dir: str | Path,
    *,
    vocab_size: int | None = None,
    tokenizer: str = "bpe",
    column: str = "text",
    split: str = "train",
    data_files: str | list[str] | None = None,
    val_fraction: float = 0.01,
    seed: int = 0,
    workers: int | None = None,
    shard_tokens: int = 100_000_000,
    tokenizer_chars: int | None = 2_000_000_000,
    chunk_chars: int = 1 << 20,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a tokenizer on a corpus and write its train/val token shards; returns meta.

    tokenizer: "bpe" (trained here, vocab_size default 32768, on the first
    `tokenizer_chars` characters of the training documents), "bytes" (vocab 257) or a
    directory holding a tokenizer.json to reuse. workers: processes for tokenizing
    (default: this process for corpora under 64 MB, else one per core).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"data: --val-fraction must be in (0, 1), got {val_fraction}")
    if shard_tokens < 1 or chunk_chars < 1 or (workers is not None and workers < 1):
        raise ValueError("data: --shard-tokens, --workers and chunk_chars must be positive")
    out = Path(out_dir)
    _check_output(out, overwrite)

    def docs() -> Iterator[str]:
        return iter_documents(source, column=column, split=split, data_files=data_files)

    scan = _Scan(val_fraction, seed)
    tok = _make_tokenizer(tokenizer, vocab_size, docs, scan, tokenizer_chars, progress)
    dtype = "uint16" if tok.vocab_size <= 2**16 else "uint32"
    if workers is None:  # a pool costs seconds to start; one process already uses all cores
        workers = default_workers() if scan.chars >= POOL_MIN_CHARS else 1

    with staging(out) as tmp:
        tok.save(tmp)
        n_chunks = math.ceil(scan.chars / chunk_chars)
        init = (str(tmp), dtype, scan.threshold, seed)
        encoder = _Encoder(tok, dtype, scan.threshold, seed)
        with contextlib.ExitStack() as stack:
            writers = {
                name: stack.enter_context(_ShardWriter(tmp, name, shard_tokens)) for name in SPLITS
            }
            bar = stack.enter_context(_progress(progress, "tokenize", scan.chars))
            for chunk in _encode_ordered(
                _chunks(docs(), chunk_chars), min(workers, n_chunks), init, encoder
            ):
                for name, writer in writers.items():
                    writer.write(chunk.tokens[name])
                    writer.documents += chunk.documents[name]
                    writer.bytes += chunk.bytes[name]
                bar.update(chunk.chars)
        documents = sum(w.documents for w in writers.values())
        if documents != scan.documents:
            raise ValueError(
                f"data: {source} gave {scan.documents} documents, then {documents}; "
                "the source changed while it was read"
            )
        meta = {
            "tokenizer": TOKENIZER_FILE,
            "vocab_size": tok.vocab_size,
            "dtype": dtype,
            "eot_id": tok.eot_id,
            "source": source,
            "column": column,
            "val_fraction": val_fraction,
            "seed": seed,
            "splits": {name: w.summary() for name, w in writers.items()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if source.startswith("hf:"):
            meta.update(split=split, data_files=data_files)
        atomic_write_json(tmp / META_FILE, meta)
        publish(tmp, out, META_FILE, stale=("train_*.bin", "val_*.bin"))
    return meta


# ---------------------------------------------------------------------------- reading
