"""Chunked cross-entropy against F.cross_entropy on materialised logits: the same loss and
gradients (1e-6 in float32), with ignored labels, a tied embedding, any chunking; and every
language model's loss path without logits against its plain one."""

import math

import pytest
import torch
import torch.nn.functional as F

from attractor.models.linear_loss import IGNORE_INDEX, linear_cross_entropy


def problem(n=3 * 37, c=16, v=50, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(v, c, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::5] = IGNORE_INDEX
    return h, w, labels


def plain(h, w, labels):
    return F.cross_entropy((h @ w.T).float(), labels, ignore_index=IGNORE_INDEX)


def close(loss, ref) -> bool:
    """Losses within 1e-6, relative to the loss (float32 holds about 7 digits)."""
    loss, ref = float(loss.detach()), float(ref.detach())
    return abs(loss - ref) <= 1e-6 * max(1.0, abs(ref))


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk", [None, 1, 7, 64, 10_000])
def test_same_loss_and_gradients_as_materialised_logits(chunk):
    h, w, labels = problem()
    ref = plain(h, w, labels)
    ref_h, ref_w = grads(ref, h, w)
    loss = linear_cross_entropy(h, w, labels, chunk_size=chunk)
    got_h, got_w = grads(loss, h, w)
    assert close(loss, ref)
    assert float((got_h - ref_h).abs().max()) <= 1e-6
    assert float((got_w - ref_w).abs().max()) <= 1e-6


def test_float64_agrees_to_rounding():
    h, w, labels = problem(dtype=torch.float64, seed=1)
    ref = F.cross_entropy(h @ w.T, labels, ignore_index=IGNORE_INDEX)
    loss = linear_cross_entropy(h, w, labels, chunk_size=16)
    (ref_h, ref_w), (got_h, got_w) = grads(ref, h, w), grads(loss, h, w)
    assert abs(float(loss.detach()) - float(ref.detach())) < 1e-6  # the log-sum-exp runs in float32
    assert torch.allclose(got_h, ref_h, atol=1e-7) and torch.allclose(got_w, ref_w, atol=1e-7)


def test_tied_embedding_gets_both_gradients():
    # the same table embeds the inputs and decodes the outputs: its gradient is the sum
    g = torch.Generator().manual_seed(2)
    table = torch.randn(40, 8, generator=g).requires_grad_()
    mix = torch.randn(8, 8, generator=g).requires_grad_()
    ids = torch.randint(0, 40, (2, 9), generator=g)
    labels = torch.roll(ids, -1, 1)
    labels[:, -1] = IGNORE_INDEX

    def features():
        return torch.tanh(table[ids] @ mix)

    ref = F.cross_entropy(
        (features() @ table.T).flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
    )
    loss = linear_cross_entropy(features(), table, labels, chunk_size=5)
    for ref_g, got_g in zip(grads(ref, table, mix), grads(loss, table, mix), strict=True):
        assert float((got_g - ref_g).abs().max()) <= 1e-6
    assert close(loss, ref)


def test_only_requested_gradients_and_none_without_grad():
    h, w, labels = problem(seed=3)
    w.requires_grad_(False)
    (got_h,) = grads(linear_cross_entropy(h, w, labels), h)
    (ref_h,) = grads(plain(h, w, labels), h)
    assert float((got_h - ref_h).abs().max()) <= 1e-6
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, labels)
    assert not loss.requires_grad and close(loss, plain(h, w, labels))


def test_every_label_ignored_is_nan_like_the_plain_loss():
    h, w, labels = problem(seed=4)
    labels[:] = IGNORE_INDEX
    assert math.isnan(float(linear_cross_entropy(h, w, labels).detach()))
    assert math.isnan(float(plain(h, w, labels).detach()))


def test_bf16_autocast_follows_the_plain_path():
    h, w, labels = problem(n=256, c=64, v=300, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = plain(h, w, labels)
        loss = linear_cross_entropy(h, w, labels, chunk_size=32)
    (ref_h, ref_w), (got_h, got_w) = grads(ref, h, w), grads(loss, h, w)
    u = 2.0**-8  # both round the logits and their gradient to bf16
    loss, ref = float(loss.detach()), float(ref.detach())
    assert abs(loss - ref) <= 2 * u * ref
    for got, want in ((got_h, ref_h), (got_w, ref_w)):
        assert got.dtype == torch.float32
        assert float((got - want).norm() / want.norm()) <= 4 * u


def test_bad_shapes_are_one_clear_error():
    h, w, labels = problem()
    with pytest.raises(ValueError, match=r"^linear_cross_entropy: need h \(\.\.\., C\)"):
        linear_cross_entropy(h, w[:, :3], labels)
    with pytest.raises(ValueError, match="labels of h's leading shape"):
        linear_cross_entropy(h, w, labels[:-1])


MODELS = [  # gpt and looped decode with their tied embedding, the deq with its own head
    ("attractor", {}),
    ("attractor", {"tied_head": False}),
    ("gpt", {}),
    ("looped", {}),
    ("deq", {}),
]


@pytest.mark.parametrize(("kind", "fields"), MODELS)
def test_every_language_model_loss_without_logits(tiny_lm, kind, fields):
    model = tiny_lm(kind, **fields).train()
    ids = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(0))
    labels = torch.roll(ids, -1, 1)
    labels[:, -3:] = IGNORE_INDEX
    params = [p for p in model.parameters() if p.requires_grad]
    runs = []
    for return_logits in (True, False):
        torch.manual_seed(1)  # the looped model draws its training depth
        out = model(ids, labels=labels, return_logits=return_logits)
        runs.append((out, torch.autograd.grad(out.loss, params, allow_unused=True)))
    (full, full_grads), (chunked, chunked_grads) = runs
    assert full.logits is not None and chunked.logits is None
    assert close(chunked.loss, full.loss)
    for a, b in zip(full_grads, chunked_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert float((a - b).abs().max()) <= 1e-6
    with pytest.raises(ValueError, match="return_logits=False needs labels"):
        model(ids, return_logits=False)
