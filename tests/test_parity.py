"""Reference backend against torch's own LSTM/GRU/RNN on the CPU (fused_rnn.testing's rule):
float64 max abs error <= 1e-10; float32, against float64, RMS error <= 2x torch's own + atol
and max error <= 4x torch's own + atol (atol 1e-6 x max(1, RMS of the truth)), for the output,
h_n, c_n and every gradient. And the rule itself: it rejects wrong kernels and a precision
loss (an LSTM whose cell state is rounded to float16 at every step)."""
import copy
import dataclasses

import pytest
import torch
import torch.nn as nn

import fused_rnn
from fused_rnn import _alloc, backends, functional, testing
from fused_rnn.testing import Case

GRID = testing.random_cases(120, seed=2026)


def assert_close_exact(a, b, tol=1e-10):
    """Max abs difference of two float64 tensors (or tuples of them) at most tol."""
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close_exact(x, y, tol)
        return
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.numel():
        assert (a - b).abs().max().item() <= tol


def test_grid_covers_the_options():
    seen = lambda f: {f(c) for c in GRID}  # noqa: E731
    assert seen(lambda c: c.cell) == set(testing.CELLS)
    assert seen(lambda c: c.num_layers) == {1, 2, 3}
    assert seen(lambda c: c.packed) == {"", "sorted", "unsorted"}
    for flag in ("bidirectional", "batch_first", "bias", "unbatched", "with_hx"):
        assert seen(lambda c: getattr(c, flag)) == {True, False}, flag
    assert any(c.proj_size for c in GRID) and any(c.dropout for c in GRID)
    assert any(c.T == 1 for c in GRID) and any(c.B == 1 and not c.unbatched for c in GRID)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", GRID, ids=[c.label() for c in GRID])
def test_reference_matches_torch(case, dtype):
    res = testing.check(case, "reference", dtype)
    assert res.ok, res.failures()


@pytest.mark.parametrize("case", GRID[:8], ids=[c.label() for c in GRID[:8]])
def test_cudnn_backend_is_torch_itself(case):
    res = testing.check(case, "cudnn", torch.float64)
    assert max(res.errors.values()) == 0.0


def _layer_without_b_hh(mode, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse):
    # A kernel that forgets the recurrent bias: the harness must catch it.
    return functional.layer_naive(mode, gi, h0, c0, w_hh, None, w_hr, mask, reverse)


def test_harness_catches_a_wrong_kernel(monkeypatch):
    case = Case("GRU", T=4, B=3, I=5, H=6, seed=11)
    assert testing.check(case, "reference").ok
    monkeypatch.setitem(functional._LAYER_FNS, "reference", _layer_without_b_hh)
    res = testing.check(case, "reference")
    assert not res.ok and res.failures()


def test_harness_catches_an_unwritten_element(monkeypatch):
    def leaves_one_step(*args, **kw):
        out, h, c = functional.layer_naive(*args, **kw)
        out = out.clone()
        out[-1, -1, -1] = float("nan")  # what a poisoned, never-written element looks like
        return out, h, c

    monkeypatch.setitem(functional._LAYER_FNS, "reference", leaves_one_step)
    res = testing.check(Case("LSTM", T=3, B=2, I=4, H=5, seed=1), "reference")
    assert not res.ok and any("output" in f for f in res.failures())


class _StepLSTM(nn.Module):
    """A one-layer LSTM written step by step, with nn.LSTM's parameter names (so
    testing.run differentiates the same parameters), whose cell state can be rounded to
    float16 after every step: a deliberate loss of precision, not a wrong formula."""

    def __init__(self, ref: nn.LSTM, round_c: bool):
        super().__init__()
        for name, p in ref.named_parameters():
            self.register_parameter(name, nn.Parameter(p.detach().clone()))
        self.round_c = round_c

    def forward(self, x, hx):
        h, c = hx[0][0], hx[1][0]
        outs = []
        for x_t in x:
            gates = (nn.functional.linear(x_t, self.weight_ih_l0, self.bias_ih_l0)
                     + nn.functional.linear(h, self.weight_hh_l0, self.bias_hh_l0))
            i, f, g, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if self.round_c:
                c = c.half().to(x.dtype)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), (h[None], c[None])


