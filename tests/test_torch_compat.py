"""fused_rnn's classes as drop-ins by PyTorch's own test material.

The first part drives torch's module_db (torch.testing._internal.common_modules: the sample and
error inputs that torch's test_modules.py runs for nn.RNN/GRU/LSTM and the cells) through our
classes: every sample gives the outputs and gradients of torch's class with the same
state_dict, and every error input raises torch's exception type with a message that matches
torch's pattern. The second part checks, with our own small cases, the behaviours that torch's
RNN tests in test_nn.py rely on: exception types and torch's wording for bad shapes, no
broadcasting in the cells, a sequence of length 0, a batch of size 0, train and eval modes,
second derivatives, the meta device, and nn.RNN's mode after construction.

Backends: "reference" everywhere; "triton" (Triton's CPU interpreter here, see conftest.py) and
"cuda" (its emulated CPU build, FUSED_RNN_CUDA_EMULATE=1) for a few fast cases.
"""
import functools
import importlib.util
import re

import pytest
import torch
import torch.nn as nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_rnn
from fused_rnn.functional import InputError

ON_GPU = torch.cuda.is_available()
LAYERS = ["RNN", "GRU", "LSTM"]
CELLS = ["RNNCell", "GRUCell", "LSTMCell"]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")


@pytest.fixture
def device_for(monkeypatch):
    """The device a backend's tensors live on here: a fused backend without a GPU runs on CPU
    tensors (Triton's interpreter, the emulated CUDA build)."""
    def pick(backend):
        if backend == "cuda" and not ON_GPU:
            monkeypatch.setenv("FUSED_RNN_CUDA_EMULATE", "1")
        elif backend == "cuda":
            from fused_rnn.ops.cuda import extension
            if extension.why_not_buildable() is not None:
                pytest.skip(f"CUDA extension: {extension.why_not_buildable()}")
        return "cuda" if ON_GPU and backend != "reference" else "cpu"
    return pick


# ------------------------------------------------------------------------ torch's module_db

@functools.lru_cache(maxsize=None)
def _module_infos():
    # torch.testing._internal imports expecttest, one of torch's test dependencies that a plain
    # torch install lacks: our test extras list it (pyproject.toml), so its absence fails here.
    from torch.testing._internal.common_modules import module_db
    # Importing it also freezes torch.backends' global flags for the whole process
    # (common_utils calls torch.backends.disable_global_flags()), after which setting e.g.
    # torch.backends.cudnn.allow_tf32 raises: undo that for the tests that run after these.
    # (flags_frozen reads the flag from its own module globals, not torch.backends' attributes.)
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    assert not torch.backends.flags_frozen()
    names = set(LAYERS + CELLS)
    return {m.module_cls.__name__: m for m in module_db
            if m.module_cls.__module__ == "torch.nn.modules.rnn" and m.module_cls.__name__ in names}


def _info(name):
    info = _module_infos().get(name)
    assert info is not None, f"torch's module_db has no entry for nn.{name}"
    return info


def _samples(info, dtype=torch.float64, training=True):
    kw = {"with_packed_sequence": True} if info.module_cls in (nn.RNN, nn.GRU) else {}
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                        training=training, **kw))


def _copy(obj):
    """Fresh leaves with the same values (and requires_grad) for a second module to use."""
    if isinstance(obj, PackedSequence):
        return PackedSequence(_copy(obj.data), obj.batch_sizes, obj.sorted_indices,
                              obj.unsorted_indices)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_copy(o) for o in obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.requires_grad)
    return obj


def _tensors(obj):
    """The floating-point tensors in obj (outputs, inputs; PackedSequence: its data)."""
    if isinstance(obj, PackedSequence):
        return [obj.data]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return [obj] if isinstance(obj, torch.Tensor) and obj.is_floating_point() else []


def _run(module, args, grads=None):
    """Forward, then backward with `grads` (random ones if None, returned): outputs, the
    inputs' gradients and the parameters' gradients."""
    outs = _tensors(module(*args))
    if grads is None:
        grads = [torch.randn_like(o) for o in outs]
    used = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
    torch.autograd.backward([o for o, _ in used], [g for _, g in used])
    return (outs, [t.grad for t in _tensors(args)], [p.grad for p in module.parameters()],
            grads)


