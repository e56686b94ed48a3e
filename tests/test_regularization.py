"""Regularisation options (fused_rnn/ops/regularize.py): the reference's math against loops
written from the papers, the fused backends against the reference on the same masks (the
parity rule of fused_rnn.testing: 2x the reference's RMS error, 4x its max error), the
statistics of the masks, eval mode, and the argument checks."""
import copy
import math

import pytest
import torch
import torch.nn as nn

import fused_rnn
from fused_rnn import backends, testing
from fused_rnn.ops.cuda import extension
from fused_rnn.ops import regularize
from fused_rnn.ops.regularize import Regularization
from fused_rnn.testing import Case

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
R = Regularization


def _fused_backends():
    names = []
    if DEVICE == "cuda" or backends.triton_interpreted():
        names.append("triton")
    names.append("cuda")  # emulated on the CPU (fixture below)
    return names


@pytest.fixture(autouse=True)
def _emulate_cuda_without_gpu(monkeypatch, request):
    if "cuda" not in request.node.name:
        return
    if DEVICE == "cpu":
        monkeypatch.setenv("FUSED_RNN_CUDA_EMULATE", "1")
    elif extension.why_not_buildable() is not None:
        pytest.skip(f"CUDA extension: {extension.why_not_buildable()}")


# One case per option and cell type, then mixtures with the other features (layers,
# directions, packing, projection, eval mode). Sizes small: the kernels run interpreted here.
ONE = [R(variational_dropout=0.3), R(weight_drop=0.4), R(recurrent_dropout=0.3),
       R(zoneout_hidden=0.3)]
LSTM_ONLY = [R(rnndrop=0.3), R(zoneout_cell=0.4)]
ALL_LSTM = R(0.2, 0.3, 0.25, 0.2, 0.3, 0.35)
CASES = []
for k, cell in enumerate(testing.CELLS):
    for j, reg in enumerate(ONE + (LSTM_ONLY if cell == "LSTM" else [])):
        if reg.recurrent_dropout and cell.startswith("RNN"):
            continue
        CASES.append(Case(cell, T=4, B=3, I=5, H=7, reg=reg, seed=100 * k + j))
CASES += [
    Case("LSTM", T=5, B=4, I=6, H=9, num_layers=2, bidirectional=True, packed="unsorted",
         reg=ALL_LSTM, seed=1),
    Case("LSTM", T=4, B=3, I=5, H=8, proj_size=5, num_layers=2, packed="sorted", reg=ALL_LSTM,
         seed=2),
    Case("LSTM", T=4, B=3, I=5, H=8, proj_size=3, reg=R(zoneout_hidden=0.5,
                                                       variational_dropout=0.3), seed=3),
    Case("GRU", T=5, B=4, I=3, H=6, num_layers=2, bidirectional=True, packed="unsorted",
         reg=R(0.2, 0.3, 0.25, 0.0, 0.0, 0.3), seed=4),
    Case("RNN_TANH", T=5, B=4, I=3, H=6, num_layers=2, batch_first=True,
         reg=R(variational_dropout=0.2, weight_drop=0.3, zoneout_hidden=0.3), dropout=0.2,
         seed=5),
    Case("RNN_RELU", T=3, B=1, I=4, H=5, unbatched=True, reg=R(zoneout_hidden=0.4), seed=6),
    # Eval mode: zoneout uses its expectation, the other options do nothing.
    Case("LSTM", T=4, B=3, I=5, H=7, num_layers=2, reg=ALL_LSTM, train=False, seed=7),
    Case("GRU", T=4, B=3, I=5, H=7, reg=R(0.3, 0.3, 0.3, 0.0, 0.0, 0.4), train=False, seed=8),
]
# LayerNorm cells, alone and with the options (Triton only: backend="cuda" refuses them).
LN_CASES = [
    Case("LSTM", T=4, B=3, I=5, H=7, layer_norm=True, seed=20),
    Case("GRU", T=4, B=3, I=5, H=7, layer_norm=True, seed=21),
    Case("LSTM", T=4, B=3, I=5, H=6, bias=False, batch_first=True, layer_norm=True, seed=22),
    Case("LSTM", T=5, B=4, I=6, H=9, num_layers=2, bidirectional=True, packed="unsorted",
         reg=ALL_LSTM, layer_norm=True, seed=23),
    Case("GRU", T=5, B=4, I=3, H=6, num_layers=2, bidirectional=True, packed="sorted",
         reg=R(0.2, 0.3, 0.25, 0.0, 0.0, 0.3), layer_norm=True, seed=24),
    Case("LSTM", T=4, B=3, I=5, H=7, num_layers=2, reg=ALL_LSTM, train=False, layer_norm=True,
         seed=25),
    Case("GRU", T=3, B=1, I=4, H=5, unbatched=True, reg=R(zoneout_hidden=0.4), layer_norm=True,
         seed=26),
]
CASES += LN_CASES


