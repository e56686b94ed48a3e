"""torch.autograd.gradcheck in float64 through each module (inputs, states and parameters)."""
import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn

CONFIGS = [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=2, batch_first=True)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(nonlinearity="tanh", bias=False)),
    ("RNN", dict(nonlinearity="relu", num_layers=2)),
]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("cell,kw", CONFIGS, ids=[f"{c}-{sorted(k)}" for c, k in CONFIGS])
def test_gradcheck_module(cell, kw, packed):
    m = getattr(fused_rnn, cell)(3, 4, backend="reference", dtype=torch.float64, **kw)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    B, T = 3, 4
    batch_first = kw.get("batch_first", False)
    x = torch.randn((B, T, 3) if batch_first else (T, B, 3), dtype=torch.float64,
                    requires_grad=True)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    h0 = torch.randn(L * D, B, kw.get("proj_size") or 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(L * D, B, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])

    def f(x, h0, c0, *ps):
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False) \
            if packed else x
        hx = (h0, c0) if cell == "LSTM" else h0
        out, state = functional_call(m, dict(zip(names, ps)), (inp, hx))
        states = state if cell == "LSTM" else (state,)
        return (out.data if packed else out,) + tuple(states)

    # fast_mode: the analytical and numerical Jacobians compared along random directions (v^T J
    # u, as torch's own OpInfo tests do for slow ops) instead of element by element, which took
    # 2 forward passes per input element: 300 s for this test on a loaded 2-core machine. A
    # wrong gradient entry changes v^T J u for almost every random u, v. The cells below keep
    # the full check.
    assert gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-8, fast_mode=True)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell"])
def test_gradcheck_cell(cell):
    m = getattr(fused_rnn, cell)(3, 4, backend="reference", dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, h, c, *ps):
        hx = (h, c) if cell == "LSTMCell" else h
        return functional_call(m, dict(zip(names, ps)), (x, hx))

    assert gradcheck(f, (x, h, c, *params), eps=1e-6, atol=1e-8)