def _pair(name, args, kwargs, backend="reference", device="cpu", dtype=torch.float64):
    """torch's nn.<name> and ours, built from one sample's constructor input, with the same
    parameters."""
    ref = getattr(nn, name)(*args, **kwargs).to(device, dtype)
    ours = getattr(fused_rnn, name)(*args, backend=backend, **kwargs).to(device, dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _assert_same(ref, ours, forward_args, train, atol=1e-10):
    ref.train(train)
    ours.train(train)
    r_out, r_gin, r_gp, grads = _run(ref, _copy(forward_args))
    o_out, o_gin, o_gp, _ = _run(ours, _copy(forward_args), grads)
    for what, r, o in (("output", r_out, o_out), ("input grad", r_gin, o_gin),
                       ("parameter grad", r_gp, o_gp)):
        assert len(r) == len(o), what
        for a, b in zip(r, o):
            assert (a is None) == (b is None), what
            if a is not None:
                torch.testing.assert_close(b, a, atol=atol, rtol=1e-8, msg=what)


@pytest.mark.parametrize("name", LAYERS + CELLS)
def test_module_db_samples_match_torch(name):
    """Every sample of torch's module_db (float64; RNN and GRU with their packed samples): our
    class on the reference backend gives torch's outputs and gradients, in train and eval."""
    info = _info(name)
    samples = _samples(info)
    assert samples
    for s in samples:
        ref, ours = _pair(name, s.constructor_input.args, s.constructor_input.kwargs)
        for train in (True, False):
            _assert_same(ref, ours, s.forward_input.args, train)
            ref.zero_grad(set_to_none=True)
            ours.zero_grad(set_to_none=True)


@needs_triton
@pytest.mark.parametrize("name", LAYERS + CELLS)
def test_module_db_first_sample_on_triton(name, device_for):
    """The first (unbatched) sample of each entry through the Triton kernels."""
    s = _samples(_info(name))[0]
    ref, ours = _pair(name, s.constructor_input.args, s.constructor_input.kwargs,
                      backend="triton", device=device_for("triton"))
    args = _copy(s.forward_input.args)
    if device_for("triton") != "cpu":
        args = tuple(a.to("cuda") for a in args)
    _assert_same(ref, ours, args, train=True, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", LAYERS + CELLS)
def test_module_db_error_inputs(name, dtype):
    """Each error input raises torch's exception type, with a message matching torch's
    pattern, from our class as from torch's."""
    info = _info(name)
    from torch.testing._internal.common_modules import ModuleErrorEnum
    if info.module_error_inputs_func is None:
        pytest.skip(f"module_db has no error inputs for nn.{name}")
    errors = info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False,
                                           training=True)
    assert errors
    for e in errors:
        c, f = e.module_error_input.constructor_input, e.module_error_input.forward_input
        for cls in (getattr(nn, name), getattr(fused_rnn, name)):
            with pytest.raises(e.error_type, match=e.error_regex):
                m = cls(*c.args, **c.kwargs)
                if e.error_on == ModuleErrorEnum.FORWARD_ERROR:
                    m(*f.args, **f.kwargs)


@pytest.mark.parametrize("name", CELLS)
def test_cells_do_not_read_training(name):
    """As torch's cells (test_if_train_and_eval_modes_differ): without regularisation options a
    cell's forward never reads self.training, and train and eval give the same result."""
    s = _samples(_info(name), training=False)[0]
    m = getattr(fused_rnn, name)(*s.constructor_input.args, backend="reference",
                                 **s.constructor_input.kwargs).double()
    args = s.forward_input.args
    eval_out = m.eval()(*args)
    train_out = m.train()(*args)
    torch.testing.assert_close(train_out, eval_out, atol=0, rtol=0)
    delattr(m, "training")
    torch.testing.assert_close(m(*args), eval_out, atol=0, rtol=0)


def test_regularised_cell_still_uses_training():
    m = fused_rnn.GRUCell(3, 4, zoneout=0.5, backend="reference")
    x = torch.randn(2, 3)
    h = torch.randn(2, 4)
    assert not torch.equal(m.train()(x, h), m.eval()(x, h))


# ------------------------------------------------- exception types and torch's own wording

def test_input_error_is_both_value_and_runtime_error():
    assert issubclass(InputError, ValueError) and issubclass(InputError, RuntimeError)
    assert fused_rnn.functional.InputError is InputError


def _raise_both(name, make_args, **kw):
    """(torch's exception, ours) for one call of nn.<name> and fused_rnn.<name> with equal
    parameters."""
    torch.manual_seed(0)
    ref = getattr(nn, name)(**kw)
    ours = getattr(fused_rnn, name)(backend="reference", **kw)
    ours.load_state_dict(ref.state_dict())
    caught = []
    for m in (ref, ours):
        with pytest.raises(Exception) as info:
            m(*make_args())
        caught.append(info.value)
    return caught


I, H, L, B, T, BAD = 3, 5, 2, 4, 6, 7  # test_nn's sizes; BAD divides none of them
_LAYER_CASES = {
    # name: (input shape, h_0 shape (and c_0's for LSTM), torch's exception type)
    "input batch": ((T, BAD, I), (L, B, H)),
    "hidden batch": ((T, B, I), (L, BAD, H)),
    "input size": ((T, B, BAD), (L, B, H)),
    "hidden size": ((T, B, I), (L, B, BAD)),
    "hidden layers": ((T, B, I), (BAD, B, H)),
    "hidden rank": ((T, B, I), (B, H)),
    "unbatched hidden rank": ((T, I), (L, B, H)),
    "sequence length 0": ((0, B, I), (L, B, H)),
    "input rank 4": ((T, B, I, 1), (L, B, H)),
}


@pytest.mark.parametrize("case", list(_LAYER_CASES))
@pytest.mark.parametrize("mode", LAYERS)
def test_layer_errors_carry_torchs_type_and_message(mode, case):
    """Bad shapes (torch's test_rnn_args_check and more): our error is an instance of torch's
    exception type and its message contains torch's message word for word."""
    x_shape, h_shape = _LAYER_CASES[case]

    def args():
        x = torch.randn(x_shape)
        h = torch.randn(h_shape)
        return x, ((h, h.clone()) if mode == "LSTM" else h)
    theirs, ours = _raise_both(mode, args, input_size=I, hidden_size=H, num_layers=L)
    assert isinstance(ours, type(theirs)), (type(theirs), ours)
    assert isinstance(ours, InputError)
    assert str(theirs) in str(ours)


@pytest.mark.parametrize("which", [0, 1])
def test_lstm_cell_state_errors_name_hidden1(which):
    """LSTM: a bad c_0 is "hidden[1]" in torch's message, as ours."""
    def args():
        states = [torch.randn(L, B, H), torch.randn(L, B, H)]
        states[which] = torch.randn(L, B, H + 1)
        return torch.randn(T, B, I), tuple(states)
    theirs, ours = _raise_both("LSTM", args, input_size=I, hidden_size=H, num_layers=L)
    assert f"Expected hidden[{which}] size" in str(theirs)
    assert isinstance(ours, RuntimeError) and str(theirs) in str(ours)
    assert f"hx[{which}] (" in str(ours)  # and ours names the argument


@pytest.mark.parametrize("h_shape,c_shape", [
    ((L, BAD, 2), (L, BAD, H)), ((L, B, BAD), (L, B, H)), ((BAD, B, 2), (L, B, H)),
    ((L, B, H), (L, B, H)), ((L, B, 2), (BAD, B, H))])
def test_projections_lstm_args_check(h_shape, c_shape):
    """torch's test_projections_lstm_args_check: h_0 is (L, B, proj_size), c_0 (L, B, H)."""
    def args():
        return torch.randn(T, B, I), (torch.randn(h_shape), torch.randn(c_shape))
    theirs, ours = _raise_both("LSTM", args, input_size=I, hidden_size=H, num_layers=L,
                               proj_size=2)
    assert isinstance(theirs, RuntimeError) and isinstance(ours, RuntimeError)
    assert str(theirs) in str(ours)


def test_input_dtype_error_has_torchs_text():
    """torch raises ValueError here ("RNN input dtype ... does not match weight dtype ...")."""
    theirs, ours = _raise_both("GRU", lambda: (torch.randn(T, B, I, dtype=torch.float64),),
                               input_size=I, hidden_size=H)
    assert type(theirs) is ValueError and isinstance(ours, ValueError)
    assert str(theirs) in str(ours)
    assert str(ours).startswith("input: dtype torch.float64 does not match the weights' dtype")


_CELL_CASES = {
    # name: (input shape, state shape)
    "input size": ((B, BAD), (B, H)),
    "hidden size": ((B, I), (B, BAD)),
    "hidden batch": ((B, I), (BAD, H)),
    "broadcast batch": ((B, I), (1, H)),
    "broadcast hidden": ((B, I), (B, 1)),
    "broadcast input": ((B, 1), (B, H)),
    "input rank 3": ((1, B, I), (B, H)),
    "hidden rank 4": ((B, I), (B, 1, 1, H)),
}


@pytest.mark.parametrize("case", list(_CELL_CASES))
@pytest.mark.parametrize("name", CELLS)
def test_cell_errors_carry_torchs_type_and_message(name, case):
    """torch's test_RNN_cell_no_broadcasting and module_db's cell errors: no broadcasting of
    a batch or feature size of 1, torch's exception type and message (ATen's for sizes)."""
    x_shape, h_shape = _CELL_CASES[case]
    for which in ([0, 1] if name == "LSTMCell" else [0]):
        def args():
            h = [torch.randn(B, H), torch.randn(B, H)]
            h[which] = torch.randn(h_shape)
            return torch.randn(x_shape), (tuple(h) if name == "LSTMCell" else h[0])
        theirs, ours = _raise_both(name, args, input_size=I, hidden_size=H)
        assert isinstance(ours, type(theirs)), (type(theirs), ours)
        assert str(theirs) in str(ours), (str(theirs), str(ours))


def test_cudnn_forward_exception_patterns():
    """torch's test_cudnn_forward_exception (it runs on the CPU too)."""
    for m, hidden in [(fused_rnn.LSTM(10, 20, batch_first=True),
                       (torch.zeros(1, 2, 19), torch.zeros(1, 2, 19))),
                      (fused_rnn.LSTM(10, 20, batch_first=True, proj_size=10),
                       (torch.zeros(1, 2, 19), torch.zeros(1, 2, 19))),
                      (fused_rnn.GRU(10, 20, batch_first=True), torch.zeros(1, 2, 19)),
                      (fused_rnn.RNN(10, 20, batch_first=True), torch.zeros(1, 2, 19))]:
        with pytest.raises(RuntimeError, match="Expected hidden.*size.*got"):
            m(torch.randn(2, 3, 10), hidden)
        with pytest.raises(RuntimeError,
                           match=re.escape("input.size(-1) must be equal to input_size")):
            m(torch.randn(2, 3, 3))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode", LAYERS)
def test_sequence_length_zero_is_a_runtime_error(mode, bidirectional):
    """torch's test_error_RNN_seq_len_zero."""
    m = getattr(fused_rnn, mode)(5, 6, bidirectional=bidirectional, backend="reference")
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
        m(torch.ones(0, 10, 5))
    with pytest.raises(ValueError, match="input: sequence length must be at least 1"):
        m(torch.ones(0, 10, 5))


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("mode", LAYERS)
def test_batch_of_size_zero(mode, backend, device_for):
    """torch's test_RNN_input_size_zero: a batch of 0 gives empty outputs, and backward runs."""
    dev = device_for(backend)
    m = getattr(fused_rnn, mode)(input_size=3, hidden_size=4, backend=backend).to(dev)
    out, _ = m(torch.zeros((5, 0, 3), device=dev))
    assert out.shape == (5, 0, 4)
    out.sum().backward()


# ------------------------------------------------------------------------ second derivatives

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", LAYERS + CELLS)
def test_gradgrad_on_the_reference_backend(mode, bias):
    """torch's test_{LSTM,GRU}_grad_and_gradgrad, for every class: the reference backend is
    plain torch, so second derivatives exist and are right."""
    torch.manual_seed(1)
    m = getattr(fused_rnn, mode)(4, 4, bias=bias, backend="reference").double()
    x = torch.rand((1, 3, 4) if mode in LAYERS else (3, 4), dtype=torch.float64,
                   requires_grad=True)

    def f(x):
        return tuple(_tensors(m(x)))
    assert gradcheck(f, (x,), check_batched_grad=False)
    assert gradgradcheck(f, (x,), check_batched_grad=False)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "cuda"])