# Half types only on a GPU (Triton's interpreter computes bf16 wrongly; emulation is fp32/fp64).
DTYPES = {"fp64": torch.float64, "fp32": torch.float32}
if DEVICE == "cuda":
    DTYPES.update(bf16=torch.bfloat16, fp16=torch.float16)


# backend="cuda" has no LayerNorm cells yet (test_layer_norm_backends). Under Triton's
# interpreter (slow: about a third of this file's time went to its fp64 runs) Triton runs fp32
# only here: its fp64 step masks and LayerNorm cells are checked against the reference to 1e-10
# by tests/test_triton.py (test_step_masks_match_reference, test_layer_norm_matches_reference).
RUNS = [(case, backend, dtype) for backend in _fused_backends() for case in CASES
        for dtype in DTYPES
        if not (case.layer_norm and backend == "cuda")
        and not (backend == "triton" and DEVICE == "cpu" and dtype == "fp64")]


@pytest.mark.parametrize("case,backend,dtype", [(c, b, DTYPES[d]) for c, b, d in RUNS],
                         ids=[f"{b}-{c.label()}-{d}" for c, b, d in RUNS])
def test_fused_matches_reference(case, backend, dtype):
    res = testing.check(case, backend, dtype, DEVICE)
    assert res.ok, res.failures()


CELL_CASES = [(nn.LSTMCell, R(recurrent_dropout=0.3, zoneout_cell=0.3, zoneout_hidden=0.4)),
              (nn.GRUCell, R(recurrent_dropout=0.3, zoneout_hidden=0.4)),
              (nn.RNNCell, R(zoneout_hidden=0.4))]


@pytest.mark.parametrize("backend", _fused_backends())
@pytest.mark.parametrize("base,reg", CELL_CASES, ids=[c[0].__name__ for c in CELL_CASES])
def test_cells_match_reference(base, reg, backend):
    torch.manual_seed(3)
    ref = fused_rnn.convert(base(5, 7, dtype=torch.float64, device=DEVICE), "reference")
    ref.regularization = reg
    results = []
    for module in (ref, fused_rnn.convert(copy.deepcopy(ref), backend)):
        x = torch.randn(4, 5, dtype=torch.float64, device=DEVICE,
                        generator=torch.Generator(DEVICE).manual_seed(1)).requires_grad_()
        h = torch.randn(4, 7, dtype=torch.float64, device=DEVICE,
                        generator=torch.Generator(DEVICE).manual_seed(2)).requires_grad_()
        state = (h, h.flip(0)) if base is nn.LSTMCell else h
        torch.manual_seed(9)
        out = module(x, state)
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=DEVICE)
                    .view_as(o)).sum() for o in outs)
        results.append(list(outs) + list(torch.autograd.grad(loss, [x, h]
                                                             + list(module.parameters()))))
    for a, b in zip(*results):
        assert (a - b).abs().max().item() <= 1e-10


# ------------------------------------------------- the reference against loops from the papers

def _masks(reg, seed, **shape):
    torch.manual_seed(seed)
    return regularize.draw(reg, training=True, device="cpu", **shape)


