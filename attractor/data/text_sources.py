"""Where text corpora come from: local files, the Python docs and Hugging Face datasets.

`iter_documents(source)` yields the documents of a source in a fixed order, skipping empty
and whitespace-only ones. A source is a .txt file (one document), a .jsonl or .parquet file
(one document a row, from `column`), a directory of them (recursively, sorted by path),
`pydoc` (the standard library's help topics), `python-docs` (Debian's python3.11-doc
reStructuredText sources, one document a file) or `hf:NAME[:CONFIG]` (Hugging Face
`datasets`, streaming; the packaged builders `hf:parquet`, `hf:json`, `hf:text`, `hf:csv`
read `data_files`). Bad input is one ValueError line naming the file and the fix.
`attractor.data.text.prepare_text` turns a source into token shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from attractor.data.lm import pydoc_documents

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
HF_FILE_BUILDERS = ("parquet", "json", "text", "csv", "arrow")


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
