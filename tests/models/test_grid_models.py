"""Grid-puzzle models: the stable-max loss, 2-D positions, the reasoner's phantom gradient,
TRM's last-cycle gradient, bidirectionality, decoding at depth=0, presets and checkpoints.

Numbers are checked against references written out here: a loop over the loss formula,
Sudoku geometry from `attractor.data.sudoku`, and explicit unrolls of the recursions.
"""

import math

import pytest
import torch

from attractor.data.sudoku import SudokuShape
from attractor.engine import SolverConfig
from attractor.models import PRESETS, build_model
from attractor.models.grid import GridConfig, GridEmbedding, stablemax_cross_entropy, structure
from attractor.models.pretrained import load_pretrained

SIX = dict(side=6, box_rows=2, box_cols=3, vocab_size=8)  # 6 x 6 Sudoku: tokens 0..7
TINY = dict(dim=32, n_heads=2, **SIX)
GRID_CPU = ("reasoner-joint-cpu", "trm-cpu", "grid-transformer-cpu", "grid-attractor-cpu")


def tiny(preset: str, seed: int = 0, **fields):
    torch.manual_seed(seed)
    return build_model(preset, **{**TINY, **fields})


def puzzle_inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 8, (batch, 36), generator=g)


def param_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(got: dict, want: dict, rtol=1e-9, atol=1e-11) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=name)


# ----------------------------------------------------------------------------- the loss


def stablemax_reference(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """-log(s(v_label) / sum_j s(v_j)) averaged over labelled cells, one cell at a time."""

    def s(v: float) -> float:
        return v + 1.0 if v >= 0 else 1.0 / (1.0 - v)

    total, count = 0.0, 0
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    for row, label in zip(rows, labels.reshape(-1).tolist(), strict=True):
        if int(label) == -100:
            continue
        total -= math.log(s(row[int(label)]) / sum(s(v) for v in row))
        count += 1
    return total / count


def test_stablemax_cross_entropy_matches_the_formula_and_ignores_minus_100():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 5, 7, generator=g)
    logits[0, 0] = 0.0  # the s(v) = v + 1 branch at v = 0 exactly
    labels = torch.randint(0, 7, (3, 5), generator=g)
    labels[0, 1] = labels[2, 4] = -100
    got = stablemax_cross_entropy(logits, labels)
    assert got.item() == pytest.approx(stablemax_reference(logits, labels), rel=1e-6)
    # ignored cells do not matter, whatever their logits
    logits[0, 1] = logits[2, 4] = 100.0
    assert stablemax_cross_entropy(logits, labels).item() == pytest.approx(got.item(), rel=1e-6)


# ----------------------------------------------------------------------------- positions


def test_structure_matches_sudoku_rows_columns_and_boxes():
    shape = SudokuShape(2, 3)
    row, col, box = structure(GridConfig(**SIX, positions="2d"))
    units = shape.units  # n rows, then n columns, then n boxes (row-major)
    n = shape.n
    for cell in range(shape.cells):
        assert cell in units[int(row[cell])]
        assert cell in units[n + int(col[cell])]
        assert cell in units[2 * n + int(box[cell])]
        assert int(box[cell]) == shape.box_of(cell)


def test_2d_embedding_is_row_plus_column_plus_box():
    torch.manual_seed(0)
    c = GridConfig(**SIX, dim=16, n_heads=2, positions="2d", n_prefix=2)
    emb = GridEmbedding(c)
    shape = SudokuShape(2, 3)
    pos = emb.positions()
    R, C, X = emb.rows.weight, emb.cols.weight, emb.boxes.weight
    for cell in range(36):
        r, k = divmod(cell, 6)
        torch.testing.assert_close(pos[cell], R[r] + C[k] + X[shape.box_of(cell)])
    # cells 0 and 1 share row and box: they differ by their column vectors only;
    # cells 0 and 6 share column and box: they differ by their row vectors only
    torch.testing.assert_close(pos[1] - pos[0], C[1] - C[0])
    torch.testing.assert_close(pos[6] - pos[0], R[1] - R[0])
    # x = s * [prefix; E[t] + pos] with s = sqrt(C)
    with torch.no_grad():
        emb.prefix.normal_()
    tokens = puzzle_inputs()
    x = emb(tokens)
    assert x.shape == (2, 2 + 36, 16)
    torch.testing.assert_close(x[:, :2], 4.0 * emb.prefix.expand(2, -1, -1))
    torch.testing.assert_close(x[:, 2:], 4.0 * (emb.tokens.weight[tokens] + pos))