def test_reference_lstm_follows_the_papers():
    """One layer, every option at once, against a loop over nn.LSTMCell-style math written
    from the papers with the masks drawn by the same seed."""
    T, B, I, H = 6, 3, 4, 5
    reg = R(0.3, 0.4, 0.25, 0.2, 0.3, 0.35)
    torch.manual_seed(0)
    lstm = fused_rnn.LSTM(I, H, backend="reference", dtype=torch.float64)
    lstm.regularization = reg
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0, c0 = torch.randn(1, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    torch.manual_seed(42)
    out, (h_n, c_n) = lstm(x, (h0, c0))

    (m,) = _masks(reg, 42, num_layers=1, num_directions=1, T=T, B=B, input_size=I, H=H, HK=H,
                  gates=4)
    s = m.step
    w_hh = lstm.weight_hh_l0 * m.w / (1 - reg.weight_drop)          # DropConnect, one mask
    h, c = h0[0], c0[0]
    expected = []
    for t in range(T):
        x_t = x[t] * m.x / (1 - reg.variational_dropout)               # Gal: per sequence
        h_in = h * s.h / (1 - reg.variational_dropout)
        gates = x_t @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h_in @ w_hh.T + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4, -1)
        i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
        g = g.tanh() * s.g[t] / (1 - reg.recurrent_dropout)            # Semeniuta
        c_upd = (f * c + i * g) * s.c                                  # Moon: per sequence
        h_upd = o * c_upd.tanh()
        c = s.zc[t] * c + (1 - s.zc[t].double()) * c_upd                # Krueger
        h = s.zh[t] * h + (1 - s.zh[t].double()) * h_upd
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_n[0], c, rtol=0, atol=1e-12)


def test_reference_gru_follows_the_papers():
    T, B, I, H = 5, 3, 4, 6
    reg = R(variational_dropout=0.3, recurrent_dropout=0.25, zoneout_hidden=0.3)
    torch.manual_seed(0)
    gru = fused_rnn.GRU(I, H, backend="reference", dtype=torch.float64)
    gru.regularization = reg
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(1, B, H, dtype=torch.float64)
    torch.manual_seed(5)
    out, _ = gru(x, h0)
    (m,) = _masks(reg, 5, num_layers=1, num_directions=1, T=T, B=B, input_size=I, H=H, HK=H,
                  gates=3)
    s, h, expected = m.step, h0[0], []
    for t in range(T):
        gi = (x[t] * m.x / 0.7) @ gru.weight_ih_l0.T + gru.bias_ih_l0
        gh = (h * s.h / 0.7) @ gru.weight_hh_l0.T + gru.bias_hh_l0
        r = (gi[:, :H] + gh[:, :H]).sigmoid()
        z = (gi[:, H:2 * H] + gh[:, H:2 * H]).sigmoid()
        n = (gi[:, 2 * H:] + r * gh[:, 2 * H:]).tanh() * s.g[t] / 0.75
        h = s.zh[t] * h + (1 - s.zh[t].double()) * ((1 - z) * n + z * h)
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=1e-12)


