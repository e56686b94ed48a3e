"""Pointwise cell math, shared by every cell type and backend that runs in plain torch.

Each function takes the input part of the gates `gi` (x·W_ihᵀ + b_ih, hoisted out of the time
loop) and the recurrent part `gh` (h·W_hhᵀ + b_hh), both (B, G·H) in torch's gate order, and
returns the new state. The formulas follow ATen's CPU cells operation for operation, so float32
rounding matches nn.LSTM's closely.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

# The cell constants, one home for every backend. The CUDA kernels mirror them (csrc/params.h:
# the Cell enum and CellSizes); tests/test_layout.py checks that the two agree.
# CELLS: torch's mode names. CELL_CODES: the kernels' CELL constant (Triton constexpr, CUDA enum).
CELLS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
CELL_CODES = {name: code for code, name in enumerate(CELLS)}
# Gates per cell type: G in (T, B, G·H), rows of W_hh per hidden unit.
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
# Values the fused forwards save per hidden unit and step for their backward (ops/recurrence.py).
SAVED = {"LSTM": 4, "GRU": 4, "RNN_TANH": 1, "RNN_RELU": 1}


def _mul(x, factor):
    """x·factor, skipped where the factor is the constant 1 (no mask)."""
    return x if isinstance(factor, float) and factor == 1.0 else x * factor


def zone(prev, new, w):
    """Zoneout: w·prev + (1 - w)·new, with w the keep-previous mask or constant (0: off)."""
    if isinstance(w, float) and w == 0.0:
        return new
    return w * prev + (1 - w) * new


def lstm_cell(gi, gh, c, gm=1.0, cm=1.0, wc=0.0, c_norm=None):
    """LSTM, gates i, f, g, o. Returns (h, c), each (B, H). gm, cm, wc: recurrent dropout of g,
    rnndrop of the cell update, zoneout of the cell (ops/regularize.py); h uses the update
    before zoneout. c_norm: LayerNorm of the cell inside h = o·tanh(LN(c)) (layer_norm)."""
    i, f, g, o = (gh + gi).chunk(4, -1)
    cu = _mul(torch.sigmoid(f) * c + torch.sigmoid(i) * _mul(torch.tanh(g), gm), cm)
    return torch.sigmoid(o) * torch.tanh(cu if c_norm is None else c_norm(cu)), zone(c, cu, wc)


def gru_cell(gi, gh, h, gm=1.0):
    """GRU, gates r, z, n with b_hn inside r·(…): n = tanh(gi_n + r·(h·W_hnᵀ + b_hn)); gm is
    the recurrent dropout of n."""
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = _mul(torch.tanh(i_n + r * h_n), gm)
    return n + z * (h - n)


def rnn_cell(gi, gh, nonlinearity: str):
    """Elman RNN: act(gi + gh), act tanh or relu."""
    pre = gh + gi
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def step(mode: str, gi, gh, h, c, gm=1.0, cm=1.0, wc=0.0, c_norm=None):
    """One step of any cell type, before zoneout of h. Returns (h, c); c is None except for
    LSTM. gm, cm, wc, c_norm as lstm_cell (gm: GRU too)."""
    if mode == "LSTM":
        return lstm_cell(gi, gh, c, gm, cm, wc, c_norm)
    if mode == "GRU":
        return gru_cell(gi, gh, h, gm), None
    return rnn_cell(gi, gh, "tanh" if mode == "RNN_TANH" else "relu"), None


# LayerNorm cells (Ba et al. 2016): torch's default epsilon.
LN_EPS = 1e-5


def input_gates(x, w_ih, b_ih, ln=None):
    """x·W_ihᵀ + b_ih, or LN(x·W_ihᵀ)·γ + β + b_ih with ln = LayerNormWeights (over all G·H)."""
    if ln is None:
        return F.linear(x, w_ih, b_ih)
    gi = F.layer_norm(F.linear(x, w_ih), (w_ih.shape[0],), ln.ih_weight, ln.ih_bias, LN_EPS)
    return gi if b_ih is None else gi + b_ih


def recurrent_gates(h, w_hh, b_hh, ln=None):
    """h·W_hhᵀ + b_hh, or LN(h·W_hhᵀ)·γ + β + b_hh with ln = LayerNormWeights."""
    if ln is None:
        return F.linear(h, w_hh, b_hh)
    gh = F.layer_norm(F.linear(h, w_hh), (w_hh.shape[0],), ln.hh_weight, ln.hh_bias, LN_EPS)
    return gh if b_hh is None else gh + b_hh


def cell_norm(ln):
    """The LayerNorm of an LSTM's cell inside h = o·tanh(LN(c)), or None."""
    if ln is None or ln.c_weight is None:
        return None
    return lambda c: F.layer_norm(c, (c.shape[-1],), ln.c_weight, ln.c_bias, LN_EPS)


class LayerNormWeights(NamedTuple):
    """LayerNorm gains and biases of one layer and direction (c_*: LSTM only, else None)."""
    ih_weight: torch.Tensor
    ih_bias: torch.Tensor
    hh_weight: torch.Tensor
    hh_bias: torch.Tensor
    c_weight: Optional[torch.Tensor] = None
    c_bias: Optional[torch.Tensor] = None
