"""Text generation from a checkpoint: `attractor generate CHECKPOINT --prompt TEXT`, or
`--prompt-ids 1,2,3` for a model without a tokenizer (the ids come back, comma-separated).

Tokens come from the model's cached generation (`LanguageModel.generate`: for the
attractor, each new position is solved against the cached equilibria of the prefix),
greedy at temperature 0, else sampled from softmax(logits / temperature) over the top k.
"""

from __future__ import annotations

import argparse
import sys

import torch

from attractor.data.tokenizer import Tokenizer
from attractor.eval.loading import default_device, lm_tokenizer, load_lm
from attractor.models import LanguageModel


def generate_text(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
) -> str:
    """The prompt followed by max_new_tokens generated tokens, decoded."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty; pass some text with --prompt")
    device = next(model.parameters()).device
    prompt_ids = torch.tensor([ids], dtype=torch.long, device=device)
    out = model.generate(prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k)
    return tokenizer.decode(out[0].tolist())


def prompt_ids(text: str, vocab_size: int) -> list[int]:
    """The ids of --prompt-ids ("1,2,3"), each checked to lie below the vocabulary."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--prompt-ids: expected ids like 1,2,3, got {text!r}") from None
    if not ids:
        raise ValueError("--prompt-ids: the prompt is empty; give ids like 1,2,3")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"--prompt-ids: {bad[0]} is not a token of this model (ids 0..{vocab_size - 1})"
        )
    return ids


def _check(args: argparse.Namespace) -> None:
    if args.prompt is not None and not args.prompt:
        raise ValueError("the prompt is empty; pass some text with --prompt")
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")


def run(args: argparse.Namespace) -> int:
    """`attractor generate`: print the prompt and its continuation."""
    try:
        _check(args)
        model = load_lm(args.checkpoint, args.device or default_device())
        if args.seed is not None:
            torch.manual_seed(args.seed)
        if args.prompt_ids is not None:
            ids = torch.tensor([prompt_ids(args.prompt_ids, model.config.vocab_size)])
            device = next(model.parameters()).device
            out = model.generate(ids.to(device), args.max_new_tokens, args.temperature, args.top_k)
            text = ",".join(str(i) for i in out[0].tolist())
        else:
            tokenizer = lm_tokenizer(args.checkpoint, model, args.tokenizer)
            text = generate_text(
                model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k
            )
    except ValueError as err:
        print(f"attractor generate: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0