def test_weight_drop_is_one_mask_for_every_step_and_row():
    """With weight_drop alone, our module equals torch's own nn.LSTM run with W_hh masked by
    the one drawn mask: the same mask at every step and for every batch row."""
    torch.manual_seed(0)
    ours = fused_rnn.LSTM(4, 6, num_layers=2, backend="reference", dtype=torch.float64,
                          weight_drop=0.5)
    x = torch.randn(7, 5, 4, dtype=torch.float64)
    torch.manual_seed(11)
    out, _ = ours(x)
    masks = _masks(ours.regularization, 11, num_layers=2, num_directions=1, T=7, B=5,
                   input_size=4, H=6, HK=6, gates=4)
    plain = nn.LSTM(4, 6, num_layers=2, dtype=torch.float64)
    plain.load_state_dict(ours.state_dict())
    with torch.no_grad():
        for layer, m in enumerate(masks):
            getattr(plain, f"weight_hh_l{layer}").mul_(m.w * 2.0)
    torch.testing.assert_close(out, plain(x)[0], rtol=0, atol=1e-12)
    # Identical rows stay identical (to GEMM round-off): no mask varies across the batch.
    torch.manual_seed(12)
    same = ours(x[:, :1].expand(7, 3, 4).contiguous())[0]
    for b in (1, 2):
        torch.testing.assert_close(same[:, b], same[:, 0], rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------- statistics

def _within_binomial(ones: int, n: int, p: float):
    """The realised rate of 1s is p within 5 standard errors (a false alarm ~1 in 3.5 million)."""
    assert abs(ones / n - p) <= 5 * math.sqrt(p * (1 - p) / n), (ones / n, p, n)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drop_rates_match_p(p):
    reg = R(p, p, p, p, p, p)
    masks = _masks(reg, 0, num_layers=2, num_directions=2, T=64, B=32, input_size=16, H=24,
                   HK=24, gates=4)
    keep = {"x": [], "w": [], "h": [], "g": [], "c": []}
    zone = {"zc": [], "zh": []}
    for m in masks:
        keep["x"].append(m.x)
        keep["w"].append(m.w)
        for name in ("h", "g", "c"):
            keep[name].append(getattr(m.step, name))
        for name in zone:
            zone[name].append(getattr(m.step, name))
    for name, ms in keep.items():  # dropout masks keep with probability 1 - p
        n = sum(t.numel() for t in ms)
        _within_binomial(n - sum(int(t.sum()) for t in ms), n, p)
    for name, ms in zone.items():  # zoneout masks keep the previous value with probability p
        _within_binomial(sum(int(t.sum()) for t in ms), sum(t.numel() for t in ms), p)
    for m in masks:
        assert m.x_scale == pytest.approx(1 / (1 - p)) and m.step.g_scale == pytest.approx(
            1 / (1 - p))


@pytest.mark.parametrize("backend", ["reference"] + _fused_backends())
def test_rnndrop_mask_is_constant_over_time(backend):
    """A cell unit that RNNDrop zeroes stays zero at every step: the output is exactly 0 at the
    same (row, unit) for all t, and nowhere else; the share of such units is about p."""
    torch.manual_seed(0)
    T, B, H, p = 4, 64, 32, 0.4
    lstm = fused_rnn.LSTM(3, H, backend=backend, dtype=torch.float64, rnndrop=p).to(DEVICE)
    out, _ = lstm(torch.randn(T, B, 3, dtype=torch.float64, device=DEVICE))
    zero = out == 0
    assert torch.equal(zero, zero[:1].expand_as(zero))
    _within_binomial(int(zero[0].sum()), B * H, p)


@pytest.mark.parametrize("backend", ["reference"] + _fused_backends())
def test_variational_input_mask_is_constant_over_time(backend):
    """dL/dx[t, b, i] is exactly zero for the input features the mask drops, and those are the
    same features at every step of a sequence (and differ between sequences)."""
    torch.manual_seed(0)
    T, B, I, p = 5, 12, 10, 0.5
    gru = fused_rnn.GRU(I, 4, backend=backend, dtype=torch.float64,
                        variational_dropout=p).to(DEVICE)
    x = torch.randn(T, B, I, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out, _ = gru(x)
    (grad,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), x)
    dropped = grad == 0
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))
    assert not torch.equal(dropped[0], dropped[0, :1].expand_as(dropped[0]))
    _within_binomial(int(dropped[0].sum()), B * I, p)


# Not Triton under its interpreter: 200 steps took 440 s there (on a loaded 2-core machine),
# and its RNNDrop step is the reference's step for step (test_fused_matches_reference,
# tests/test_triton.py::test_step_masks_match_reference, kind "c"); on a GPU it runs here too.
@pytest.mark.parametrize("backend", ["reference"] + [
    b for b in _fused_backends() if not (b == "triton" and DEVICE == "cpu")])
