"""The one "load a model, load its data" path, shared by `attractor eval`, `attractor
generate`, `attractor solve --model`, the demo, the lm-eval adapter and the benchmarks.

An exported model directory (what training writes to OUT_DIR/model) holds config.json and
model.safetensors, the tokenizer for language models (tokenizer.json), and training.json,
the record of the data it trained on: evaluation on the same source uses that record's
validation split (`attractor.data.lm.text_split`), so it never scores training documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from attractor.data import maze
from attractor.data.lm import TextSplit, text_split
from attractor.data.puzzles import PuzzleDataset, load_split
from attractor.data.tokenizer import TOKENIZER_FILE, ByteTokenizer, Tokenizer, load_tokenizer
from attractor.models import GridModel, LanguageModel, Model, family, load_pretrained
from attractor.models.pretrained import HUB_PREFIX, hub_directory
from attractor.models.registry import KINDS

TRAINING_RECORD = "training.json"


def default_device() -> str:
    """The default device: "cuda" when a GPU is available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Model:
    """The exported model in `directory`, in eval mode."""
    return load_pretrained(directory, map_location=device).eval()


def load_lm(directory: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """The language model of a directory (ours, the paper's release format or hf:...), in
    eval mode; a grid-puzzle model there is a ValueError."""
    model = load_model(directory, device)
    if not isinstance(model, LanguageModel):
        raise ValueError(
            f"{directory} holds a {model.kind} grid-puzzle model, not a language model; "
            "evaluate it on a puzzle split with `attractor eval DIR --data SPLIT`"
        )
    return model


def lm_tokenizer(
    directory: str | Path, model: LanguageModel, tokenizer: str | Path | None = None
) -> Tokenizer:
    """The tokenizer of a model: `tokenizer` (a tokenizer.json or a directory holding one)
    or the tokenizer.json beside the weights; none, or one that does not fit the model's
    vocabulary, is a ValueError."""
    if tokenizer is not None:
        where = Path(tokenizer)
    elif str(directory).startswith(HUB_PREFIX):  # the snapshot, cached by now
        where = hub_directory(str(directory))
    else:
        where = Path(directory)
    if tokenizer is None and not (where / TOKENIZER_FILE).is_file():
        raise ValueError(
            f"{directory} has no tokenizer.json, and text needs one: pass --tokenizer PATH "
            "(a tokenizer.json or its directory), or work in token ids (generate "
            "--prompt-ids 1,2,3; eval --data synthetic)"
        )
    loaded = load_tokenizer(where)
    if loaded.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"{directory}: the tokenizer has {loaded.vocab_size} tokens but the model only "
            f"{model.config.vocab_size}; the two do not belong together"
        )
    return loaded


def load_language_model(
    directory: str | Path,
    device: str | torch.device = "cpu",
    tokenizer: str | Path | None = None,
) -> tuple[LanguageModel, Tokenizer]:
    """The language model (in eval mode) and its tokenizer (`lm_tokenizer`)."""
    model = load_lm(directory, device)
    return model, lm_tokenizer(directory, model, tokenizer)


def synthetic_text(model: LanguageModel, seq_len: int, batch_size: int, seed: int = 0) -> TextSplit:
    """Uniform random tokens below the model's vocabulary (`--data synthetic`): no tokenizer
    and no bytes, so loss and perplexity only (against ln V for a model that knows
    nothing)."""
    return text_split("synthetic", seq_len, 0.5, seed, model.config.vocab_size, batch_size)


def check_text_fits(data: str, model: LanguageModel) -> None:
    """--data pydoc (bytes, 257 tokens) on a model with a smaller vocabulary is a ValueError
    (checked before any tokenizer, which such a model may not have)."""
    if data == "pydoc" and model.config.vocab_size < ByteTokenizer.vocab_size:
        raise ValueError(
            f"--data pydoc is byte level ({ByteTokenizer.vocab_size} token ids) but the model "
            f"has a vocabulary of {model.config.vocab_size}; evaluate on data tokenized for "
            "this model (attractor data text --tokenizer DIR) or on --data synthetic"
        )