def test_rule_rejects_a_cell_state_rounded_to_half():
    case = Case("LSTM", T=9, B=4, I=6, H=8, seed=3)
    rounded = testing.torch_module(case).float().double()
    truth = testing.run(rounded, case, torch.float64)
    theirs = testing.run(rounded, case, torch.float32)
    exact = testing.run(_StepLSTM(rounded, round_c=False), case, torch.float32)
    lossy = testing.run(_StepLSTM(rounded, round_c=True), case, torch.float32)
    assert testing.compare(exact, truth, theirs, torch.float32).ok  # the loop itself is fine
    res = testing.compare(lossy, truth, theirs, torch.float32)
    assert not res.ok
    failed = {f.split(":")[0] for f in res.failures() if ": err (rms)" in f}
    assert {"output", "h_n", "c_n"} <= failed, res.failures()


def test_rule_names_the_statistic_that_fails():
    s = torch.ones(1000, dtype=torch.float64)
    s[::2] = -1
    truth = {"t": 0.5 * s}
    theirs = {"t": 0.5 * s + 1e-5 * s}  # RMS and max error 1e-5: bounds 2.1e-5 and 4.1e-5
    worse = testing.compare({"t": 0.5 * s + 3e-5 * s}, truth, theirs, torch.float32)
    assert not worse.ok and worse.failures()[0].startswith("t: err (rms) 3e-05 > bound 2.1e-05")
    assert worse.max_ratio("t") < 1 and len(worse.failures()) == 1
    spike = theirs["t"].clone()
    spike[7] = 0.5 * s[7] + 1e-4  # one outlier: RMS error 1.05e-5
    outlier = testing.compare({"t": spike}, truth, theirs, torch.float32)
    assert not outlier.ok and outlier.failures()[0].startswith("t: err (max) 0.0001 > bound")
    assert outlier.rms_ratio("t") < 1 and len(outlier.failures()) == 1
    assert outlier.worst()[1:] == ("t", "max") and outlier.worst_ratio == outlier.max_ratio("t")
    assert testing.compare(theirs, truth, theirs, torch.float32).ok


def test_atol_scales_with_the_truth():
    """The same absolute error passes on a tensor of RMS 100 (atol 1e-4) and fails on one of
    RMS 1 (atol 1e-6); float64's atol does not scale."""
    for scale, ok in ((100.0, True), (1.0, False)):
        truth = {"t": torch.full((10,), scale, dtype=torch.float64)}
        res = testing.compare({"t": truth["t"] + 5e-5}, truth, truth, torch.float32)
        assert res.ok is ok and res.atol("t") == pytest.approx(1e-6 * scale)
    assert testing.atol(torch.float64, 100.0) == 1e-10


def test_buffers_are_poisoned_under_test():
    assert _alloc.poisoning()
    assert torch.isnan(_alloc.empty((3, 2), like=torch.zeros(1))).all()
    with _alloc.poisoned(False):
        assert not _alloc.poisoning()
    assert _alloc.poisoning()


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_dropout_between_layers_matches_torch_and_is_off_in_eval(cell):
    case = Case(cell, T=6, B=3, I=4, H=5, num_layers=3, bidirectional=True, dropout=0.5,
                seed=5)
    assert max(testing.check(case, "reference").errors.values()) <= 1e-10  # training, same RNG
    ref = testing.torch_module(case)
    ours = fused_rnn.convert(testing.torch_module(case), backend="reference")
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    ref.eval(), ours.eval()
    assert_close_exact(ours(x)[0], ref(x)[0])
    ours.train()
    assert (ours(x)[0] - ref(x)[0]).abs().max() > 1e-3  # dropout is active in training


def _run_cell(module, x64, hx64, cell, with_hx, dtype):
    """Outputs and all gradients of one cell step in dtype, as float64."""
    module = copy.deepcopy(module).to(dtype)
    x = x64.to(dtype).requires_grad_()
    hx = [h.to(dtype).requires_grad_() for h in hx64]
    arg = (tuple(hx) if cell == "LSTM" else hx[0]) if with_hx else None
    out = module(x, arg)
    outs = list(out) if cell == "LSTM" else [out]
    g = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum()
               for o in outs)
    wrt = [x] + (hx if with_hx else []) + list(module.parameters())
    return [t.detach().double() for t in outs + list(torch.autograd.grad(loss, wrt))]