def test_double_backward_on_a_fused_backend_says_what_to_do(backend, device_for):
    """create_graph=True works for first-order use (the gradients match the reference
    backend's); differentiating those gradients again raises a RuntimeError that names the
    backend and says to use backend='reference'."""
    dev = device_for(backend)
    torch.manual_seed(2)
    fused = fused_rnn.GRU(3, 4, backend=backend).to(dev, torch.float64)
    ref = fused_rnn.GRU(3, 4, backend="reference").to(dev, torch.float64)
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(2, 2, 3, dtype=torch.float64, device=dev, requires_grad=True)
    g, = torch.autograd.grad(fused(x)[0].pow(2).sum(), x, create_graph=True)
    g_ref, = torch.autograd.grad(ref(x)[0].pow(2).sum(), x, create_graph=True)
    torch.testing.assert_close(g, g_ref)
    with pytest.raises(RuntimeError, match=rf"backend='{backend}' does not support double "
                                           rf"backward.*Use backend='reference'"):
        g.sum().backward()
    g_ref.sum().backward()  # the reference backend's second derivative exists
    assert x.grad is not None


# ------------------------------------------------------------------------------ other devices

@pytest.mark.parametrize("kw", [{}, dict(num_layers=2, bidirectional=True, batch_first=True)],
                         ids=["plain", "2-layer-bidir-batch-first"])
