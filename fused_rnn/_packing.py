"""PackedSequence <-> padded time-major tensors, keeping the batch in the caller's order.

The recurrence works on padded (T, B, F) tensors with per-sequence lengths and masks the steps
past each length, as the kernels do. Working in the caller's original batch order means hx and
h_n need no permutation; the packed layout is rebuilt with the input's own sorted_indices, so the
output PackedSequence has exactly the layout nn.LSTM returns.
"""
import torch
from torch.nn.utils.rnn import PackedSequence


def layout_index(seq: PackedSequence):
    """(time, batch) index of every row of seq.data, batch in the original order."""
    batch_sizes = seq.batch_sizes.to(seq.data.device)
    steps = torch.arange(batch_sizes.numel(), device=seq.data.device)
    # output_size: no host sync on CUDA, and meta tensors (shape inference) need it
    t_idx = torch.repeat_interleave(steps, batch_sizes, output_size=seq.data.shape[0])
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    j_idx = torch.arange(t_idx.numel(), device=seq.data.device) - starts[t_idx]
    b_idx = seq.sorted_indices[j_idx] if seq.sorted_indices is not None else j_idx
    return t_idx, b_idx


def lengths(seq: PackedSequence) -> torch.Tensor:
    """Length of each sequence, (B,) int64 on seq.data's device, in the original batch order."""
    batch_sizes = seq.batch_sizes.to(seq.data.device)
    batch = int(seq.batch_sizes[0])
    slot = torch.arange(batch, device=seq.data.device)
    sorted_lengths = (batch_sizes[None, :] > slot[:, None]).sum(1)
    if seq.sorted_indices is None:
        return sorted_lengths
    return torch.empty_like(sorted_lengths).scatter_(0, seq.sorted_indices, sorted_lengths)


def unpack(seq: PackedSequence, idx=None) -> torch.Tensor:
    """seq as a zero-padded (T, B, F) tensor, B in the original order (differentiable). idx:
    layout_index(seq) (or the CUDA binding's packed_index, the same indices), if the caller has
    it (a call that unpacks and packs computes it once)."""
    t_idx, b_idx = idx if idx is not None else layout_index(seq)
    T, B = seq.batch_sizes.numel(), int(seq.batch_sizes[0])
    # Zeros, not poison: padded steps are masked out of the recurrence, but they still enter the
    # input GEMM and its weight gradient (0 * NaN would be NaN).
    padded = seq.data.new_zeros((T, B) + tuple(seq.data.shape[1:]))
    return padded.index_put((t_idx, b_idx), seq.data)


def pack_like(padded: torch.Tensor, seq: PackedSequence, idx=None) -> PackedSequence:
    """Pack a (T, B, F) tensor with the layout (batch_sizes, sorted order) of seq."""
    t_idx, b_idx = idx if idx is not None else layout_index(seq)
    return PackedSequence(padded[t_idx, b_idx], seq.batch_sizes, seq.sorted_indices,
                          seq.unsorted_indices)
