"""Text generation from a checkpoint: `attractor generate CHECKPOINT --prompt TEXT`.

Tokens come from the model's cached generation (`LanguageModel.generate`: for the
attractor, each new position is solved against the cached equilibria of the prefix),
greedy at temperature 0, else sampled from softmax(logits / temperature) over the top k.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from attractor.data.tokenizer import Tokenizer
from attractor.evaluate import default_device, load_checkpoint
from attractor.models.base import LanguageModel


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


def _check(args: argparse.Namespace) -> None:
    if not args.prompt:
        raise ValueError("the prompt is empty; pass some text with --prompt")
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")


def cli_generate(args: argparse.Namespace) -> int:
    """`attractor generate`: print the prompt and its continuation."""
    try:
        _check(args)
        model, tokenizer = load_checkpoint(args.checkpoint, args.device)
        if args.seed is not None:
            torch.manual_seed(args.seed)
        text = generate_text(
            model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k
        )
    except ValueError as err:
        print(f"attractor generate: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


def add_generate_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint (cached head)")
    p.add_argument(
        "checkpoint", help="a directory with config.json, model.safetensors and tokenizer.json"
    )
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, help="sample only from the k most likely tokens")
    p.add_argument("--seed", type=int, help="random seed for sampling")
    p.add_argument("--device", default=default_device())
    p.set_defaults(run=cli_generate)
