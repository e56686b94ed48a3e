"""torch's own RNN implementation, called as nn.LSTM calls it: cuDNN on CUDA tensors, ATen's
native kernels elsewhere. It is the "cudnn" backend, kept for comparison and benchmarks."""
from torch import _VF
from torch.nn.utils.rnn import PackedSequence

_SEQ = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
_CELL = {"LSTM": _VF.lstm_cell, "GRU": _VF.gru_cell, "RNN_TANH": _VF.rnn_tanh_cell,
         "RNN_RELU": _VF.rnn_relu_cell}


def run_native(mode, x, h0, c0, weights, *, bias, num_layers, dropout, training, bidirectional):
    """x: (T, B, I) tensor or PackedSequence; h0 (L·D, B, H_out), c0 (L·D, B, H) or None, batch
    in the caller's order. Returns output (same kind as x), h_n, c_n (None unless LSTM)."""
    fn = _SEQ[mode]
    if isinstance(x, PackedSequence):
        # ATen expects the state in the packed (length-sorted) batch order.
        perm, unperm = x.sorted_indices, x.unsorted_indices
        if perm is not None:
            h0 = h0.index_select(1, perm)
            c0 = None if c0 is None else c0.index_select(1, perm)
        hx = (h0, c0) if mode == "LSTM" else h0
        res = fn(x.data, x.batch_sizes, hx, weights, bias, num_layers, dropout, training,
                 bidirectional)
        output = PackedSequence(res[0], x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    else:
        hx = (h0, c0) if mode == "LSTM" else h0
        res = fn(x, hx, weights, bias, num_layers, dropout, training, bidirectional, False)
        output, perm, unperm = res[0], None, None
    h_n, c_n = res[1], (res[2] if mode == "LSTM" else None)
    if unperm is not None:
        h_n = h_n.index_select(1, unperm)
        c_n = None if c_n is None else c_n.index_select(1, unperm)
    return output, h_n, c_n


def cell_native(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step of torch's cell: x (B, I), h (B, H), c (B, H) or None. Returns (h, c)."""
    if mode == "LSTM":
        return _VF.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    return _CELL[mode](x, h, w_ih, w_hh, b_ih, b_hh), None