def test_rnndrop_does_not_compound_over_time(backend):
    """A kept cell unit runs as in eval mode: with forget gates near 1 the cell stays as small
    in training as in eval over 200 steps (a 1/(1-p) rescale per step would overflow)."""
    torch.manual_seed(0)
    lstm = fused_rnn.LSTM(3, 8, backend=backend, dtype=torch.float64, rnndrop=0.5).to(DEVICE)
    with torch.no_grad():
        lstm.bias_hh_l0[8:16] = 3.0  # forget gate ~0.95
    x = torch.randn(200, 4, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    c_train = lstm.train()(x)[1][1]
    c_eval = lstm.eval()(x)[1][1]
    assert c_train.abs().max() <= 2 * c_eval.abs().max() + 1.0
    (grad,) = torch.autograd.grad(lstm.train()(x)[0].sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", ["reference"] + _fused_backends())
def test_zoneout_of_one_keeps_the_state(backend):
    """zoneout 1.0 keeps h_0 and c_0 at every step, in training and in eval mode."""
    torch.manual_seed(0)
    lstm = fused_rnn.LSTM(3, 5, backend=backend, dtype=torch.float64, zoneout=1.0).to(DEVICE)
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE)
    h0 = torch.randn(1, 2, 5, dtype=torch.float64, device=DEVICE)
    c0 = torch.randn(1, 2, 5, dtype=torch.float64, device=DEVICE)
    for train in (True, False):
        out, (h_n, c_n) = lstm.train(train)(x, (h0, c0))
        assert torch.equal(out, h0.expand(4, 2, 5)) and torch.equal(c_n, c0)


# ------------------------------------------------------------------------------ eval and API

@pytest.mark.parametrize("cls,kw", [
    (fused_rnn.LSTM, dict(variational_dropout=0.5, weight_drop=0.5, recurrent_dropout=0.5,
                          rnndrop=0.5)),
    (fused_rnn.GRU, dict(variational_dropout=0.5, weight_drop=0.5, recurrent_dropout=0.5)),
    (fused_rnn.RNN, dict(variational_dropout=0.5, weight_drop=0.5))])
def test_eval_mode_is_a_no_op(cls, kw):
    torch.manual_seed(0)
    ours = cls(4, 6, num_layers=2, backend="reference", dtype=torch.float64, **kw).eval()
    plain = getattr(nn, cls.__name__)(4, 6, num_layers=2, dtype=torch.float64)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], plain(x)[0], rtol=0, atol=1e-12)
    assert not torch.allclose(ours.train()(x)[0], plain(x)[0])


def test_zoneout_in_eval_is_the_expectation():
    torch.manual_seed(0)
    rnn = fused_rnn.RNN(3, 4, backend="reference", dtype=torch.float64, zoneout=0.25).eval()
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    out, _ = rnn(x)
    h, expected = torch.zeros(2, 4, dtype=torch.float64), []
    for t in range(3):
        new = torch.tanh(x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T
                         + rnn.bias_hh_l0)
        h = 0.25 * h + 0.75 * new
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=1e-12)


def test_same_seed_same_masks_other_seed_other_masks():
    lstm = fused_rnn.LSTM(3, 5, backend="reference", zoneout=0.3, variational_dropout=0.3)
    x = torch.randn(4, 2, 3)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(lstm(x)[0])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("make,match", [
    (lambda: fused_rnn.LSTM(3, 4, weight_drop=1.0), r"weight_drop: expected a probability in "
                                                    r"\[0, 1\), got 1.0"),
    (lambda: fused_rnn.LSTM(3, 4, zoneout=1.5), r"zoneout_cell: expected a probability in "
                                                r"\[0, 1\], got 1.5"),
    (lambda: fused_rnn.LSTM(3, 4, variational_dropout=-0.1), "variational_dropout: expected"),
    (lambda: fused_rnn.LSTM(3, 4, rnndrop="0.1"), "rnndrop: expected a float probability in "
                                                  r"\[0, 1\), got str"),
    (lambda: fused_rnn.GRU(3, 4, rnndrop=0.2), "rnndrop: applies to an LSTM's cell state"),
    (lambda: fused_rnn.GRU(3, 4, zoneout_cell=0.2), "zoneout_cell: applies to an LSTM"),
    (lambda: fused_rnn.RNN(3, 4, recurrent_dropout=0.2), "recurrent_dropout: drops a gated"),
    (lambda: fused_rnn.LSTMCell(3, 4, variational_dropout=0.2),
     "variational_dropout: needs a whole sequence"),
    (lambda: fused_rnn.GRUCell(3, 4, weight_drop=0.2), "weight_drop: needs a whole sequence"),
])
def test_bad_options_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_cudnn_backend_refuses_options():
    lstm = fused_rnn.LSTM(3, 4, backend="cudnn", zoneout=0.1)
    with pytest.raises(RuntimeError, match="backend='cudnn' cannot run this call: .* no "
                                           "regularisation options; got zoneout_cell=0.1, "
                                           "zoneout_hidden=0.1"):
        lstm(torch.randn(2, 1, 3))


def test_functional_checks_the_options_type():
    w = list(nn.GRU(3, 4)._flat_weights)
    with pytest.raises(TypeError, match="regularization: expected a fused_rnn.Regularization"):
        fused_rnn.functional.gru(torch.randn(2, 1, 3), w, regularization={"zoneout": 0.1})


