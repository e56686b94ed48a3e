"""Pointwise cell math, shared by every cell type and backend that runs in plain torch.

Each function takes the input part of the gates `gi` (x·W_ihᵀ + b_ih, hoisted out of the time
loop) and the recurrent part `gh` (h·W_hhᵀ + b_hh), both (B, G·H) in torch's gate order, and
returns the new state. The formulas follow ATen's CPU cells operation for operation, so float32
rounding matches nn.LSTM's closely.
"""
import torch

# Gates per cell type: G in (T, B, G·H).
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def lstm_cell(gi, gh, c):
    """LSTM, gates i, f, g, o. Returns (h, c), each (B, H)."""
    i, f, g, o = (gh + gi).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(gi, gh, h):
    """GRU, gates r, z, n with b_hn inside r·(…): n = tanh(gi_n + r·(h·W_hnᵀ + b_hn))."""
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def rnn_cell(gi, gh, nonlinearity: str):
    """Elman RNN: act(gi + gh), act tanh or relu."""
    pre = gh + gi
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def step(mode: str, gi, gh, h, c):
    """One step of any cell type. Returns (h, c); c is None except for LSTM."""
    if mode == "LSTM":
        return lstm_cell(gi, gh, c)
    if mode == "GRU":
        return gru_cell(gi, gh, h), None
    return rnn_cell(gi, gh, "tanh" if mode == "RNN_TANH" else "relu"), None
