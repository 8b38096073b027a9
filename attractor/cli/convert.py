"""`attractor convert SRC DST`: write any model `load_pretrained` reads (the paper's release
format, `hf:OWNER/NAME[@REVISION]`, our own export) as our export: DST/config.json,
DST/model.safetensors, and SRC's tokenizer.json when it has one. SRC is read whole before
anything is written, so bad input writes nothing; DST must not exist yet (or be empty).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attractor.core.atomic import atomic_write_bytes
from attractor.data.tokenizer import TOKENIZER_FILE
from attractor.models import load_pretrained
from attractor.models.pretrained import HUB_PREFIX, hub_directory


def convert(src: str, dst: str | Path) -> Path:
    """Load `src` and save it to the new directory `dst` in our format; returns dst."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst} already exists and is not empty; choose a new directory")
    directory = hub_directory(src) if src.startswith(HUB_PREFIX) else Path(src)
    model = load_pretrained(directory)
    tokenizer = directory / TOKENIZER_FILE
    data = tokenizer.read_bytes() if tokenizer.is_file() else None
    model.save_pretrained(dst)
    if data is not None:
        atomic_write_bytes(dst / TOKENIZER_FILE, data)
    return dst


def run(args: argparse.Namespace) -> int:
    """`attractor convert`: one line naming what was written, or one error line (exit 2)."""
    try:
        dst = convert(args.src, args.dst)
    except (ValueError, OSError) as err:
        print(f"attractor convert: {err}", file=sys.stderr)
        return 2
    print(f"wrote {dst} (config.json, model.safetensors)")
    return 0