@pytest.mark.parametrize("mode", LAYERS + ["LSTM-proj"])
def test_meta_device_gives_torchs_shapes(mode, kw):
    """A module and input on the meta device: meta outputs of nn.LSTM's shapes (shape
    inference without data), padded, unbatched and packed."""
    name, extra = ("LSTM", dict(proj_size=2)) if mode == "LSTM-proj" else (mode, {})
    ref = getattr(nn, name)(3, 4, device="meta", **kw, **extra)
    ours = getattr(fused_rnn, name)(3, 4, device="meta", **kw, **extra)
    packed = pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    packed = PackedSequence(packed.data.to("meta"), packed.batch_sizes)
    for x in (torch.randn(5, 2, 3, device="meta"), torch.randn(5, 3, device="meta"), packed):
        want, got = _tensors(ref(x)), _tensors(ours(x))
        assert [t.shape for t in got] == [t.shape for t in want]
        assert all(t.is_meta for t in got)


@pytest.mark.parametrize("name", CELLS)
def test_meta_device_cells(name):
    ours = getattr(fused_rnn, name)(3, 4, device="meta")
    out = _tensors(ours(torch.randn(2, 3, device="meta")))
    assert [t.shape for t in out] == [(2, 4)] * len(out) and all(t.is_meta for t in out)


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_triton),
                                     "cuda"])
