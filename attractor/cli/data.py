"""`attractor data text`: a BPE tokenizer and token shards from a text source."""

from __future__ import annotations

import argparse
import sys
import time

from attractor.data.text import prepare_text


def run_text(args: argparse.Namespace) -> int:
    """`attractor data text`: prepare token shards; one line on stderr for bad input."""
    start = time.perf_counter()
    try:
        meta = prepare_text(
            args.source,
            args.out,
            vocab_size=args.vocab_size,
            tokenizer=args.tokenizer,
            column=args.column,
            split=args.split,
            data_files=args.data_files,
            val_fraction=args.val_fraction,
            seed=args.seed,
            workers=args.workers,
            shard_tokens=args.shard_tokens,
            tokenizer_chars=args.tokenizer_chars,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except ValueError as err:
        print(f"attractor data text: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attractor data text: interrupted; nothing was written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    mb = (train["bytes"] + val["bytes"]) / 1e6
    print(
        f"{args.source}: {train['documents'] + val['documents']} documents "
        f"(train {train['documents']}, val {val['documents']}), "
        f"{train['tokens'] + val['tokens']} tokens ({meta['dtype']}, vocab "
        f"{meta['vocab_size']}), {mb:.2f} MB in {seconds:.1f} s = {mb / seconds:.2f} MB/s "
        f"-> {args.out}"
    )
    return 0
