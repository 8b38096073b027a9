"""The lm-eval adapter (attractor/eval/harness.py) against our own forward pass and evaluation,
and a tiny task from a local file run through lm-eval's own machinery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import attractor as at
from attractor.data.lm import Windows
from attractor.data.tokenizer import ByteTokenizer
from attractor.eval.lm_metrics import evaluate_lm

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from attractor.eval.harness import AttractorHarnessLM  # noqa: E402

SEQ = 32  # the tiny model's max_seq_len: the adapter's window
PAIRS = [
    ("The fixed point of f", " is y = f(y)."),
    ("", "hello"),  # empty context: scored after the end-of-text token
    ("Anderson acceleration ", "mixes iterates"),  # the trailing space moves over
    ("a long context that does not fit into the window of thirty-two bytes:", " tail"),
]


@pytest.fixture(scope="module")
def checkpoint(tiny_attractor, byte_checkpoint, tmp_path_factory):
    return byte_checkpoint(tiny_attractor(SEQ), tmp_path_factory.mktemp("harness") / "model")


@pytest.fixture(scope="module")
def lm(checkpoint):
    return AttractorHarnessLM(pretrained=str(checkpoint), device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def model(checkpoint):
    return at.load_pretrained(checkpoint).eval()


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def token_ids(context: str, continuation: str) -> tuple[list[int], list[int]]:
    """What the adapter should score: trailing context spaces moved to the continuation,
    "" -> [end of text], the whole cut to the last SEQ + 1 tokens."""
    tok = ByteTokenizer()
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    ctx = tok.encode(stripped) or [tok.eot_id]
    return ctx, tok.encode(continuation)


def hand_logprob(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    whole = (ctx + cont)[-(SEQ + 1) :]
    x = torch.tensor([whole[:-1]])
    with torch.no_grad():
        logits = model(x).logits[0].double()  # (T, V)
    logp = logits - logits.logsumexp(dim=-1, keepdim=True)
    n = len(cont)
    rows = logp[-n:]  # the last n positions predict the continuation
    target = torch.tensor(cont)
    picked = rows[torch.arange(n), target]
    return float(picked.sum()), bool((rows.argmax(dim=-1) == target).all())


class Scored:
    """One window, labels -100 on the context: what evaluate_lm scores for a pair."""

    def __init__(self, ctx: list[int], cont: list[int]):
        whole = torch.tensor((ctx + cont)[-(SEQ + 1) :])
        self.x, self.y = whole[:-1], whole[1:].clone()
        self.y[: len(self.y) - len(cont)] = -100

    def __len__(self) -> int:
        return 1

    def batch(self, indices):
        return self.x[None], self.y[None]


def test_loglikelihood_equals_hand_computation_and_our_evaluation(lm, model):
    results = lm.loglikelihood(requests("loglikelihood", PAIRS))
    for (context, continuation), (logprob, greedy) in zip(PAIRS, results, strict=True):
        ctx, cont = token_ids(context, continuation)
        expected, expected_greedy = hand_logprob(model, ctx, cont)
        assert logprob == pytest.approx(expected, rel=1e-5, abs=1e-4)
        assert greedy == expected_greedy
        ours = evaluate_lm(model, Scored(ctx, cont))
        assert ours["tokens"] == len(cont)
        assert logprob == pytest.approx(-ours["loss"] * ours["tokens"], rel=1e-5, abs=1e-4)


def test_model_args_string_and_a_fixed_depth(checkpoint, model):
    """lm-eval's `--model_args pretrained=DIR,depth=0`: scores decode the proposal y0."""
    lm0 = AttractorHarnessLM.create_from_arg_string(
        f"pretrained={checkpoint},depth=0", {"batch_size": "auto", "device": "cpu"}
    )
    assert lm0.depth == 0 and lm0.batch_size == 8
    ctx, cont = token_ids(*PAIRS[0])
    [(logprob, _)] = lm0.loglikelihood(requests("loglikelihood", PAIRS[:1]))
    x = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logits = model.decode(model.proposal(x))[0]
    expected = -float(torch.nn.functional.cross_entropy(logits[-len(cont) :], torch.tensor(cont)))
    assert logprob == pytest.approx(expected * len(cont), rel=1e-5)


def test_loglikelihood_greedy_flag_is_true_for_the_argmax_continuation(lm, model):
    ctx = ByteTokenizer().encode("def f(x):")
    with torch.no_grad():
        out = model.generate(torch.tensor([ctx]), 3)[0, len(ctx) :].tolist()
    # the seeded model's greedy bytes here are plain ASCII text (so they round-trip)
    assert ByteTokenizer.eot_id not in out and all(b < 128 for b in out), out
    continuation = bytes(out).decode("ascii")
    [(_, greedy)] = lm.loglikelihood(requests("loglikelihood", [("def f(x):", continuation)]))
    assert greedy


