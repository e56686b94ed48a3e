"""What one layer call puts on the device: the input GEMM and one recurrence kernel going
forward; the recurrence and the weight-gradient GEMMs going back. Nothing else: no copies of
h0/c0 into the state buffers, no clones of h_n, no zeros for an absent hx (the kernels read h0/c0
and write h_n/c_n themselves, csrc/params.h).

CPU: the emulated build counts its launches (csrc/platform.cuh) and torch.profiler lists the
ATen ops of the call; an op counts as device work when it would run a kernel on a GPU (a GEMM,
a reduction, a fill, or a copy: a `to`/`contiguous`/`reshape` that copied has a copy_ or clone
inside). GPU (marker gpu): torch.profiler's CUDA kernels of the call."""
from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import fused_rnn
from fused_rnn import _alloc

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

_WORK = {"aten::addmm", "aten::addmm_", "aten::mm", "aten::bmm", "aten::sum", "aten::fill_",
         "aten::zero_", "aten::zeros", "aten::zeros_like", "aten::ones_like", "aten::copy_",
         "aten::clone", "aten::flip", "aten::cat", "aten::stack", "aten::index",
         "aten::index_put_", "aten::add", "aten::add_", "aten::mul", "aten::mul_",
         "aten::select_scatter", "aten::slice_scatter", "aten::fill", "aten::masked_fill"}
_MAYBE_COPY = {"aten::to", "aten::_to_copy", "aten::contiguous", "aten::reshape"}


@pytest.fixture(autouse=True)
def _emulated_unpoisoned(monkeypatch):
    if DEVICE == "cpu":
        monkeypatch.setenv("FUSED_RNN_CUDA_EMULATE", "1")
    with _alloc.poisoned(False):  # the suite's NaN fills are test-only device work
        yield


def _copies(event) -> bool:
    return any(c.name in ("aten::copy_", "aten::clone") or _copies(c) for c in event.cpu_children)