@pytest.mark.parametrize("cell,base", [("LSTM", nn.LSTMCell), ("GRU", nn.GRUCell),
                                       ("RNN", nn.RNNCell)])
@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_cells_match_torch(cell, base, unbatched, with_hx, bias):
    kw = {"nonlinearity": "relu"} if cell == "RNN" else {}
    torch.manual_seed(7)
    ref = base(5, 6, bias=bias, dtype=torch.float64, **kw)
    ours = fused_rnn.convert(copy.deepcopy(ref), backend="reference")
    batch = () if unbatched else (4,)
    x64 = torch.randn(*batch, 5, dtype=torch.float64).float().double()
    hx64 = [torch.randn(*batch, 6, dtype=torch.float64).float().double()
            for _ in range(2 if cell == "LSTM" else 1)]
    with torch.no_grad():  # round the weights so every dtype sees the same values
        for p in list(ref.parameters()) + list(ours.parameters()):
            p.copy_(p.float().double())
    args = (x64, hx64, cell, with_hx)
    truth = _run_cell(ref, *args, torch.float64)
    assert_close_exact(_run_cell(ours, *args, torch.float64), truth)
    ours32, theirs32 = _run_cell(ours, *args, torch.float32), _run_cell(ref, *args, torch.float32)
    res = testing.compare(dict(enumerate(ours32)), dict(enumerate(truth)),
                          dict(enumerate(theirs32)), torch.float32)
    assert res.ok, res.failures()


@pytest.mark.parametrize("ctor,base", [(fused_rnn.LSTM, nn.LSTM), (fused_rnn.GRU, nn.GRU),
                                       (fused_rnn.RNN, nn.RNN)])
def test_empty_batch_gives_empty_results(ctor, base):
    kw = {"proj_size": 2} if ctor is fused_rnn.LSTM else {}
    ours = ctor(3, 4, num_layers=2, bidirectional=True, backend="reference", **kw).double()
    ref = base(3, 4, num_layers=2, bidirectional=True, **kw).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 0, 3, dtype=torch.float64, requires_grad=True)
    out, state = ours(x)
    ref_out, ref_state = ref(x)
    assert out.shape == ref_out.shape
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    ref_state if isinstance(ref_state, tuple) else (ref_state,)):
        assert a.shape == b.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_non_contiguous_input_and_state():
    ours = fused_rnn.LSTM(4, 5, 2, backend="reference").double()
    ref = nn.LSTM(4, 5, 2).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 7, 8, dtype=torch.float64)[:, ::2, ::2].transpose(0, 1)  # (4, 3, 4) view
    h0 = torch.randn(3, 2, 5, dtype=torch.float64).transpose(0, 1)[:, :3]
    c0 = torch.randn(2, 3, 5, dtype=torch.float64)[..., :5]
    assert not x.is_contiguous() and not h0.is_contiguous()
    assert_close_exact(ours(x, (h0, c0))[0], ref(x, (h0, c0))[0])
    assert_close_exact(ours(x, (h0, c0))[1], ref(x, (h0, c0))[1])


def test_case_label_names_the_options():
    c = dataclasses.replace(GRID[0], packed="unsorted", proj_size=0, bias=False)
    assert "packed-unsorted" in c.label() and "no-bias" in c.label()


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_cpu_autocast_leaves_the_computation_alone(cell, backend):
    """On the CPU our backends run in the input's dtype under autocast (torch's CPU autocast
    treats its RNNs unevenly; CUDA autocast is covered in tests/test_triton_gpu.py), and
    autocast does not recast their internal GEMMs (which once mixed bf16 and fp32)."""
    if backend == "triton" and not backends.triton_interpreted():
        pytest.skip("the triton backend runs on the CPU only under TRITON_INTERPRET=1")
    torch.manual_seed(0)
    m = getattr(fused_rnn, cell)(5, 8, num_layers=2, backend=backend)
    x = torch.randn(6, 3, 5)
    plain, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = m(x)
    assert got.dtype == torch.float32 and torch.equal(got, plain)


def test_check_refuses_dropout_off_the_cpu():
    case = Case("LSTM", T=2, B=2, I=3, H=4, num_layers=2, dropout=0.5)
    with pytest.raises(ValueError, match="dropout in training draws different masks"):
        testing.check(case, "reference", torch.float32, "cuda")
    assert not any(c.dropout for c in testing.random_cases(60, seed=1, with_dropout=False))
