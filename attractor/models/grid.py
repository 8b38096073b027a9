"""What every grid-puzzle model shares (docs/method.md section 2.4).

A grid model reads a flattened puzzle of L cells (token ids, `attractor.data.puzzles`) and
predicts every cell at once. Its input x is the embedded grid behind a prefix of P
positions; the halting logit is read at prefix position 0. Every attention layer rotates
queries and keys by their sequence position (rotary); on top of that, positions are a
learned 1-D table over the cells (ours: "1d"), 2-D structural embeddings (row + column,
+ box for Sudoku: "2d"), or nothing ("none": rotary only, as the paper's puzzle code):

    x_i = s * (E[t_i] + pos_i),   pos_i = R[row_i] + C[col_i] + X[box_i]   (2-D)

with s = sqrt(C) and every table initialised N(0, 1 / C) (TRM's embedding scale), so
positions start as loud as tokens: a grid's structure is most of what a solver needs.
The prefix is P learned vectors ("learned", ours), or TRM's puzzle-embedding prefix
("puzzle", the paper's code): slot 0 the puzzle embedding, initialised at zero and
trained by sign descent (optimizer group "signsgd"), slots 1..P-1 zero. The paper's data
builders give every Sudoku and Maze puzzle the same identifier, 0, so that embedding is
one learned vector shared by all puzzles (`PuzzleEmbedding`).

Recurrent models (the reasoner, TRM) carry a latent state from one supervision step to
the next (`initial_carry`, `GridOutput.carry`); the others predict from scratch each time.
The loss is TRM's stable-max cross-entropy (Jolicoeur-Martineau 2025, arXiv 2510.04871, after
Prieto et al. 2025): s(v) = v + 1 for v >= 0 and 1 / (1 - v) below, p_i = s(v_i) / sum_j s(v_j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attractor.engine import SolverStats
from attractor.models.base import Model
from attractor.models.language_model import IGNORE_INDEX
from attractor.nn import (
    Block,
    RMSNorm,
    TransformerShape,
    block_stack,
    init_weights,
    set_optim_group,
)


@dataclass
class GridConfig(TransformerShape):
    """Fields every grid model has. A Sudoku of box_rows x box_cols boxes has side
    box_rows * box_cols; a maze sets box_rows = box_cols = 0 and gives `side`. The sequence
    is the prefix and the cells: max_seq_len = n_prefix + side^2, derived."""

    vocab_size: int = 11  # 0 pad, 1 blank, 2..10 digits (9 x 9 Sudoku)
    dim: int = 512
    n_heads: int = 8
    mlp_ratio: float = 4.0  # SwiGLU's hidden width is 2/3 of this x dim (same parameters)
    mlp: Literal["relu2", "swiglu"] = "swiglu"
    max_seq_len: int = field(init=False, default=0)
    side: int = 9  # grid side N: L = N * N cells
    box_rows: int = 3  # 0 for grids without boxes (mazes)
    box_cols: int = 3
    positions: Literal["1d", "2d", "none"] = (
        "1d"  # 1d: a learned table over the cells | 2d: row + col (+ box) | none: rotary only
    )
    n_prefix: int = 1  # prefix positions; the halting logit reads position 0
    prefix: Literal["learned", "puzzle"] = "learned"  # module docstring
    readout_norm: bool = True  # RMSNorm before the cell projection (False: logits = W y)
    init: Literal["gpt", "lecun"] = "gpt"  # `GridModel._init`
    n_sup: int = 16  # supervision steps (recurrent models), all of them at evaluation
    halt_explore: float = 0.1  # chance a training sample must run a random minimum of steps

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.box_rows and self.box_rows * self.box_cols != self.side:
            raise ValueError(
                f"grid: boxes of {self.box_rows} x {self.box_cols} do not tile a side of "
                f"{self.side}; set side = box_rows * box_cols (or box_rows = 0 for mazes)"
            )
        if self.n_prefix < 1 or self.n_sup < 1:
            raise ValueError(
                f"grid: n_prefix and n_sup must be at least 1, got {self.n_prefix} and {self.n_sup}"
            )
        self.max_seq_len = self.n_prefix + self.cells

    @property
    def cells(self) -> int:
        """L = side^2 cells of a grid."""
        return self.side * self.side

    def mlp_hidden(self) -> int:
        """MLP width: mlp_ratio x dim, times 2/3 for SwiGLU (TRM / LLaMA convention)."""
        return int(round(self.mlp_ratio * self.dim * (2 / 3 if self.mlp == "swiglu" else 1.0)))


@dataclass
class GridOutput:
    """logits (B, L, V) over the cells; halt_logits (B,); carry: the detached state the next
    supervision step starts from (None for models without one); solver: fixed-point stats;
    depth: the solver iterations or cycles this step ran (None for a one-pass model)."""

    logits: Tensor
    halt_logits: Tensor
    carry: Tensor | None = None
    solver: SolverStats | None = None
    depth: int | None = None


def stablemax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over labelled cells of -log p_label, p = s(v) / sum s(v) (module docstring);
    computed in float64 as TRM does, labels == -100 ignored."""
    v = logits.double()
    s = torch.where(v >= 0, v + 1.0, 1.0 / (1.0 - v))
    logp = s.log() - s.sum(dim=-1, keepdim=True).log()
    mask = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum().float() / mask.sum().clamp_min(1)


