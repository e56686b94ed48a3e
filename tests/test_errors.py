"""Every bad input gets a clear error naming the argument, expected vs actual."""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import fused_rnn
from fused_rnn import functional as F

L, B, T, I, H = 2, 3, 5, 4, 6


def lstm(**kw):
    return fused_rnn.LSTM(I, H, L, backend="reference", **kw)


def x(*shape, **kw):
    return torch.randn(*(shape or (T, B, I)), **kw)


def states(*shape, dtype=torch.float32, device="cpu"):
    shape = shape or (L, B, H)
    return (torch.randn(shape, dtype=dtype, device=device),
            torch.randn(shape, dtype=dtype, device=device))


CASES = {
    # name: (call, exception type, pattern the message must match)
    "input rank 4": (lambda: lstm()(x(T, B, I, 1)), ValueError, r"input: .*3-D .*got 4-D"),
    "input rank 1": (lambda: lstm()(x(I)), ValueError, r"input: .*2-D .*got 1-D"),
    "input not a tensor": (lambda: lstm()([1.0, 2.0]), TypeError, r"input: .*got list"),
    "input integer": (lambda: lstm()(torch.ones(T, B, I, dtype=torch.long)), ValueError,
                      r"input: expected a floating-point tensor, got dtype torch.int64"),
    "input features": (lambda: lstm()(x(T, B, I + 1)), ValueError,
                       r"input: expected input_size=4 .*got shape \(5, 3, 5\)"),
    "packed features": (lambda: lstm()(pack_sequence([x(3, I + 2), x(2, I + 2)])), ValueError,
                        r"input: expected input_size=4"),
    "input dtype vs weights": (lambda: lstm()(x(dtype=torch.float64)), ValueError,
                               r"input: dtype torch.float64 does not match the weights' dtype "
                               r"torch.float32"),
    "input device vs weights": (lambda: lstm()(x(device="meta")), ValueError,
                                r"input: is on meta but the weights are on cpu"),
    "T = 0": (lambda: lstm()(x(0, B, I)), ValueError,
              r"input: sequence length must be at least 1, got 0"),
    "T = 0 batch_first": (lambda: lstm(batch_first=True)(x(B, 0, I)), ValueError,
                          r"input: sequence length must be at least 1"),
    "h0 shape": (lambda: lstm()(x(), states(L, B + 1, H)), ValueError,
                 r"hx\[0\] \(h_0\): expected shape \(2, 3, 6\), got \(2, 4, 6\)"),
    "c0 shape": (lambda: lstm()(x(), (states()[0], torch.randn(L, B, H + 1))), ValueError,
                 r"hx\[1\] \(c_0\): expected shape \(2, 3, 6\), got \(2, 3, 7\)"),
    "h0 dtype": (lambda: lstm()(x(), states(dtype=torch.float64)), ValueError,
                 r"hx\[0\] \(h_0\): expected dtype torch.float32 .*got torch.float64"),
    "h0 device": (lambda: lstm()(x(), states(device="meta")), ValueError,
                  r"hx\[0\] \(h_0\): expected device cpu .*got meta"),
    "hx not a pair": (lambda: lstm()(x(), torch.randn(L, B, H)), TypeError,
                      r"hx: expected a tuple \(h_0, c_0\)"),
    "hx element not a tensor": (lambda: lstm()(x(), (None, None)), TypeError,
                                r"hx\[0\] \(h_0\): expected a Tensor, got NoneType"),
    "unbatched input, batched hx": (lambda: lstm()(x(T, I), states()), ValueError,
                                    r"hx\[0\] \(h_0\): for unbatched \(2-D\) input expected a "
                                    r"2-D state of shape \(2, 6\), got shape \(2, 3, 6\)"),
    "proj h0 shape": (lambda: lstm(proj_size=2)(x(), states()), ValueError,
                      r"hx\[0\] \(h_0\): expected shape \(2, 3, 2\), got \(2, 3, 6\)"),
    "gru hx shape": (lambda: fused_rnn.GRU(I, H)(x(), torch.randn(2, B, H)), ValueError,
                     r"hx \(h_0\): expected shape \(1, 3, 6\), got \(2, 3, 6\)"),
    "packed hx batch": (lambda: lstm()(pack_sequence([x(3, I), x(2, I)]), states()), ValueError,
                        r"hx\[0\] \(h_0\): expected shape \(2, 2, 6\), got \(2, 3, 6\)"),
    "unknown backend (module)": (lambda: fused_rnn.GRU(I, H, backend="fastest"), ValueError,
                                 r"backend: expected one of .*got 'fastest'"),
    "unknown backend (functional)": (
        lambda: F.lstm(x(), list(nn.LSTM(I, H)._flat_weights), backend=None), ValueError,
        r"backend: expected one of .*got None"),
    "triton on CPU tensors": (lambda: fused_rnn.LSTM(I, H, backend="triton")(x()), RuntimeError,
                              r"backend='triton' cannot run this call: it runs on CUDA "
                              r"tensors \(or on the CPU under TRITON_INTERPRET=1\), and the "
                              r"input is on cpu"),
    "cuda on CPU tensors": (lambda: fused_rnn.RNN(I, H, backend="cuda")(x()), RuntimeError,
                            r"backend='cuda' cannot run this call"),
    "weights count": (lambda: F.lstm(x(), list(nn.LSTM(I, H)._flat_weights)[:3]), ValueError,
                      r"weights: expected 4 tensors .*got 3"),
    "weight shape": (lambda: F.gru(x(), [torch.randn(3 * H, I), torch.randn(3 * H, H + 1)],
                                   bias=False), ValueError,
                     r"weights\[1\] \(weight_hh_l0\): expected shape \(18, 6\), got \(18, 7\)"),
    "weights not tensors": (lambda: F.rnn(x(), "weights"), TypeError, r"weights: expected"),
    "num_layers": (lambda: F.lstm(x(), list(nn.LSTM(I, H)._flat_weights), num_layers=0),
                   ValueError, r"num_layers: expected an int >= 1, got 0"),
    "dropout": (lambda: F.gru(x(), list(nn.GRU(I, H)._flat_weights), dropout=1.5), ValueError,
                r"dropout: expected a number in \[0, 1\], got 1.5"),
    "proj_size on GRU": (lambda: F._rnn("GRU", x(), list(nn.GRU(I, H)._flat_weights), None,
                                        bias=True, num_layers=1, batch_first=False, dropout=0.0,
                                        training=False, bidirectional=False, proj_size=2,
                                        backend="auto"), ValueError,
                         r"proj_size: only LSTM"),
    "nonlinearity": (lambda: F.rnn(x(), list(nn.RNN(I, H)._flat_weights), nonlinearity="gelu"),
                     ValueError, r"nonlinearity: expected 'tanh' or 'relu', got 'gelu'"),
    "bidirectional not bool": (lambda: F.gru(x(), list(nn.GRU(I, H)._flat_weights),
                                             bidirectional=1), ValueError,
                               r"bidirectional: expected a bool, got 1"),
    # Cells
    "cell input rank": (lambda: fused_rnn.LSTMCell(I, H)(x(2, 3, I)), ValueError,
                        r"input: expected a 2-D \(batch, input_size\) or 1-D"),
    "cell input features": (lambda: fused_rnn.GRUCell(I, H)(x(3, I + 1)), ValueError,
                            r"input: expected input_size=4"),
    "cell hx batch": (lambda: fused_rnn.LSTMCell(I, H)(x(3, I), states(2, H)), ValueError,
                      r"hx\[0\] \(h\): expected shape \(3, 6\), got \(2, 6\)"),
    "cell hx not a pair": (lambda: fused_rnn.LSTMCell(I, H)(x(3, I), torch.randn(3, H)),
                           TypeError, r"hx: expected a tuple \(h, c\)"),
    "cell hx dtype": (lambda: fused_rnn.RNNCell(I, H)(x(3, I), torch.randn(3, H).double()),
                      ValueError, r"hx \(h\): expected dtype torch.float32"),
    "cell unbatched hx": (lambda: fused_rnn.GRUCell(I, H)(x(I), torch.randn(1, H)), ValueError,
                          r"hx \(h\): expected shape \(6,\), got \(1, 6\)"),
    "cell input dtype": (lambda: fused_rnn.RNNCell(I, H)(x(3, I).double()), ValueError,
                         r"input: dtype torch.float64 does not match"),
    "cell w_hh shape": (lambda: F.lstm_cell(x(3, I), None, torch.randn(4 * H, I),
                                            torch.randn(4 * H, H + 2)), ValueError,
                        r"^w_hh: expected shape \(24, 6\), got \(24, 8\)"),
    "cell w_ih None": (lambda: F.gru_cell(x(3, I), None, None, torch.randn(3 * H, H)),
                       TypeError, r"^w_ih: expected a Tensor, got NoneType"),
    "hx tuple of 1": (lambda: lstm()(x(), (torch.randn(L, B, H),)), TypeError,
                      r"hx: expected a tuple \(h_0, c_0\) of two tensors for LSTM, "
                      r"got a tuple of 1"),
    "cell one bias": (lambda: F.lstm_cell(x(3, I), None, torch.randn(4 * H, I),
                                          torch.randn(4 * H, H), torch.randn(4 * H)),
                      ValueError, r"b_ih, b_hh: expected both or neither"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_clear_error(name, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # triton on CPU tensors: an error
    call, exc, pattern = CASES[name]
    with pytest.raises(exc, match=pattern):
        call()


def test_torch_raises_for_the_same_inputs():
    # We raise where nn.LSTM raises (T=0, feature size, hidden size) and an exception of its
    # type (RuntimeError), which is also the ValueError we raised before: the modules stay
    # drop-ins and old callers keep working.
    ref, ours = nn.LSTM(I, H, L), lstm()
    for args in ((x(0, B, I),), (x(T, B, I + 1),), (x(), states(L, B + 1, H))):
        with pytest.raises(RuntimeError):
            ref(*args)
        with pytest.raises(F.InputError) as info:
            ours(*args)
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)


def packed(batch_sizes, rows=None, sorted_indices=None, unsorted_indices=None):
    """A PackedSequence built by hand (the constructor checks none of this)."""
    batch_sizes = torch.tensor(batch_sizes)
    rows = int(batch_sizes.sum()) if rows is None else rows
    idx = [None if i is None else torch.tensor(i) for i in (sorted_indices, unsorted_indices)]
    return PackedSequence(torch.randn(rows, I), batch_sizes, *idx)


PACKED_CASES = {
    # name: (PackedSequence, pattern the message must match)
    "data rows != sum(batch_sizes)": (packed([2, 2, 1], rows=4),
                                      r"^input.data: expected sum\(batch_sizes\) = 5 rows, got 4"),
    "increasing batch_sizes": (packed([2, 3, 1]),
                               r"^input.batch_sizes: expected non-increasing sizes .*got 3 at "
                               r"step 1 after 2 \(batch_sizes \[2, 3, 1\]\)"),
    "zero batch size": (packed([2, 0]), r"^input.batch_sizes: expected positive sizes, got 0 "
                                        r"at step 1"),
    "negative batch size": (packed([2, -1]), r"^input.batch_sizes: expected positive sizes, "
                                             r"got -1"),
    "empty batch_sizes": (packed([], rows=0), r"^input.batch_sizes: expected a non-empty 1-D "
                                              r"integer tensor"),
    "float batch_sizes": (PackedSequence(torch.randn(3, I), torch.tensor([2.0, 1.0])),
                          r"^input.batch_sizes: expected a non-empty 1-D integer tensor .*got "
                          r"a 1-D torch.float32"),
    "sorted_indices out of range": (packed([2, 1], sorted_indices=[0, 2],
                                           unsorted_indices=[0, 1]),
                                    r"^input.sorted_indices: expected a permutation of "
                                    r"range\(2\), got \[0, 2\]"),
    "sorted_indices repeated": (packed([3, 1], sorted_indices=[1, 1, 0],
                                       unsorted_indices=[2, 0, 1]),
                                r"^input.sorted_indices: expected a permutation of range\(3\), "
                                r"got \[1, 1, 0\]"),
    "sorted_indices length": (packed([2, 1], sorted_indices=[0, 1, 2]),
                              r"^input.sorted_indices: expected a 1-D integer tensor of 2 "
                              r"indices \(batch_sizes\[0\]\), got shape \(3,\)"),
    "unsorted_indices not the inverse": (packed([3, 1], sorted_indices=[1, 2, 0],
                                                unsorted_indices=[1, 2, 0]),
                                         r"^input.unsorted_indices: expected the inverse of "
                                         r"sorted_indices \[1, 2, 0\], got \[1, 2, 0\]"),
}


@pytest.mark.parametrize("name", list(PACKED_CASES))
def test_malformed_packed_sequence(name):
    seq, pattern = PACKED_CASES[name]
    with pytest.raises(F.InputError, match=pattern):
        lstm()(seq)


def test_hand_built_packed_sequence_that_is_consistent_runs():
    seq = packed([3, 2, 2], sorted_indices=[2, 0, 1], unsorted_indices=[1, 2, 0])
    out, _ = lstm()(seq)
    assert out.data.shape == (7, H) and torch.equal(out.batch_sizes, seq.batch_sizes)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_weight_of_another_dtype_is_named(name):
    """A cell whose weight_ih was replaced by one of another dtype: the error names weight_ih
    (the odd one out), not the weights that still agree with each other."""
    cell = getattr(fused_rnn, name)(I, H, backend="reference")
    cell.weight_ih = nn.Parameter(cell.weight_ih.detach().double())
    with pytest.raises(F.InputError, match=r"^weight_ih: expected dtype torch.float32 on cpu like "
                                           r"weight_hh .*got torch.float64 on cpu"):
        cell(x(3, I))
    # without biases the two weights tie: the message still names both
    cell = getattr(fused_rnn, name)(I, H, bias=False, backend="reference")
    cell.weight_ih = nn.Parameter(cell.weight_ih.detach().double())
    with pytest.raises(F.InputError, match=r"^weight_hh: .* like weight_ih"):
        cell(x(3, I))


def test_layer_weight_of_another_dtype_is_named():
    m = lstm()
    m.weight_hh_l1 = nn.Parameter(m.weight_hh_l1.detach().double())
    with pytest.raises(F.InputError, match=r"^weights\[5\] \(weight_hh_l1\): expected dtype "
                                           r"torch.float32 on cpu like weights\[0\] "
                                           r"\(weight_ih_l0\).*got torch.float64"):
        m(x())


def test_device_errors_carry_torchs_wording():
    with pytest.raises(RuntimeError, match=r"Input and parameter tensors are not at the same "
                                           r"device, found input tensor at meta and parameter "
                                           r"tensor at cpu"):
        lstm()(x(device="meta"))
    with pytest.raises(RuntimeError, match=r"Input and hidden tensors are not at the same device"
                                           r", found input tensor at cpu and hidden tensor at "
                                           r"meta"):
        fused_rnn.GRU(I, H, L, backend="reference")(x(), torch.randn(L, B, H, device="meta"))
