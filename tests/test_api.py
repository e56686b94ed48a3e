"""The public surface: exports, nn.LSTM drop-in properties, the backend keyword."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

import fused_rnn
from fused_rnn import backends

PAIRS = [(fused_rnn.LSTM, nn.LSTM), (fused_rnn.GRU, nn.GRU), (fused_rnn.RNN, nn.RNN)]
CELL_PAIRS = [(fused_rnn.LSTMCell, nn.LSTMCell), (fused_rnn.GRUCell, nn.GRUCell),
              (fused_rnn.RNNCell, nn.RNNCell)]


def test_exports():
    for name in ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "functional",
                 "__version__"]:
        assert hasattr(fused_rnn, name), name
    for name in ["lstm", "gru", "rnn"]:
        assert callable(getattr(fused_rnn.functional, name))
    assert isinstance(fused_rnn.__version__, str) and fused_rnn.__version__.count(".") == 2


def _kwargs(base):
    kw = dict(num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True,
              dtype=torch.float64)
    if base is nn.LSTM:
        kw["proj_size"] = 3
    if base is nn.RNN:
        kw["nonlinearity"] = "relu"
    return kw


@pytest.mark.parametrize("ours,base", PAIRS)
def test_module_is_a_drop_in(ours, base):
    kw = _kwargs(base)
    torch.manual_seed(3)
    m = ours(5, 7, backend="reference", **kw)
    torch.manual_seed(3)
    ref = base(5, 7, **kw)
    assert isinstance(m, base)
    # Same names, shapes and initialisation (same seed gives the same values).
    assert list(m.state_dict()) == list(ref.state_dict())
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert p.shape == q.shape and p.dtype == q.dtype and torch.equal(p, q), n
    for attr in ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "mode"]:
        assert getattr(m, attr) == getattr(ref, attr), attr
    # state_dict moves both ways, strictly.
    other = base(5, 7, **kw)
    other.load_state_dict(m.state_dict(), strict=True)
    m.load_state_dict(ref.state_dict(), strict=True)
    assert m.backend == "reference"
    assert "backend='reference'" in repr(m)


@pytest.mark.parametrize("ours,base", CELL_PAIRS)
def test_cell_is_a_drop_in(ours, base):
    torch.manual_seed(4)
    m = ours(5, 7, bias=False, backend="cudnn")
    torch.manual_seed(4)
    ref = base(5, 7, bias=False)
    assert isinstance(m, base)
    assert list(m.state_dict()) == list(ref.state_dict())
    for p, q in zip(m.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    base(5, 7, bias=False).load_state_dict(m.state_dict(), strict=True)


def test_positional_arguments_as_nn():
    # nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
    m = fused_rnn.LSTM(3, 4, 2, False, True, 0.0, True)
    assert (m.num_layers, m.bias, m.batch_first, m.bidirectional) == (2, False, True, True)
    r = fused_rnn.RNN(3, 4, 1, "relu")
    assert r.nonlinearity == "relu"


@pytest.mark.parametrize("ours,base", PAIRS + CELL_PAIRS)
def test_backend_keyword(ours, base):
    for name in backends.NAMES:
        assert ours(2, 3, backend=name).backend == name
    with pytest.raises(ValueError, match="backend"):
        ours(2, 3, backend="cuDNN")
    m = ours(2, 3)
    assert m.backend == "auto"
    with pytest.raises(ValueError, match="backend: expected one of"):
        m.backend = "fast"


@pytest.mark.parametrize("ours,base", PAIRS)
def test_pickle_and_deepcopy_keep_backend(ours, base):
    m = ours(2, 3, backend="reference")
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert type(clone) is ours and clone.backend == "reference"
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    base(2, 3).load_state_dict(torch.load(buf), strict=True)


def test_auto_picks_reference_on_cpu():
    assert backends.resolve("auto", torch.device("cpu")) == "reference"


@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_gpu_backend_on_cpu_tensors_says_why(name, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # without the CPU interpreter
    m = fused_rnn.LSTM(3, 4, backend=name)
    with pytest.raises(RuntimeError, match=rf"backend='{name}' cannot run this call: .*CUDA.*cpu"):
        m(torch.randn(2, 1, 3))
    cell = fused_rnn.GRUCell(3, 4, backend=name)
    with pytest.raises(RuntimeError, match=rf"backend='{name}'"):
        cell(torch.randn(1, 3))


def test_auto_skips_a_cuda_extension_that_fails_to_build(monkeypatch):
    """On a CUDA device whose extension does not build, "auto" warns once and takes the next
    fused backend instead of failing the call."""
    from fused_rnn.ops.cuda import extension

    def fail(_emulate):
        raise RuntimeError("building fused_rnn's CUDA extension failed (test)")
    monkeypatch.setattr(backends, "why_not", lambda b, d, t=None: None)
    monkeypatch.setattr(extension, "_load", fail)
    monkeypatch.setattr(backends, "_ext_failure_warned", [])
    with pytest.warns(RuntimeWarning, match="'auto' skips 'cuda': building"):
        assert backends.resolve("auto", torch.device("cuda")) == "triton"
    assert backends.resolve("auto", torch.device("cuda")) == "triton"  # warned once only