# The standard deviation of N(0, 1) truncated to [-2, 2]: 1 - 4 phi(2) / (2 Phi(2) - 1).
_TRUNCATED_STD = math.sqrt(
    1.0 - 4.0 * math.exp(-2.0) / math.sqrt(2 * math.pi) / math.erf(2.0 / math.sqrt(2.0))
)


def trunc_normal_(t: Tensor, std: float) -> Tensor:
    """Fill t from N(0, s^2) truncated to [-2 s, 2 s], with s = std / 0.8796 so that the
    result's standard deviation is `std` (TRM's trunc_normal_init_, JAX's truncated normal)."""
    s = std / _TRUNCATED_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(t, 0.0, s, -2.0 * s, 2.0 * s)


def grid_blocks(c: GridConfig, n: int, block: type[Block] = Block) -> nn.ModuleList:
    """n bidirectional blocks shaped by a grid config."""
    return block_stack(c, n, causal=False, block=block)


def structure(c: GridConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Row, column and box index of each cell, each (L,) long; box is 0 without boxes."""
    cell = torch.arange(c.cells)
    row, col = cell // c.side, cell % c.side
    if not c.box_rows:
        return row, col, torch.zeros_like(cell)
    return row, col, (row // c.box_rows) * (c.side // c.box_cols) + col // c.box_cols


class PuzzleEmbedding(nn.Module):
    """TRM's puzzle embedding for identifier 0, the one every Sudoku and Maze puzzle has in
    the paper's data: a (C,) vector, initialised at zero, trained by sign descent."""

    optim_group = "signsgd"

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))


class GridEmbedding(nn.Module):
    """x = s * [prefix; E[tokens] + pos] of shape (B, P + L, C) (module docstring)."""

    def __init__(self, c: GridConfig):
        super().__init__()
        self.config = c
        self.scale = math.sqrt(c.dim)
        self.tokens = nn.Embedding(c.vocab_size, c.dim)
        if c.prefix == "learned":
            self.prefix = nn.Parameter(torch.zeros(c.n_prefix, c.dim))
        else:
            self.puzzle = PuzzleEmbedding(c.dim)
        if c.positions == "1d":
            self.pos = nn.Embedding(c.cells, c.dim)
        elif c.positions == "2d":
            self.rows, self.cols = nn.Embedding(c.side, c.dim), nn.Embedding(c.side, c.dim)
            self.boxes = nn.Embedding(c.side, c.dim) if c.box_rows else None
            names = ("row_index", "col_index", "box_index")
            for name, index in zip(names, structure(c), strict=True):
                self.register_buffer(name, index, persistent=False)

    def positions(self) -> Tensor | None:
        """pos (L, C), or None with rotary positions only."""
        if self.config.positions == "none":
            return None
        if self.config.positions == "1d":
            return self.pos.weight
        pos = self.rows(self.row_index) + self.cols(self.col_index)
        return pos if self.boxes is None else pos + self.boxes(self.box_index)

    def prefix_rows(self) -> Tensor:
        """The prefix (P, C): learned, or [puzzle embedding; 0; ...; 0]."""
        if self.config.prefix == "learned":
            return self.prefix
        zeros = self.puzzle.weight.new_zeros(self.config.n_prefix - 1, self.config.dim)
        return torch.cat((self.puzzle.weight[None], zeros))

    def forward(self, inputs: Tensor) -> Tensor:
        """Token ids (B, L) -> x (B, P + L, C)."""
        B, L = inputs.shape
        if self.config.cells != L:
            raise ValueError(
                f"grid model: expected {self.config.cells} cells ({self.config.side} x "
                f"{self.config.side}), got {L}; use a model built for this puzzle size"
            )
        x = self.tokens(inputs)  # (B, L, C)
        pos = self.positions()
        if pos is not None:
            x = x + pos
        prefix = self.prefix_rows().to(x.dtype).expand(B, -1, -1)  # (B, P, C)
        return self.scale * torch.cat((prefix, x), dim=1)

    def reset_parameters(self, truncated: bool = False) -> None:
        """Every table (and a learned prefix) ~ N(0, 1 / C), or its truncated form
        (`trunc_normal_`, TRM's); the puzzle embedding at zero."""
        std = 1.0 / self.scale
        for name, p in self.named_parameters():
            if name.startswith("puzzle."):
                nn.init.zeros_(p)
            elif truncated:
                trunc_normal_(p, std)
            else:
                nn.init.normal_(p, 0.0, std)