def training_record(directory: str | Path) -> dict[str, Any]:
    """training.json of an exported model ({} when it has none, e.g. a hand-saved model)."""
    path = Path(directory) / TRAINING_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({err}); export the model again") from None


def load_text(
    data: str, seq_len: int, tokenizer: Tokenizer, record: dict[str, Any] | None = None
) -> TextSplit:
    """The train/validation split of `data` ("pydoc" or a directory from `attractor data
    text`) as the trainer made it: with the recorded val_fraction and seed when `record`
    (a training.json) trained on that same source."""
    trained = (record or {}).get("data") or {}
    same = trained.get("source") == data
    fraction = trained.get("val_fraction", 0.1) if same else 0.1
    seed = trained.get("seed", 0) if same else 0
    if data != "pydoc" and not Path(data).is_dir():
        raise ValueError(
            f"--data: {data} is not a directory; pass 'pydoc' or a directory prepared by "
            "`attractor data text`"
        )
    split = text_split(data, seq_len, fraction, seed)
    if split.tokenizer.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"--data: {data} was tokenized with {split.tokenizer.vocab_size} tokens, the "
            f"model's tokenizer has {tokenizer.vocab_size}; evaluate on data prepared with "
            "the model's tokenizer"
        )
    return split


def is_grid_checkpoint(directory: str | Path) -> bool:
    """Whether the directory's config.json names a grid-puzzle model kind (False when it
    cannot be read: the language-model path then says what is wrong with it)."""
    try:
        data = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
        return issubclass(family(data["kind"])[0], GridModel)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False


def check_grid_fits(model: Model, kind: str, side: int, what: str) -> None:
    """ValueError unless `model` is a grid model built for `side` x `side` puzzles of `kind`
    ("sudoku" or "maze"); `what` names the puzzles: "the puzzle", "the split DIR"."""
    if not isinstance(model, GridModel):
        grid_kinds = ", ".join(k for k, (cls, _) in KINDS.items() if issubclass(cls, GridModel))
        raise ValueError(
            f"{what} needs a grid-puzzle model, not a {model.kind} model; pass a checkpoint "
            f"trained on a puzzle split ({grid_kinds})"
        )
    c = model.config
    built = "sudoku" if c.box_rows else "maze"
    if (built, c.side) != (kind, side):
        raise ValueError(
            f"{what} is {side}x{side} {kind} but the {model.kind} model was built for "
            f"{c.side}x{c.side} {built}; use a model trained on {side}x{side} {kind} puzzles"
        )
    needed = side + 2 if kind == "sudoku" else len(maze.CHARSET) + 1
    if c.vocab_size < needed:
        raise ValueError(
            f"{what} is {side}x{side} {kind}, which needs {needed} tokens, but the model has "
            f"{c.vocab_size}; use a model trained on {side}x{side} {kind} puzzles"
        )


def load_puzzles(data: str, split: str = "test") -> tuple[PuzzleDataset, dict[str, Any]]:
    """The un-augmented test (or train) set of a split from `attractor data puzzles`, and
    its record; "val" means the test set."""
    if not Path(data).is_dir():
        what = "the default pydoc" if data == "pydoc" else f"{data}, not a directory"
        raise ValueError(
            f"--data: a grid model is evaluated on a puzzle split, not {what}; make one "
            "with `attractor data puzzles --out DIR` and pass --data DIR"
        )
    if split not in ("val", "test", "train"):
        raise ValueError(f"--split: a puzzle split has test (or val) and train, not {split!r}")
    train, test, record = load_split(data)
    examples = train if split == "train" else test
    if not examples:
        raise ValueError(f"--data: the {split} set of {data} is empty; rebuild the split")
    return PuzzleDataset(examples, record["kind"], augment=False), record


def load_grid_model_and_puzzles(
    directory: str | Path, data: str, split: str = "test", device: str | torch.device = "cpu"
) -> tuple[GridModel, PuzzleDataset, dict[str, Any]]:
    """A grid model, the puzzles of a split and the split's record, checked to fit."""
    model = load_model(directory, device)
    puzzles, record = load_puzzles(data, split)
    check_grid_fits(model, puzzles.kind, puzzles.side, f"the split {data}")
    return model, puzzles, record
