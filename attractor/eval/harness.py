"""An `lm-eval` (EleutherAI lm-evaluation-harness) model over our checkpoints.

Importing this module registers the model under the name "attractor":

    import attractor.eval.harness, lm_eval
    lm_eval.simple_evaluate(model="attractor", model_args="pretrained=DIR",
                            tasks=["lambada_openai", "hellaswag"])

From the shell, `python -m attractor.eval.harness` is lm-eval's own command line with the model
registered (plain `lm_eval` does not import third-party models):

    python -m attractor.eval.harness --model attractor --model_args pretrained=DIR \
        --tasks lambada_openai,hellaswag

Requests are scored the standard lm-eval way: context and continuation are encoded
separately and their ids concatenated (an empty context becomes the end-of-text token),
inputs longer than the model's max_seq_len keep their last max_seq_len tokens, and the
rolling log-likelihood covers every token with disjoint windows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (the built-in models stay registered next to ours)
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from attractor.data.tokenizer import Tokenizer
from attractor.eval.lm_metrics import token_nll
from attractor.eval.loading import default_device, load_language_model
from attractor.models.language_model import LanguageModel, sample_next

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


def _batch_size(value: Any) -> int:
    """lm-eval passes an int, a digit string, or "auto" (our default, 8)."""
    if value is None or str(value).startswith("auto"):
        return 8
    size = int(value)
    if size < 1:
        raise ValueError(f"attractor harness: batch_size must be >= 1, got {value}")
    return size


@register_model("attractor")
class AttractorHarnessLM(LM):
    """lm-eval's LM interface over an attractor checkpoint directory (`pretrained=DIR`) or
    an in-memory model and tokenizer. `depth` fixes the model's depth T for scoring."""

    def __init__(
        self,
        pretrained: str | Path | None = None,
        model: LanguageModel | None = None,
        tokenizer: Tokenizer | None = None,
        batch_size: int | str | None = 8,
        max_batch_size: int | None = None,
        device: str | None = None,
        max_length: int | None = None,
        depth: int | None = None,
    ):
        super().__init__()
        if (pretrained is None) == (model is None) or (model is None) != (tokenizer is None):
            raise ValueError("attractor harness: pass pretrained=DIR, or both model and tokenizer")
        device = device or default_device()
        if pretrained is not None:
            model, tokenizer = load_language_model(pretrained, device)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = _batch_size(batch_size)
        if max_batch_size is not None:
            self.batch_size = min(self.batch_size, int(max_batch_size))
        self.max_length = int(max_length or model.config.max_seq_len)
        self.depth = None if depth is None else int(depth)
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._device

    @property
    def eot_id(self) -> int:
        """The tokenizer's end-of-text token."""
        return self.tokenizer.eot_id

    # ------------------------------------------------------------------ scoring
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(x) if self.depth is None else self.model(x, depth=self.depth)
        return out.logits

    def _encode_pair(self, context: str, continuation: str) -> Pair:
        """Context and continuation encoded separately (trailing context spaces moved to
        the continuation, as lm-eval's models do); "" context -> [eot]."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self.tokenizer.encode(context) if context else [self.eot_id]
        return ctx or [self.eot_id], self.tokenizer.encode(continuation)

    def _score(self, pairs: list[Pair], desc: str) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), continuation is the greedy one) per pair;
        batched longest first, right-padded (causal: padding never reaches real tokens)."""
        for _, cont in pairs:
            if len(cont) > self.max_length:
                raise ValueError(
                    f"attractor harness: a continuation of {len(cont)} tokens cannot be scored "
                    f"in windows of {self.max_length}"
                )
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        starts = range(0, len(order), self.batch_size)
        for s in tqdm(starts, desc=desc, unit="batch", leave=False, disable=None):
            chunk = order[s : s + self.batch_size]
            for i, result in zip(chunk, self._score_batch([pairs[i] for i in chunk]), strict=True):
                results[i] = result
        return results

    def _score_batch(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        rows = [(ctx + cont)[-(self.max_length + 1) :][:-1] for ctx, cont in pairs]
        width = max(1, *(len(r) for r in rows))
        x = torch.full((len(rows), width), self.eot_id, dtype=torch.long)
        for b, row in enumerate(rows):
            x[b, : len(row)] = torch.tensor(row)
        logits = self._logits(x.to(self.device))  # (B, W, V)
        out = []
        for b, ((_, cont), row) in enumerate(zip(pairs, rows, strict=True)):
            n, end = len(cont), len(row)
            target = torch.tensor(cont, dtype=torch.long, device=logits.device)
            lg = logits[b, end - n : end]  # (n, V): the positions that predict cont
            logprob = -float(token_nll(lg[None], target[None]).sum())
            out.append((logprob, bool((lg.argmax(dim=-1) == target).all())))
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether it is the greedy one) per request."""
        pairs = [self._encode_pair(*req.args) for req in requests]
        results = self._score(pairs, "loglikelihood")
        for req, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return results

    def rolling_windows(self, text: str) -> list[Pair]:
        """Disjoint windows of at most max_length tokens that together predict every token
        of text, the first from the end-of-text token (lm-eval's rolling scheme)."""
        windows = lm_utils.get_rolling_token_windows(
            token_list=self.tokenizer.encode(text),
            prefix_token=self.eot_id,
            max_seq_len=self.max_length,
            context_len=1,
        )
        return [lm_utils.make_disjoint_window(w) for w in windows]

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        """The log-likelihood of each request's whole text, every token scored once."""
        per_request = [self.rolling_windows(req.args[0]) for req in requests]
        flat = [w for windows in per_request for w in windows]
        scores = iter(self._score(flat, "loglikelihood_rolling"))
        results = []
        for req, windows in zip(requests, per_request, strict=True):
            total = sum(next(scores)[0] for _ in windows)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
            results.append(total)
        return results

    # ------------------------------------------------------------------ generation
    def _generate(self, context: str, until: list[str], max_gen_toks: int, **sampling) -> str:
        """Tokens from the cached head (`extend`, as in `model.generate`) until a stop
        string, the end-of-text token or max_gen_toks; the text before the first stop."""
        ids = self.tokenizer.encode(context) or [self.eot_id]
        ids = ids[-max(1, self.max_length - max_gen_toks) :]
        new: list[int] = []
        with torch.no_grad():
            cache = self.model.new_cache()
            logits = self.model.extend(torch.tensor([ids], device=self.device), cache)
            for _ in range(max_gen_toks):
                nxt = sample_next(logits[:, -1], **sampling)  # (1,)
                if int(nxt) == self.eot_id:
                    break
                new.append(int(nxt))
                if any(s in self.tokenizer.decode(new) for s in until):
                    break
                logits = self.model.extend(nxt[:, None], cache)
        text = self.tokenizer.decode(new)
        for stop in until:
            text = text.split(stop)[0]
        return text

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Each request's greedy (or sampled) continuation, cut at its first stop string."""
        results = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else [s for s in until if s]
            sampling: dict[str, Any] = {"temperature": 0.0, "top_k": None}
            if kwargs.get("do_sample") and float(kwargs.get("temperature", 0.0)) > 0:
                sampling = {
                    "temperature": float(kwargs["temperature"]),
                    "top_k": kwargs.get("top_k"),
                }
            max_gen_toks = int(kwargs.get("max_gen_toks", 256))
            text = self._generate(context, until, max_gen_toks, **sampling)
            self.cache_hook.add_partial("generate_until", req.args, text)
            results.append(text)
        return results


def main() -> None:
    """lm-eval's command line with the "attractor" model registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
