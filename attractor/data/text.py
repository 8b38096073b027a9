"""Text corpora to token shards: sources, a trained tokenizer, `.bin` shards, windows.

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
reads a split back as (x, y) windows, the interface of `data.lm.Windows`.

Sources: a .txt file (one document), a .jsonl or .parquet file (one document a row, from
`column`), a directory of them (recursively, sorted by path), `pydoc` (the standard
library's help topics), `python-docs` (Debian's python3.11-doc reStructuredText sources,
one document a file) and `hf:NAME[:CONFIG]` (Hugging Face `datasets`, streaming; the
packaged builders `hf:parquet`, `hf:json`, `hf:text`, `hf:csv` read `data_files`).
Empty and whitespace-only documents are skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from attractor.data.lm import document_score, pydoc_documents
from attractor.data.shards import META_FILE
from attractor.data.staging import publish, staging
from attractor.data.tokenizer import (
    TOKENIZER_FILE,
    BPETokenizer,
    ByteTokenizer,
    Tokenizer,
    load_tokenizer,
)

SPLITS = ("train", "val")
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
HF_FILE_BUILDERS = ("parquet", "json", "text", "csv", "arrow")
DEFAULT_VOCAB = 32768
POOL_MIN_CHARS = 64 << 20  # smaller corpora are tokenized in this process


# ---------------------------------------------------------------------------- sources


def iter_documents(
    source: str,
    *,
    column: str = "text",
    split: str = "train",
    data_files: str | list[str] | None = None,
) -> Iterator[str]:
    """The documents of a source, in a fixed order, skipping empty ones."""
    if source == "pydoc":
        docs: Iterable[str | None] = pydoc_documents()
    elif source == "python-docs":
        docs = python_docs_documents()
    elif source.startswith("hf:"):
        docs = hf_documents(source[3:], split=split, column=column, data_files=data_files)
    else:
        docs = local_documents(source, column=column)
    for doc in docs:
        if doc and not doc.isspace():
            yield doc


def python_docs_documents(root: Path | None = None) -> Iterator[str]:
    """The reStructuredText sources of the Python 3.11 documentation, one per file."""
    root = root or PYTHON_DOCS
    if not root.is_dir():
        raise ValueError(
            f"data: python-docs needs {root}; install the Debian package python3.11-doc "
            "(apt-get install python3.11-doc) or use --source pydoc"
        )
    for path in sorted(root.rglob("*.txt")):
        yield _read_txt(path)


def local_documents(path: str | Path, *, column: str = "text") -> Iterator[str | None]:
    """Documents of a .txt/.jsonl/.parquet file, or of every such file under a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"data: no {'/'.join(LOCAL_SUFFIXES)} files under {path}")
    elif path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise ValueError(
                f"data: {path} is not a {', '.join(LOCAL_SUFFIXES)} file; convert it or "
                "pass a directory of such files"
            )
        files = [path]
    else:
        raise ValueError(
            f"data: {path} does not exist; pass a .txt, .jsonl or .parquet file, a directory "
            "of them, pydoc, python-docs or hf:NAME[:CONFIG]"
        )
    for file in files:
        if file.suffix == ".txt":
            yield _read_txt(file)
        elif file.suffix == ".jsonl":
            yield from _read_jsonl(file, column)
        else:
            yield from _read_parquet(file, column)


