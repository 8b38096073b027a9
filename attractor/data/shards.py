"""Reading a prepared text directory: its meta.json and its token shards as windows.

`attractor data text` (`attractor.data.text.prepare_text`) writes the directory; this
module only reads it, so the trainer and the evaluator need none of the preparation code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from attractor.data.tokenizer import load_tokenizer

META_FILE = "meta.json"


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The meta.json of a prepared directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"data: {directory} does not exist; prepare it with `attractor data text`")
    path = directory / META_FILE
    if not path.is_file():
        raise ValueError(
            f"data: {directory} has no {META_FILE} (not prepared, or interrupted); "
            "run `attractor data text` again"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"data: {path} is not valid JSON ({err}); prepare it again") from None


class ShardWindows:
    """Non-overlapping (x, y) windows of seq_len over one split of a prepared directory.

    Window i of a shard is its tokens [i * seq_len, (i + 1) * seq_len + 1); windows do not
    cross shard boundaries. The interface of `data.lm.Windows`: len() and batch(indices).
    """

    def __init__(self, directory: str | Path, split: str = "train", *, seq_len: int):
        self.directory = Path(directory)
        self.meta = read_meta(directory)
        if split not in self.meta["splits"]:
            names = ", ".join(self.meta["splits"])
            raise ValueError(f"data: no split {split!r} in {directory}; splits: {names}")
        self.split, self.seq_len = split, seq_len
        self.tokenizer = load_tokenizer(directory)
        info = self.meta["splits"][split]
        self.shards = [s for s in info["shards"] if s["tokens"] > 0]
        self.tokens = sum(s["tokens"] for s in self.shards)
        if self.tokens == 0:
            raise ValueError(f"data: split {split!r} of {directory} has no tokens")
        self.bytes_per_token = info["bytes"] / self.tokens
        self._check_files()
        counts = [(s["tokens"] - 1) // seq_len for s in self.shards]
        if sum(counts) == 0:
            longest = max(s["tokens"] for s in self.shards)
            raise ValueError(
                f"data: the longest {split} shard of {directory} has {longest} tokens, too few "
                f"for one window of seq_len + 1 = {seq_len + 1}; use a shorter seq_len"
            )
        self._ends = np.cumsum(counts)  # window index where each shard ends
        self._maps: list[np.memmap] | None = None

    def _check_files(self) -> None:
        itemsize = np.dtype(self.meta["dtype"]).itemsize
        for shard in self.shards:
            path = self.directory / shard["file"]
            expect = shard["tokens"] * itemsize
            size = path.stat().st_size if path.is_file() else None
            if size != expect:
                found = "missing" if size is None else f"{size} bytes"
                raise ValueError(
                    f"data: {path} is {found}, expected {expect} bytes; prepare the data again"
                )

    def _memmaps(self) -> list[np.memmap]:
        if self._maps is None:
            dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
            self._maps = [
                np.memmap(self.directory / s["file"], dtype=dtype, mode="r", shape=(s["tokens"],))
                for s in self.shards
            ]
        return self._maps

    def __getstate__(self) -> dict[str, Any]:  # pickle paths, not the mapped tokens
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return int(self._ends[-1])

    def batch(self, indices) -> tuple[Any, Any]:
        """x, y int64 tensors of shape (len(indices), seq_len)."""
        import torch

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"data: window index out of range 0..{len(self) - 1}")
        if idx.size == 0:
            empty = torch.empty(0, self.seq_len, dtype=torch.long)
            return empty, empty.clone()
        shard = np.searchsorted(self._ends, idx, side="right")
        starts = (idx - np.concatenate([[0], self._ends])[shard]) * self.seq_len
        maps = self._memmaps()
        w = np.stack(
            [maps[s][a : a + self.seq_len + 1] for s, a in zip(shard, starts, strict=True)]
        )
        w = torch.from_numpy(w.astype(np.int64).reshape(idx.size, self.seq_len + 1))  # (B, T+1)
        return w[:, :-1], w[:, 1:]