def device_work(fn) -> Counter:
    """The ATen ops of fn() that are device work, outermost only (an addmm's own internals are
    the addmm)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = Counter()
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        p = e.cpu_parent
        if p is not None and p.name.startswith("aten::"):
            continue
        if e.name in _WORK or (e.name in _MAYBE_COPY and _copies(e)):
            ops[e.name] += 1
    return ops


def _launches():
    from fused_rnn.ops.cuda import extension
    return extension.load().launches()


def _module(cls, **kw):
    torch.manual_seed(0)
    return cls(5, 6, backend="cuda", **kw).to(DEVICE)


CONFIGS = [dict(), dict(num_layers=2), dict(bidirectional=True), dict(proj_size=3)]


@pytest.mark.skipif(DEVICE == "cuda", reason="the emulated build's counter (CPU)")
@pytest.mark.parametrize("cls", [fused_rnn.LSTM, fused_rnn.GRU], ids=["LSTM", "GRU"])
@pytest.mark.parametrize("kw", CONFIGS, ids=["L1", "L2", "bidirectional", "proj"])
def test_forward_is_one_gemm_and_one_kernel_per_layer(cls, kw):
    from fused_rnn.ops.cuda import launch
    if "proj_size" in kw and cls is not fused_rnn.LSTM:
        pytest.skip("a projection is LSTM's")
    m = _module(cls, **kw)
    n = m.num_layers * (2 if m.bidirectional else 1)
    x = torch.randn(3, 2, 5, device=DEVICE)
    with launch.variant("persistent"), torch.no_grad():
        m(x)  # the extension is loaded and the path warm
        before = _launches()
        ops = device_work(lambda: m(x))
        launches = _launches() - before
    assert ops == Counter({"aten::addmm": n}), ops
    # One persistent launch per layer and direction (a projection runs per step: 2 per step).
    assert launches == (n * 3 * 2 if "proj_size" in kw else n), launches


@pytest.mark.skipif(DEVICE == "cuda", reason="the emulated build's counter (CPU)")
@pytest.mark.parametrize("cls", [fused_rnn.LSTM, fused_rnn.GRU], ids=["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_backward_is_one_kernel_and_the_weight_gemms(cls, bidirectional):
    from fused_rnn.ops.cuda import launch
    m = _module(cls, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(3, 2, 5, device=DEVICE)
    with launch.variant("persistent"):
        out = m(x)[0]
        g = torch.randn_like(out)
        before = _launches()
        ops = device_work(lambda: out.backward(g))
        launches = _launches() - before
    # Per direction: W_hh's transposed copy (the persistent backward reads its rows), dh0's
    # GEMM (onto the carry, in place), dW_hh and dW_ih, the two bias sums (x needs no
    # gradient: no dx); the reverse direction's states are flipped for dW_hh.
    expected = Counter({"aten::contiguous": D, "aten::addmm_": D, "aten::mm": 2 * D,
                        "aten::sum": 2 * D})
    if D == 2:
        expected["aten::flip"] = 1
    assert ops == expected, ops
    assert launches == D, launches


@pytest.mark.skipif(DEVICE == "cuda", reason="the emulated build's counter (CPU)")
@pytest.mark.parametrize("cls", [fused_rnn.LSTMCell, fused_rnn.GRUCell], ids=["LSTM", "GRU"])
def test_cell_step_is_one_gemm_and_one_kernel(cls):
    m = _module(cls)
    x, h, c = (torch.randn(2, k, device=DEVICE) for k in (5, 6, 6))
    hx = (h, c) if cls is fused_rnn.LSTMCell else h
    with torch.no_grad():
        m(x, hx)
        before = _launches()
        ops = device_work(lambda: m(x, hx))
        launches = _launches() - before
    assert ops == Counter({"aten::addmm": 1}), ops
    assert launches == 1, launches


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [fused_rnn.LSTM, fused_rnn.GRU], ids=["LSTM", "GRU"])
def test_gpu_forward_kernels(cls):
    """On the GPU: the input GEMM's kernels and one recurrence kernel, nothing else."""
    m = cls(64, 64, backend="cuda", device="cuda", dtype=torch.bfloat16)
    x = torch.randn(16, 16, 64, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        m(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            m(x)
            torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
             and e.device_time_total > 0]
    ours = [n for n in names if "rnn_" in n]
    gemm = [n for n in names if any(k in n.lower() for k in ("gemm", "cutlass", "xmma"))]
    assert len(ours) == 1 and len(ours) + len(gemm) == len(names), names


@pytest.mark.gpu
def test_gpu_kernel_attributes_follow_the_largest_size():
    """Kernel attributes are set once per (device, kernel) and raised, never lowered: a layer
    that needs less opt-in shared memory between two that need more leaves them their room
    (H = 1024 and 768 in fp32 keep 128 KB and 72 KB of W_hh per block on 132 SMs)."""
    from fused_rnn.ops.cuda import launch
    x = torch.randn(4, 2, 32, device="cuda")
    with launch.variant("persistent"), torch.no_grad():
        for H in (1024, 768, 1024):
            m = fused_rnn.LSTM(32, H, backend="cuda", device="cuda")
            ref = fused_rnn.LSTM(32, H, backend="reference", device="cuda")
            ref.load_state_dict(m.state_dict())
            torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=1e-4, atol=1e-5)
            assert launch.last_used["fwd"] == "persistent", (H, launch.last_used)


@pytest.mark.skipif(DEVICE == "cuda", reason="the emulated build's counter (CPU)")
def test_backward_skips_the_gemms_of_frozen_weights():
    """A frozen weight (requires_grad False) costs no gradient GEMM; dx still comes, as the
    input needs it."""
    from fused_rnn.ops.cuda import launch
    m = _module(fused_rnn.LSTM)
    m.weight_ih_l0.requires_grad_(False)
    m.bias_hh_l0.requires_grad_(False)
    x = torch.randn(3, 2, 5, device=DEVICE, requires_grad=True)
    with launch.variant("persistent"):
        out = m(x)[0]
        g = torch.randn_like(out)
        ops = device_work(lambda: out.backward(g))
    # dh0's GEMM, dW_hh, dx; one bias sum; W_hh's transposed copy
    assert ops == Counter({"aten::contiguous": 1, "aten::addmm_": 1, "aten::mm": 2,
                           "aten::sum": 1}), ops
    assert m.weight_ih_l0.grad is None and m.bias_hh_l0.grad is None
    assert m.weight_hh_l0.grad is not None and m.bias_ih_l0.grad is not None
    assert x.grad is not None