def _read_txt(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", newline="") as f:  # keep \r\n and \r as they are
            return f.read()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data: {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    except OSError as err:
        raise ValueError(f"data: cannot read {path}: {err.strerror}") from None


def _column_value(row: dict, column: str, where: str) -> str | None:
    if column not in row:
        names = ", ".join(map(str, row)) or "none"
        raise ValueError(f"data: {where} has no column {column!r}; columns: {names} (--column)")
    value = row[column]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"data: column {column!r} of {where} is {type(value).__name__}, not text")
    return value


def _read_jsonl(path: Path, column: str) -> Iterator[str | None]:
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"data: line {number} of {path} is not JSON ({err.msg})"
                    ) from None
                if not isinstance(row, dict):
                    raise ValueError(f"data: line {number} of {path} is not a JSON object")
                yield _column_value(row, column, f"line {number} of {path}")
    except UnicodeDecodeError as err:
        raise ValueError(f"data: {path} is not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ValueError(f"data: cannot read {path}: {err.strerror}") from None


def _read_parquet(path: Path, column: str, batch_rows: int = 1024) -> Iterator[str | None]:
    """One row group's batch at a time, only the one column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        if column not in names:
            raise ValueError(
                f"data: {path} has no column {column!r}; columns: {', '.join(names)} (--column)"
            )
        for batch in file.iter_batches(batch_size=batch_rows, columns=[column]):
            values = batch.column(0)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise ValueError(f"data: column {column!r} of {path} is {values.type}, not text")
            yield from values.to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"data: {path} is not a readable parquet file ({err})") from None


def hf_documents(
    spec: str,
    *,
    split: str = "train",
    column: str = "text",
    data_files: str | list[str] | None = None,
) -> Iterator[str | None]:
    """Hugging Face `datasets` in streaming mode: spec is NAME or NAME:CONFIG."""
    name, _, config = spec.partition(":")
    if not name:
        raise ValueError("data: hf: needs a dataset name, e.g. hf:HuggingFaceFW/fineweb-edu")
    if name in HF_FILE_BUILDERS and not data_files:
        raise ValueError(f"data: hf:{name} reads local files; pass --data-files PATH")
    try:
        import datasets
    except ImportError:
        raise ValueError("data: hf: sources need `datasets`; pip install datasets") from None
    where = f"hf:{spec} split {split!r}"
    try:
        stream = datasets.load_dataset(
            name, config or None, split=split, streaming=True, data_files=data_files
        )
        for row in stream:
            yield _column_value(row, column, where)
    except ValueError:
        raise
    except FileNotFoundError as err:
        raise ValueError(f"data: {where}: {err}; check the name and --data-files") from None
    except Exception as err:  # network, hub and builder errors: one line, no traceback
        raise ValueError(f"data: {where}: {type(err).__name__}: {err}") from None


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
    """Appends tokens to split_000.bin, split_001.bin, ... of at most shard_tokens each."""

    def __init__(self, directory: Path, split: str, shard_tokens: int):
        self.directory, self.split, self.shard_tokens = directory, split, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.file = None
        self.documents = self.bytes = 0

    def write(self, tokens: np.ndarray) -> None:
        while tokens.size:
            if self.file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            part, tokens = tokens[:room], tokens[room:]
            self.file.write(part.astype(part.dtype.newbyteorder("<"), copy=False).tobytes())
            self.shards[-1]["tokens"] += int(part.size)

    def _next_shard(self) -> None:
        self.close()
        name = f"{self.split}_{len(self.shards):03d}.bin"
        self.file = (self.directory / name).open("wb")
        self.shards.append({"file": name, "tokens": 0})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

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
        writers = {name: _ShardWriter(tmp, name, shard_tokens) for name in SPLITS}
        n_chunks = math.ceil(scan.chars / chunk_chars)
        init = (str(tmp), dtype, scan.threshold, seed)
        encoder = _Encoder(tok, dtype, scan.threshold, seed)
        with _progress(progress, "tokenize", scan.chars) as bar:
            for chunk in _encode_ordered(
                _chunks(docs(), chunk_chars), min(workers, n_chunks), init, encoder
            ):
                for name, writer in writers.items():
                    writer.write(chunk.tokens[name])
                    writer.documents += chunk.documents[name]
                    writer.bytes += chunk.bytes[name]
                bar.update(chunk.chars)
        for writer in writers.values():
            writer.close()
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
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        publish(tmp, out, META_FILE, stale=("train_*.bin", "val_*.bin"))
    return meta


# ---------------------------------------------------------------------------- reading