class GridReadout(nn.Module):
    """Cell logits W RMSNorm(y_cells) (B, L, V) (W y_cells without `readout_norm`) and the
    halting logit w . y_0 (B,)."""

    def __init__(self, c: GridConfig):
        super().__init__()
        self.n_prefix, self.n_cells = c.n_prefix, c.cells
        self.norm = RMSNorm(c.dim, c.norm_eps) if c.readout_norm else nn.Identity()
        # the cell projection is an output projection: AdamW, not Muon
        self.out = set_optim_group(nn.Linear(c.dim, c.vocab_size, bias=False), "adamw")
        self.halt = nn.Linear(c.dim, 1)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y (B, P + L, C) -> cell logits (B, L, V) and halting logits (B,)."""
        logits = self.out(self.norm(y[:, self.n_prefix :]))
        return logits, self.halt(y[:, 0]).squeeze(-1).float()

    def flops(self) -> float:
        """Forward FLOPs of one grid: the cell projection on every cell, the halting dot."""
        cells = self.out.in_features * self.out.out_features * self.n_cells
        return 2.0 * (cells + self.halt.in_features)


class GridModel(Model):
    """Base class of the grid-puzzle models: embed, a model-specific middle, read out.

    Subclasses implement `forward(inputs, carry=None, depth=None) -> GridOutput`; recurrent
    ones set `recurrent = True` and implement `initial_carry`. Attention is bidirectional,
    so every position attends over the whole sequence of S = n_prefix + cells.
    """

    recurrent: bool = False
    config: GridConfig

    def block_flops(self, attention: bool = True) -> float:
        """Forward FLOPs of one block over one whole grid (all S positions)."""
        c = self.config
        return c.max_seq_len * c.block_flops(c.max_seq_len if attention else 0.0)

    def initial_carry(self, batch_size: int) -> Tensor | None:
        """The state of supervision step 0, (B, ...) with the batch first; None if stateless."""
        return None

    def _init(self, n_layers: int) -> None:
        """GPT-style initialisation ("gpt": N(0, init_std^2), output projections scaled by
        1 / sqrt(2 n_layers)) or LeCun's ("lecun", TRM's CastedLinear: every Linear weight
        truncated normal with std 1 / sqrt(fan_in)); then the embedding tables, and a
        halting head biased to keep going (TRM: weight 0, bias -5)."""
        c = self.config
        init_weights(self, c.init_std, c.init_std / math.sqrt(2 * max(n_layers, 1)))
        if c.init == "lecun":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, 1.0 / math.sqrt(m.in_features))
        self.embed.reset_parameters(truncated=c.init == "lecun")
        nn.init.zeros_(self.readout.halt.weight)
        nn.init.constant_(self.readout.halt.bias, -5.0)


def halting_targets(logits: Tensor, labels: Tensor) -> Tensor:
    """1.0 where every labelled cell of the grid is predicted right, else 0.0: (B,)."""
    right = (logits.argmax(dim=-1) == labels) | (labels == IGNORE_INDEX)
    return right.all(dim=-1).float()


def halting_loss(out: GridOutput, labels: Tensor) -> Tensor:
    """BCE of the halting logit against "the whole grid is right" (TRM's Q-halt loss)."""
    target = halting_targets(out.logits.detach(), labels)
    return F.binary_cross_entropy_with_logits(out.halt_logits, target)