def test_maze_positions_have_no_box_table():
    c = GridConfig(vocab_size=6, side=5, box_rows=0, box_cols=0, dim=16, positions="2d")
    emb = GridEmbedding(c)
    assert emb.boxes is None
    assert not any("boxes" in name for name, _ in emb.named_parameters())
    pos = emb.positions()
    for cell in range(25):
        r, k = divmod(cell, 5)
        torch.testing.assert_close(pos[cell], emb.rows.weight[r] + emb.cols.weight[k])


# ----------------------------------------------------------------------------- reasoner

PICARD = SolverConfig("picard", tol=0.0, max_iter=50)


def reasoner(k: int = 2, **fields):
    """The reasoner-joint-cpu preset with Picard solves; its own backward (phantom) is kept."""
    solve = dict(train_solver=PICARD, eval_solver=PICARD, backward_steps=k, damping=1.0)
    model = tiny("reasoner-joint-cpu", fixed_point=solve, **fields)
    assert model.config.fixed_point.backward == "phantom"
    return model.double()


def G(model, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The joint update written out: z' = net(z, y + x), y' = net(y, z')."""
    y, z = state[:, 0], state[:, 1]
    z = model.net(z, y + x)
    y = model.net(y, z)
    return torch.stack((y, z), dim=1)


def probe_loss(logits: torch.Tensor, halt: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(logits.shape, generator=g, dtype=logits.dtype)
    return (logits * w).sum() + 0.3 * halt.sum()


def random_carry(model, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(batch, 2, model.config.max_seq_len, model.config.dim, generator=g).double()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_reasoner_phantom_gradient_is_autograd_through_k_steps_from_the_preimage(k):
    """depth=m with Picard: the solver's pre-image is G^(m-1)(carry); fixed_point records
    k applications of G from it. Values and parameter gradients must equal autograd
    through that explicit unroll (the first m - 1 steps without grad)."""
    m = 3
    model = reasoner(k).train()
    inputs = puzzle_inputs()
    carry = random_carry(model, 2)

    out = model(inputs, carry=carry, depth=m)
    assert out.depth == m
    probe_loss(out.logits, out.halt_logits).backward()
    got = param_grads(model)
    model.zero_grad(set_to_none=True)

    x = model.embed(inputs)
    with torch.no_grad():
        state = carry
        for _ in range(m - 1):
            state = G(model, state, x)
    for _ in range(k):
        state = G(model, state, x)
    logits, halt = model.readout(state[:, 0])
    probe_loss(logits, halt).backward()

    torch.testing.assert_close(out.logits, logits, rtol=1e-12, atol=1e-12)
    assert_same_grads(got, param_grads(model))
    assert got["embed.tokens.weight"].abs().sum() > 0  # x reaches the graph through G


@pytest.mark.parametrize("k", [1, 2, 3])
def test_reasoner_depth_m_without_grad_is_m_plus_k_minus_1_applications_of_G(k):
    """Without gradients the output is the value of the k phantom steps from the m-step
    solve's pre-image, G^(m+k-1)(carry), as with them."""
    model = reasoner(k).eval()
    inputs, carry = puzzle_inputs(), random_carry(model, 2)
    with torch.no_grad():
        out = model(inputs, carry=carry, depth=4)
        x = model.embed(inputs)
        state = carry
        for _ in range(4 + k - 1):
            state = G(model, state, x)
        logits, _ = model.readout(state[:, 0])
    torch.testing.assert_close(out.logits, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.carry, state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [None, 3])
def test_reasoner_training_and_evaluation_decode_and_carry_the_same_state(depth):
    """Issue 16: model.train() with gradients and model.eval() without them, same weights
    and inputs, give the same logits and carried state for one supervision step (the
    preset's own Anderson solve, or a fixed depth). Before, training decoded the phantom
    steps' G^(m+1) and evaluation the solver's G^m."""
    torch.manual_seed(0)
    model = build_model("reasoner-joint-cpu", **TINY).double()
    inputs, carry = puzzle_inputs(), random_carry(model, 2)
    trained = model.train()(inputs, carry=carry, depth=depth)
    assert trained.logits.requires_grad
    with torch.no_grad():
        evaluated = model.eval()(inputs, carry=carry, depth=depth)
    assert trained.solver.iters == evaluated.solver.iters
    torch.testing.assert_close(trained.logits.detach(), evaluated.logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(trained.halt_logits.detach(), evaluated.halt_logits,
                               rtol=0, atol=1e-12)  # fmt: skip
    torch.testing.assert_close(trained.carry, evaluated.carry, rtol=0, atol=1e-12)


@pytest.mark.parametrize("preset", ["reasoner-joint-cpu", "reasoner-cpu"])
def test_reasoner_depth_0_decodes_the_carried_state(preset):
    """Both schemes (ours, the paper's): depth 0 runs no solve and decodes y of the carry."""
    model = tiny(preset).double().eval()
    inputs, carry = puzzle_inputs(), random_carry(model, 2)
    with torch.no_grad():
        out = model(inputs, carry=carry, depth=0)
        logits, halt = model.readout(carry[:, 0])
    assert out.solver is None and out.depth == 0
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(out.halt_logits, halt, rtol=0, atol=0)
    torch.testing.assert_close(out.carry, carry, rtol=0, atol=0)


def test_reasoner_starts_from_its_fixed_initial_state():
    model = reasoner().eval()
    inputs = puzzle_inputs()
    init = model.initial_carry(2)
    assert init.shape == (2, 2, 37, 32)
    torch.testing.assert_close(init[1, 0, 5], model.y_init)
    torch.testing.assert_close(init[0, 1, 36], model.z_init)
    with torch.no_grad():
        torch.testing.assert_close(
            model(inputs, depth=2).logits, model(inputs, carry=init, depth=2).logits
        )


# ----------------------------------------------------------------------------- TRM


def trm_reference(model, inputs, carry, cycles: int, grad_cycles: int):
    """H cycles of (n x z <- net(z, y + x), y <- net(y, z)); the last `grad_cycles` with grad."""
    x = model.embed(inputs)
    y, z = carry[:, 0], carry[:, 1]
    for cycle in range(cycles):
        with torch.set_grad_enabled(cycle >= cycles - grad_cycles):
            for _ in range(model.config.inner):
                z = model.net(z, y + x)
            y = model.net(y, z)
    return model.readout(y)


def test_trm_gradient_flows_through_the_last_cycle_only():
    model = tiny("trm-cpu", cycles=3, inner=2).double().train()
    inputs, carry = puzzle_inputs(), random_carry(model, 2)
    out = model(inputs, carry=carry)
    probe_loss(out.logits, out.halt_logits).backward()
    got = param_grads(model)

    model.zero_grad(set_to_none=True)
    probe_loss(*trm_reference(model, inputs, carry, 3, grad_cycles=1)).backward()
    assert_same_grads(got, param_grads(model))

    model.zero_grad(set_to_none=True)  # full backpropagation would give other gradients
    probe_loss(*trm_reference(model, inputs, carry, 3, grad_cycles=3)).backward()
    full = param_grads(model)
    assert any(not torch.allclose(got[name], full[name]) for name in full)


@pytest.mark.parametrize("cycles", [1, 4])
def test_trm_depth_sets_the_number_of_cycles(cycles):
    model = tiny("trm-cpu", cycles=2, inner=2).double().eval()
    inputs, carry = puzzle_inputs(), random_carry(model, 2)
    with torch.no_grad():
        out = model(inputs, carry=carry, depth=cycles)
        logits, _ = trm_reference(model, inputs, carry, cycles, grad_cycles=0)
        default = model(inputs, carry=carry).logits
    torch.testing.assert_close(out.logits, logits, rtol=1e-12, atol=1e-12)
    assert out.depth == cycles
    assert not torch.allclose(out.logits, default)


def test_trm_depth_0_decodes_the_carried_state():
    model = tiny("trm-cpu").double().eval()
    inputs, carry = puzzle_inputs(), random_carry(model, 2)
    with torch.no_grad():
        out = model(inputs, carry=carry, depth=0)
        logits, _ = model.readout(carry[:, 0])
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    assert out.depth == 0


# ----------------------------------------------------------------------------- one-pass models


def test_grid_attractor_depth_0_decodes_the_backbone_proposal():
    model = tiny("grid-attractor-cpu").eval()
    inputs = puzzle_inputs()
    with torch.no_grad():
        out = model(inputs, depth=0)
        y0 = model.embed(inputs)
        for block in model.backbone:
            y0 = block(y0)
        logits, halt = model.readout(y0)
        solved = model(inputs)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(out.halt_logits, halt, rtol=0, atol=0)
    assert out.carry is None and out.depth == 0 and solved.solver is not None
    assert solved.depth == solved.solver.iters
    assert not torch.allclose(solved.logits, logits)  # the solve moves away from y0


def test_grid_attractor_head_is_not_causal():
    model = tiny("grid-attractor-cpu").double().eval()
    g = torch.Generator().manual_seed(0)
    y, y0 = torch.randn(2, 1, 37, 32, generator=g, dtype=torch.float64)
    moved = y.clone()
    moved[:, -1] += 1.0
    with torch.no_grad():
        a, b = model.head(y, y0), model.head(moved, y0)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("preset", GRID_CPU)
def test_the_first_cell_sees_the_last_cell(preset):
    model = tiny(preset).double().eval()
    inputs = puzzle_inputs(1)
    changed = inputs.clone()
    changed[0, -1] = 2 if inputs[0, -1] != 2 else 3
    with torch.no_grad():
        a, b = model(inputs).logits, model(changed).logits
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("preset", GRID_CPU)
def test_a_6x6_model_rejects_a_9x9_grid(preset):
    model = tiny(preset)
    with pytest.raises(ValueError, match=r"36 cells.*got 81"):
        model(torch.ones(1, 81, dtype=torch.long))


# ----------------------------------------------------------------------------- presets


def preset_params(name: str) -> int:
    with torch.device("meta"):
        return build_model(name).num_params()


def within(a: int, b: int, frac: float = 0.10) -> bool:
    return abs(a - b) <= frac * max(a, b)


def test_grid_presets_are_parameter_matched():
    counts = {n: preset_params(n) for n, (kind, _) in PRESETS.items() if n.endswith("-27m")}
    counts |= {n: preset_params(n) for n in (*GRID_CPU, "trm-7m", "reasoner-joint-7m")}
    for name in GRID_CPU:
        assert within(counts[name], counts["reasoner-joint-cpu"]), (name, counts)
    big = [n for n in counts if n.endswith("-27m")]
    assert {"reasoner-joint-27m", "trm-27m", "grid-transformer-27m", "grid-attractor-27m"} <= set(
        big
    )
    for name in big:
        assert within(counts[name], counts["reasoner-joint-27m"]), (name, counts)
    assert within(counts["trm-7m"], counts["reasoner-joint-7m"])


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("preset", ["reasoner-joint-cpu", "trm-cpu"])
def test_save_and_load_give_identical_logits(tmp_path, preset):
    model = tiny(preset).eval()
    model.save_pretrained(str(tmp_path))
    torch.manual_seed(123)  # a fresh draw for y_init / z_init unless the buffers are loaded
    loaded = load_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.y_init, model.y_init, rtol=0, atol=0)
    torch.testing.assert_close(loaded.z_init, model.z_init, rtol=0, atol=0)
    inputs = puzzle_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs).logits, model(inputs).logits, rtol=0, atol=0)