@pytest.mark.parametrize("name", CELLS)
def test_cells_with_hidden_size_zero(name, backend, device_for):
    """torch's test_RNN_cell_forward_zero_hidden_size, on every backend: (B, 0) results."""
    dev = device_for(backend)
    cell = getattr(fused_rnn, name)(10, 0, backend=backend).to(dev)
    x = torch.randn(3, 10, device=dev, requires_grad=True)
    hx = torch.randn(3, 0, device=dev)
    out = cell(x, (hx, hx) if name == "LSTMCell" else hx)
    for t in _tensors(out):
        assert t.shape == (3, 0) and t.device.type == dev
    sum(t.sum() for t in _tensors(out)).backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# ----------------------------------------------------------------- module state after __init__

def test_rnn_keeps_the_mode_it_was_built_with():
    """nn.RNN (torch 2.13) keeps `mode` from construction and forward follows mode: assigning
    nonlinearity afterwards changes nothing. Ours behaves the same."""
    torch.manual_seed(3)
    ref = nn.RNN(3, 4)
    ours = fused_rnn.RNN(3, 4, backend="reference")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3) * 3
    before = ours(x)[0]
    ref.nonlinearity = ours.nonlinearity = "relu"
    assert ours.mode == ref.mode == "RNN_TANH"
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    torch.testing.assert_close(ours(x)[0], before)


def test_rnn_cell_reads_nonlinearity_on_each_call():
    """nn.RNNCell, unlike nn.RNN, reads nonlinearity in every forward."""
    torch.manual_seed(4)
    ref = nn.RNNCell(3, 4)
    ours = fused_rnn.RNNCell(3, 4, backend="reference")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3) * 3
    ref.nonlinearity = ours.nonlinearity = "relu"
    torch.testing.assert_close(ours(x), ref(x))


def test_change_dropout_after_construction():
    """torch's test_RNN_change_dropout on the reference backend: the dropout attribute is read
    on each call; p = 0 or 1, or eval mode, is deterministic."""
    m = fused_rnn.RNN(20, 20, 2, dropout=0, nonlinearity="relu", backend="reference").double()
    x = torch.rand(3, 2, 20, dtype=torch.float64)
    for train in (True, False):
        m.train(train)
        for p in (0, 0.5, 1, 0.2, 0):
            m.dropout = p
            a, b = m(x)[0], m(x)[0]
            assert torch.equal(a, b) == (p in (0, 1) or not train), (train, p)