def test_options_survive_convert_state_dict_and_repr():
    lstm = fused_rnn.LSTM(3, 4, zoneout_hidden=0.2, weight_drop=0.3)
    assert "weight_drop=0.3" in repr(lstm) and "zoneout_hidden=0.2" in repr(lstm)
    assert set(lstm.state_dict()) == set(nn.LSTM(3, 4).state_dict())
    plain = fused_rnn.convert(nn.LSTM(3, 4))
    assert plain.regularization == Regularization()
    assert copy.deepcopy(lstm).regularization == lstm.regularization


# ------------------------------------------------------------------------------ LayerNorm cells

def _ln(v, w, b):
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return (v - mean) / torch.sqrt(var + 1e-5) * w + b


def _randomize_layer_norm(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("layer_norm"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "weight" in name else 0.0))


def test_layer_norm_lstm_follows_ba_et_al():
    """gates = LN(x·W_ihᵀ) + b_ih + LN(h·W_hhᵀ) + b_hh (LN over all 4H), h = o·tanh(LN(c))."""
    T, B, I, H = 5, 3, 4, 6
    torch.manual_seed(0)
    lstm = fused_rnn.LSTM(I, H, dtype=torch.float64, layer_norm=True, zoneout=0.3)
    _randomize_layer_norm(lstm)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(4)
    out, (h_n, c_n) = lstm(x)
    (m,) = _masks(lstm.regularization, 4, num_layers=1, num_directions=1, T=T, B=B,
                  input_size=I, H=H, HK=H, gates=4)
    p = {n: t for n, t in lstm.named_parameters()}
    h = c = torch.zeros(B, H, dtype=torch.float64)
    expected = []
    for t in range(T):
        gates = (_ln(x[t] @ p["weight_ih_l0"].T, p["layer_norm_ih_weight_l0"],
                     p["layer_norm_ih_bias_l0"]) + p["bias_ih_l0"]
                 + _ln(h @ p["weight_hh_l0"].T, p["layer_norm_hh_weight_l0"],
                       p["layer_norm_hh_bias_l0"]) + p["bias_hh_l0"])
        i, f, g, o = gates.chunk(4, -1)
        c_upd = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h_upd = o.sigmoid() * _ln(c_upd, p["layer_norm_c_weight_l0"],
                                  p["layer_norm_c_bias_l0"]).tanh()
        c = m.step.zc[t] * c + (1 - m.step.zc[t].double()) * c_upd
        h = m.step.zh[t] * h + (1 - m.step.zh[t].double()) * h_upd
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(c_n[0], c, rtol=0, atol=1e-12)


def test_layer_norm_gru_cell_follows_ba_et_al():
    torch.manual_seed(0)
    cell = fused_rnn.GRUCell(4, 5, dtype=torch.float64, layer_norm=True)
    _randomize_layer_norm(cell)
    x, h = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    p = dict(cell.named_parameters())
    gi = _ln(x @ p["weight_ih"].T, p["layer_norm_ih_weight"], p["layer_norm_ih_bias"]) \
        + p["bias_ih"]
    gh = _ln(h @ p["weight_hh"].T, p["layer_norm_hh_weight"], p["layer_norm_hh_bias"]) \
        + p["bias_hh"]
    r = (gi[:, :5] + gh[:, :5]).sigmoid()
    z = (gi[:, 5:10] + gh[:, 5:10]).sigmoid()
    n = (gi[:, 10:] + r * gh[:, 10:]).tanh()
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h, rtol=0, atol=1e-12)


def test_layer_norm_parameters_gradients_and_init():
    torch.manual_seed(0)
    gru = fused_rnn.GRU(3, 4, num_layers=2, bidirectional=True, layer_norm=True)
    names = [n for n, _ in gru.named_parameters() if n.startswith("layer_norm")]
    assert len(names) == 2 * 2 * 4 and "layer_norm_hh_bias_l1_reverse" in names
    assert set(nn.GRU(3, 4, num_layers=2, bidirectional=True).state_dict()) < \
        set(gru.state_dict())
    gru.reset_parameters()
    assert torch.equal(gru.layer_norm_ih_weight_l0, torch.ones(12))
    assert torch.equal(gru.layer_norm_hh_bias_l1, torch.zeros(12))
    out, h_n = gru(torch.randn(5, 2, 3))
    (out.sum() + h_n.sum()).backward()
    assert all(gru.get_parameter(n).grad is not None and gru.get_parameter(n).grad.abs().sum() > 0
               for n in names if "ih" in n or "hh" in n)
    assert "layer_norm=True" in repr(gru) and not fused_rnn.GRU(3, 4).layer_norm


