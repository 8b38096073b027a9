"""Text data: tokenizer round trips, shard writing and reading, the streaming Hugging Face
path on a local parquet file, the document split, bad input and parallel tokenization.

References are computed here by hand: the split by its documented hash rule, the token
stream by encoding each document with the saved tokenizer."""

import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from attractor.cli import main
from attractor.data import text, text_sources
from attractor.data.lm import pydoc_documents
from attractor.data.shards import ShardWindows
from attractor.data.text import prepare_text
from attractor.data.tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer

UNICODE = (
    "日本語のテキスト、中文字符，한국어 문장입니다.\n"
    "emoji 😀🎉 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷 thumbs 👍🏽\n"
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0362\u0324 vs precomposed é ä ñ\n"
    "RTL: שלום עולם مرحبا بالعالم \u200f\u202ereversed\u202c\n"
    "zero width: a\u200bb\u200cc\u200dd\ufeffe\n"
    "newlines\r\nwindows\rold mac\n\ttabs\t\tand  spaces   \n\x00\x7f control \u2028\u2029 end"
)

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    UNICODE,
    "def f(x):\n    return x * 2\n",
    "Fixed points: z* = f(z*, x); Anderson acceleration mixes past iterates.",
    "Zürich, Kraków, São Paulo, Reykjavík — naïve café résumé.",
    "x" * 300,
    "Ω ≈ ç √ ∫ µ ≤ ≥ ÷ — mathematical symbols ∀∃∈∉",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n\nSed do eiusmod.",
    "Short.",
    "一二三四五六七八九十 " * 10,
    "Tabs\tand\nnewlines\r\nmixed\n",
    "The end of the corpus: <eot> is not special here.",
]


