"""Tokenizers: byte-level BPE trained with Hugging Face `tokenizers`, and plain bytes.

Both answer the same calls: `encode(text) -> list[int]`, `decode(ids) -> str`,
`vocab_size`, `eot_id` (the end-of-document token), `save(directory)`. A directory holds
its tokenizer as `tokenizer.json` (written atomically): the Hugging Face file for BPE, or a
two-key file for bytes; `load_tokenizer(directory)` reads either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from attractor.core.atomic import atomic_path, atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
EOT = "<|endoftext|>"
# The end-of-text token: ours, or the usual names in tokenizers made elsewhere (the
# tokenizer.json of an imported model).
END_OF_TEXT = (EOT, "<|end_of_text|>", "</s>", "<eos>")


class Tokenizer(Protocol):
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, directory: str | Path) -> Path: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, and 256 as end of document (vocab 257)."""

    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> Path:
        """Write DIRECTORY/tokenizer.json; return its path."""
        data = {"type": "attractor-bytes", "vocab_size": 257}
        return atomic_write_text(Path(directory) / TOKENIZER_FILE, json.dumps(data) + "\n")


class BPETokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenisation, Hugging Face `tokenizers`)."""

    def __init__(self, tok):  # tok: tokenizers.Tokenizer
        tok.encode_special_tokens = True  # "<|endoftext|>" inside a document is plain text
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        ids = [tok.token_to_id(t) for t in END_OF_TEXT]
        eot = next((i for i in ids if i is not None), None)
        if eot is None:
            raise ValueError(
                f"tokenizer: none of {', '.join(END_OF_TEXT)} is in the vocabulary; retrain "
                "it with an end-of-text token"
            )
        self.eot_id = eot

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges from texts until the vocabulary (bytes + merges + EOT) has vocab_size."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"tokenizer: vocab_size must be at least 257, got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def save(self, directory: str | Path) -> Path:
        """Write DIRECTORY/tokenizer.json (the Hugging Face file); return its path."""
        path = Path(directory) / TOKENIZER_FILE
        with atomic_path(path) as tmp:
            self.tok.save(str(tmp))
        return path


def load_tokenizer(directory: str | Path) -> ByteTokenizer | BPETokenizer:
    """The tokenizer saved in a data or checkpoint directory (or the tokenizer.json file
    itself, e.g. one downloaded beside an imported model)."""
    path = Path(directory)
    path = path / TOKENIZER_FILE if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise ValueError(
            f"tokenizer: {path} does not exist; prepare data with `attractor data text` or "
            "pass the directory that holds tokenizer.json"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"tokenizer: {path} is not valid JSON ({err}); prepare it again") from None
    if data.get("type") == "attractor-bytes":
        return ByteTokenizer()
    from tokenizers import Tokenizer as HFTokenizer

    return BPETokenizer(HFTokenizer.from_file(str(path)))