def test_loglikelihood_rolling_equals_our_evaluation(lm, model):
    text = "Solve the loop: attractor models find a fixed point. " * 2
    text = text[: 3 * SEQ]  # exactly three windows of SEQ tokens
    [rolling] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(text,)]))
    tok = ByteTokenizer()
    stream = torch.tensor([tok.eot_id, *tok.encode(text)])  # EOT predicts the first byte
    ours = evaluate_lm(model, Windows(stream, SEQ), batch_size=2)
    assert ours["tokens"] == len(text)
    assert rolling == pytest.approx(-ours["loss"] * ours["tokens"], rel=1e-5)


def test_loglikelihood_rolling_scores_every_token_once(lm):
    text = "x" * (2 * SEQ + 7)
    windows = lm.rolling_windows(text)
    assert sum(len(cont) for _, cont in windows) == len(text)
    assert all(len(ctx) + len(cont) - 1 <= SEQ for ctx, cont in windows)
    [short, long] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [("xy",), (text,)]))
    assert long < short < 0


class Glyphs:
    """A tokenizer with one printable character per token (token i <-> chr(0x400 + i)), so
    that generated text cuts at stop strings exactly where the tokens do."""

    vocab_size, eot_id = 257, 256

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 0x400 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(0x400 + i) for i in ids if i != self.eot_id)


@pytest.fixture(scope="module")
def lively(tiny_attractor):
    """A model whose greedy continuations vary (a large init), with the Glyphs tokenizer."""
    model = tiny_attractor(SEQ, init_std=1.0)
    return model.eval(), Glyphs()


def expected_generation(model, tok, context: str, until: list[str], max_new: int) -> str:
    """model.generate's greedy tokens, cut at end of text, decoded, cut at the stops."""
    with torch.no_grad():
        ids = model.generate(torch.tensor([tok.encode(context)]), max_new, temperature=0.0)
    new = ids[0, len(tok.encode(context)) :].tolist()
    if tok.eot_id in new:
        new = new[: new.index(tok.eot_id)]
    text = tok.decode(new)
    for stop in until:
        text = text.split(stop)[0]
    return text


def test_generate_until_equals_model_generate_cut_at_the_stop(lively):
    model, tok = lively
    lm = AttractorHarnessLM(model=model, tokenizer=tok, device="cpu")
    context = tok.decode(list(range(40, 52)))
    free = expected_generation(model, tok, context, [], 20)
    assert len(set(free)) >= 4, f"the greedy text {free!r} is too repetitive to test stops"
    stop = free[6:8]
    assert free.index(stop) > 0
    args = [
        (context, {"until": [stop], "max_gen_toks": 20}),
        (context, {"until": ["never appears"], "max_gen_toks": 20}),
        (context, {"until": stop, "max_gen_toks": 3}),
    ]
    outputs = lm.generate_until(requests("generate_until", args))
    assert outputs[0] == expected_generation(model, tok, context, [stop], 20)
    assert outputs[0] == free[: free.index(stop)]
    assert outputs[1] == free
    assert outputs[2] == free[:3]


TASK = """\
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
DOCS = [
    {"question": "1 + 1 =", "choices": [" 2", " 3", " 11"], "answer": 0},
    {"question": "The sky is", "choices": [" blue", " green"], "answer": 0},
    {"question": "Cats say", "choices": [" woof", " meow"], "answer": 1},
    {"question": "A fixed point satisfies", "choices": [" y = f(y)", " y = 0"], "answer": 0},
]


@pytest.fixture
def task_dir(tmp_path):
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tiny_choice.yaml").write_text(TASK.format(data=data, cache=tmp_path / "cache"))
    return tmp_path


def test_a_local_task_runs_through_lm_eval(lm, task_dir):
    """lm-eval's own task machinery, offline: a multiple-choice task from a local JSONL."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["tiny_choice"],
        task_manager=manager,
        bootstrap_iters=0,
        log_samples=False,
    )
    acc = out["results"]["tiny_choice"]["acc,none"]
    # the same accuracy from the adapter's own log-likelihoods: argmax over the choices
    correct = 0
    for doc in DOCS:
        pairs = [(doc["question"] + " ", c.lstrip()) for c in doc["choices"]]
        scores = [s for s, _ in lm.loglikelihood(requests("loglikelihood", pairs))]
        correct += max(range(len(scores)), key=scores.__getitem__) == doc["answer"]
    assert acc == pytest.approx(correct / len(DOCS))


@pytest.mark.slow
def test_lm_eval_command_line_finds_the_model(checkpoint, task_dir):
    """`python -m attractor.eval.harness` is lm-eval's CLI with the "attractor" model
    registered."""
    cmd = [
        sys.executable,
        "-m",
        "attractor.eval.harness",
        "--model",
        "attractor",
        "--model_args",
        f"pretrained={checkpoint}",
        "--device",
        "cpu",
        "--tasks",
        "tiny_choice",
        "--include_path",
        str(task_dir),
        "--batch_size",
        "4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tiny_choice" in done.stdout and "acc" in done.stdout