def score(doc: str, seed: int) -> float:
    """The documented split rule: sha256 of f"{seed}\\0{doc}", first 8 bytes, big-endian."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{doc}".encode()).digest()[:8], "big") / 2**64


def reference_split(docs, val_fraction, seed):
    val = [d for d in docs if score(d, seed) < val_fraction]
    train = [d for d in docs if score(d, seed) >= val_fraction]
    assert val and train, "test corpus should split without the tiny-corpus fallback"
    return {"train": train, "val": val}


def read_split(out: Path, split: str) -> np.ndarray:
    meta = json.loads((out / "meta.json").read_text())
    parts = [
        np.fromfile(out / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]
    ]
    return np.concatenate(parts)


def decode_documents(out: Path, split: str) -> list[str]:
    tok = load_tokenizer(out)
    stream = read_split(out, split).tolist()
    docs, current = [], []
    for t in stream:
        if t == tok.eot_id:
            docs.append(tok.decode(current))
            current = []
        else:
            current.append(t)
    assert not current, "the stream should end with an end-of-document token"
    return docs


def write_txt_dir(root: Path, docs) -> Path:
    """One file per document, nested, in sorted order; plus files the reader must skip."""
    for i, doc in enumerate(docs):
        sub = root / ("a" if i < len(docs) // 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:02d}.txt").write_text(doc, encoding="utf-8", newline="")
    (root / "a" / "notes.md").write_text("not a corpus file")
    (root / "b" / "99_empty.txt").write_text("")
    (root / "b" / "98_blank.txt").write_text("  \n\t\n")
    return root


def write_jsonl(path: Path, docs, column="text") -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i, doc in enumerate(docs):
            f.write(json.dumps({"id": i, column: doc}) + "\n")
            if i == 3:
                f.write("\n")  # blank lines are skipped
    return path


def write_parquet(path: Path, docs, column="text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [*docs[:5], None, *docs[5:]]  # a null row is skipped
    table = pa.table({"id": list(range(len(rows))), column: rows})
    pq.write_table(table, path, row_group_size=4)
    return path


# ---------------------------------------------------------------------------- tokenizers


def test_bpe_round_trip_on_unicode_heavy_text(tmp_path):
    tok = BPETokenizer.train([*pydoc_documents(), UNICODE], vocab_size=512)
    assert tok.vocab_size == 512
    for doc in [UNICODE, *DOCS, *pydoc_documents()[:5]]:
        assert tok.decode(tok.encode(doc)) == doc
    assert len(tok.encode(pydoc_documents()[0])) < len(pydoc_documents()[0].encode()) / 2
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(UNICODE) == tok.encode(UNICODE)
    assert loaded.eot_id == tok.eot_id


def test_byte_round_trip_on_unicode_heavy_text():
    tok = ByteTokenizer()
    ids = tok.encode(UNICODE)
    assert ids == list(UNICODE.encode("utf-8"))
    assert tok.decode(ids) == UNICODE


# ---------------------------------------------------------------------------- shards


@pytest.mark.parametrize("kind", ["txt-dir", "jsonl"])
def test_shards_equal_hand_tokenized_documents(tmp_path, kind):
    if kind == "txt-dir":
        source = write_txt_dir(tmp_path / "corpus", DOCS)
    else:
        source = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    out = tmp_path / "out"
    shard_tokens = 300
    meta = prepare_text(
        str(source), out, vocab_size=300, val_fraction=0.3, shard_tokens=shard_tokens
    )
    tok = load_tokenizer(out)
    assert tok.vocab_size == meta["vocab_size"] <= 300
    assert meta["dtype"] == "uint16" and meta["eot_id"] == tok.eot_id
    expected = reference_split(DOCS, 0.3, seed=0)
    for split, docs in expected.items():
        ref = [t for d in docs for t in [*tok.encode(d), tok.eot_id]]
        info = meta["splits"][split]
        assert read_split(out, split).tolist() == ref
        assert info["documents"] == len(docs)
        assert info["tokens"] == len(ref)
        assert info["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
        sizes = [s["tokens"] for s in info["shards"]]
        assert sizes == [shard_tokens] * (len(ref) // shard_tokens) + (
            [len(ref) % shard_tokens] if len(ref) % shard_tokens else []
        )
        for s in info["shards"]:
            assert (out / s["file"]).stat().st_size == 2 * s["tokens"]  # uint16
    assert decode_documents(out, "train") + decode_documents(out, "val") == (
        expected["train"] + expected["val"]
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_shard_windows_equal_slices_of_the_reference(tmp_path):
    out = tmp_path / "out"
    shard_tokens, seq_len = 250, 16
    prepare_text(str(write_jsonl(tmp_path / "c.jsonl", DOCS)), out, vocab_size=300,
                 val_fraction=0.3, shard_tokens=shard_tokens)  # fmt: skip
    tok = load_tokenizer(out)
    train = reference_split(DOCS, 0.3, seed=0)["train"]
    ref = [t for d in train for t in [*tok.encode(d), tok.eot_id]]
    shards = [ref[i : i + shard_tokens] for i in range(0, len(ref), shard_tokens)]
    windows = [  # (x, y) pairs, never across a shard boundary
        (s[i : i + seq_len], s[i + 1 : i + seq_len + 1])
        for s in shards
        for i in range(0, len(s) - seq_len, seq_len)
    ]
    data = ShardWindows(out, "train", seq_len=seq_len)
    assert len(data) == len(windows)
    picks = [0, len(windows) - 1, 3, 3, len(windows) // 2, 15]
    x, y = data.batch(picks)
    assert x.shape == y.shape == (len(picks), seq_len)
    assert str(x.dtype) == "torch.int64"
    assert x.tolist() == [windows[i][0] for i in picks]
    assert y.tolist() == [windows[i][1] for i in picks]
    assert data.bytes_per_token == pytest.approx(sum(len(d.encode()) for d in train) / len(ref))
    assert data.tokenizer.eot_id == tok.eot_id and data.meta["dtype"] == "uint16"
    again = pickle.loads(pickle.dumps(data))
    assert again.batch(picks)[0].tolist() == x.tolist()
    with pytest.raises(IndexError):
        data.batch([len(windows)])


def test_shard_windows_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ShardWindows(tmp_path / "nowhere", seq_len=8)
    with pytest.raises(ValueError, match="no meta.json"):
        ShardWindows(tmp_path, seq_len=8)
    out = tmp_path / "out"
    prepare_text(str(write_jsonl(tmp_path / "c.jsonl", DOCS)), out, tokenizer="bytes",
                 val_fraction=0.3, shard_tokens=100)  # fmt: skip
    with pytest.raises(ValueError, match="too few for one window of seq_len"):
        ShardWindows(out, "train", seq_len=100)
    assert len(ShardWindows(out, "train", seq_len=99)) > 0
    with pytest.raises(ValueError, match="no split 'test'"):
        ShardWindows(out, "test", seq_len=8)
    (out / "val_000.bin").write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="prepare the data again"):
        ShardWindows(out, "val", seq_len=8)


# ---------------------------------------------------------------------------- sources


def test_hf_streaming_parquet_equals_the_direct_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    pytest.importorskip("datasets")
    path = write_parquet(tmp_path / "corpus.parquet", DOCS, column="body")
    direct = prepare_text(str(path), tmp_path / "direct", vocab_size=300, column="body",
                          val_fraction=0.3)  # fmt: skip
    hf = prepare_text("hf:parquet", tmp_path / "hf", vocab_size=300, column="body",
                      data_files=str(path), val_fraction=0.3)  # fmt: skip
    for split in ("train", "val"):
        assert (
            read_split(tmp_path / "hf", split).tolist()
            == read_split(tmp_path / "direct", split).tolist()
        )
        for key in ("documents", "tokens", "bytes"):
            assert hf["splits"][split][key] == direct["splits"][split][key]
    assert direct["splits"]["train"]["documents"] + direct["splits"]["val"]["documents"] == len(
        DOCS
    )
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (
        tmp_path / "direct" / "tokenizer.json"
    ).read_bytes()
    with pytest.raises(ValueError, match="no column 'text'.*id, body"):
        prepare_text("hf:parquet", tmp_path / "bad", data_files=str(path), vocab_size=300)
    assert not (tmp_path / "bad").exists()


def test_python_docs_missing_names_the_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text_sources, "PYTHON_DOCS", tmp_path / "no-such-docs")
    out = tmp_path / "out"
    rc = main(["data", "text", "--source", "python-docs", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "python3.11-doc" in err and "apt-get install" in err
    assert not out.exists()


# ---------------------------------------------------------------------------- split


def test_split_is_deterministic_by_document_and_seeded(tmp_path):
    docs = [f"document number {i}: " + "text " * (i % 7) for i in range(40)]
    source = str(write_jsonl(tmp_path / "c.jsonl", docs))

    def split(seed, name):
        prepare_text(source, tmp_path / name, tokenizer="bytes", val_fraction=0.25, seed=seed)
        return decode_documents(tmp_path / name, "train"), decode_documents(tmp_path / name, "val")

    train, val = split(0, "a")
    assert not set(train) & set(val) and sorted(train + val) == sorted(docs)
    assert val == [d for d in docs if score(d, 0) < 0.25]  # in corpus order
    assert split(0, "b") == (train, val)
    for name in ("train_000.bin", "val_000.bin", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train1, val1 = split(1, "c")
    assert set(val1) != set(val) and not set(train1) & set(val1)


def test_tiny_corpus_puts_the_lowest_scoring_document_in_validation(tmp_path):
    docs = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"]
    meta = prepare_text(str(write_jsonl(tmp_path / "c.jsonl", docs)), tmp_path / "out",
                        vocab_size=280, val_fraction=1e-9)  # fmt: skip
    lowest = min(docs, key=lambda d: score(d, 0))
    assert decode_documents(tmp_path / "out", "val") == [lowest]
    assert decode_documents(tmp_path / "out", "train") == [d for d in docs if d != lowest]
    assert meta["splits"]["val"]["documents"] == 1


# ---------------------------------------------------------------------------- bad input


def run_cli(capsys, *args):
    rc = main(["data", "text", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip()


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "corpus is empty"),
        ("missing", "does not exist"),
        ("jsonl-column", "no column 'text'; columns: id, body"),
        ("parquet-column", "no column 'text'; columns: id, body"),
        ("bad-json", "line 2 of .* is not JSON"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, case, message):
    if case == "empty":
        source = write_txt_dir(tmp_path / "corpus", ["", " \n", "\t"])
    elif case == "missing":
        source = tmp_path / "nope.jsonl"
    elif case == "jsonl-column":
        source = write_jsonl(tmp_path / "c.jsonl", DOCS, column="body")
    elif case == "parquet-column":
        source = write_parquet(tmp_path / "c.parquet", DOCS, column="body")
    else:
        source = tmp_path / "c.jsonl"
        source.write_text('{"text": "fine"}\n{"text": broken\n')
    fresh = tmp_path / "new" / "deeper" / "out"
    existing = tmp_path / "existing"
    existing.mkdir()
    for out in (fresh, existing):
        rc, stdout, err = run_cli(capsys, "--source", source, "--out", out, "--vocab-size", 300)
        assert rc == 2 and stdout == ""
        assert len(err.splitlines()) == 1 and err.startswith("attractor data text: data: ")
        assert "Traceback" not in err

        assert re.search(message, err), err
    assert not (tmp_path / "new").exists()
    assert list(existing.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def changing_source(source, **kwargs):  # the second pass sees one document more
        calls.append(source)
        yield from DOCS[: 6 + len(calls)]

    monkeypatch.setattr(text, "iter_documents", changing_source)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="changed while it was read"):
        prepare_text("anything", existing, vocab_size=300, val_fraction=0.3)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    calls.clear()
    with pytest.raises(ValueError, match="changed while it was read"):
        prepare_text("anything", tmp_path / "a" / "b", vocab_size=300, val_fraction=0.3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_a_prepared_directory_is_kept_unless_overwrite(tmp_path, capsys):
    source = write_jsonl(tmp_path / "c.jsonl", DOCS)
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(capsys, "--source", source, "--out", out, "--vocab-size", 300)
    assert rc == 0
    assert "12 documents" in stdout and "MB/s" in stdout and "tokens" in stdout
    before = (out / "train_000.bin").read_bytes()
    rc, _, err = run_cli(capsys, "--source", source, "--out", out, "--tokenizer", "bytes")
    assert rc == 2 and "--overwrite" in err
    assert (out / "train_000.bin").read_bytes() == before
    rc, _, _ = run_cli(capsys, "--source", source, "--out", out, "--tokenizer", "bytes",
                       "--overwrite", "--shard-tokens", 500)  # fmt: skip
    assert rc == 0
    meta = json.loads((out / "meta.json").read_text())
    files = sorted(p.name for p in out.iterdir())
    shards = [s["file"] for split in meta["splits"].values() for s in split["shards"]]
    assert files == sorted(["meta.json", "tokenizer.json", *shards])
    assert meta["vocab_size"] == 257 and len(shards) > 2


# ---------------------------------------------------------------------------- parallel


def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}"
        prepare_text("pydoc", outs[workers], vocab_size=512, val_fraction=0.05,
                     workers=workers, chunk_chars=30_000, shard_tokens=40_000)  # fmt: skip
    files = sorted(p.name for p in outs[1].iterdir())
    assert files == sorted(p.name for p in outs[2].iterdir())
    assert len([f for f in files if f.startswith("train_")]) > 2
    for name in files:
        if name != "meta.json":
            assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
    meta = [json.loads((o / "meta.json").read_text()) for o in outs.values()]
    assert meta[0]["splits"] == meta[1]["splits"]