@pytest.mark.skipif(DEVICE == "cpu" and not backends.triton_interpreted(),
                    reason="the Triton kernels run on the CPU under TRITON_INTERPRET=1 only")
@pytest.mark.parametrize("cls", [fused_rnn.LSTMCell, fused_rnn.GRUCell])
def test_layer_norm_cells_match_reference(cls):
    torch.manual_seed(5)
    ref = cls(5, 7, dtype=torch.float64, device=DEVICE, layer_norm=True, backend="reference",
              zoneout_hidden=0.3)
    _randomize_layer_norm(ref)
    ours = copy.deepcopy(ref)
    ours.backend = "triton"
    results = []
    for module in (ref, ours):
        x = torch.randn(4, 5, dtype=torch.float64, device=DEVICE,
                        generator=torch.Generator(DEVICE).manual_seed(1)).requires_grad_()
        h = torch.randn(4, 7, dtype=torch.float64, device=DEVICE,
                        generator=torch.Generator(DEVICE).manual_seed(2)).requires_grad_()
        torch.manual_seed(9)
        out = module(x, (h, h.flip(0)) if cls is fused_rnn.LSTMCell else h)
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=DEVICE)
                    .view_as(o)).sum() for o in outs)
        results.append(list(outs) + list(torch.autograd.grad(loss, [x, h]
                                                             + list(module.parameters()))))
    assert len(results[0]) == 2 + len(outs) + len(list(ref.parameters()))
    for a, b in zip(*results):
        assert (a - b).abs().max().item() <= 1e-10


def test_layer_norm_backends():
    """Triton takes layer_norm (not with proj_size); cuda and cudnn refuse it by name; "auto"
    takes the reference on the CPU."""
    x = torch.randn(2, 1, 3)
    for backend, kw, match in [("cuda", {}, "layer_norm runs on backend='triton' or 'reference'"),
                               ("cudnn", {}, "layer_norm runs on backend='triton' or"),
                               ("triton", dict(proj_size=2), "proj_size with layer_norm")]:
        lstm = fused_rnn.LSTM(3, 4, layer_norm=True, backend=backend, **kw)
        with pytest.raises(RuntimeError, match=match):
            lstm(x)
    lstm = fused_rnn.LSTM(3, 4, layer_norm=True)
    assert lstm(x)[0].shape == (2, 1, 4)
    with pytest.raises(RuntimeError, match="backend='cuda' has no LayerNorm cell kernels"):
        from fused_rnn.ops.cuda import launch as cuda_launch
        cuda_launch.rnn_fwd_cuda("GRU", torch.randn(1, 1, 3), torch.randn(1, 1), None,
                             torch.randn(3, 1), None, None, None, False,
                             ln=(torch.ones(3), torch.zeros(3), None, None))


@pytest.mark.parametrize("make,err,match", [
    (lambda: fused_rnn.RNN(3, 4, layer_norm=True), ValueError, "layer_norm: LayerNorm cells are"),
    (lambda: fused_rnn.LSTM(3, 4, layer_norm=1), ValueError, "layer_norm: expected a bool"),
    (lambda: fused_rnn.functional.lstm(torch.randn(2, 1, 3), list(nn.LSTM(3, 4)._flat_weights),
                                       layer_norm=[torch.ones(16)] * 5), ValueError,
     "layer_norm: expected 6 tensors"),
    (lambda: fused_rnn.functional.gru(torch.randn(2, 1, 3), list(nn.GRU(3, 4)._flat_weights),
                                      layer_norm=[torch.ones(12)] * 3 + [torch.ones(4)]),
     ValueError, r"layer_norm\[3\]: expected shape \(12,\), got \(4,\)"),
])
def test_layer_norm_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()
