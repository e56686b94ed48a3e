"""The argument checks of the functional interface (fused_rnn/functional.py): shapes, ranks,
dtypes and devices of the input, the states and the weights, PackedSequence fields, options.

A tensor that does not fit the call raises InputError, which is both ValueError and
RuntimeError: torch.nn's RNNs raise RuntimeError for most of these, so code written against
either keeps working. Each message names the argument and gives expected vs actual, then
torch's own wording in parentheses where torch has one (e.g. "Expected hidden size (1, 3, 6),
got [2, 3, 6]"), so callers that match torch's messages keep matching.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .ops.cells import GATES

# torch.nn's class names of the modes, for torch's own wording in the messages.
TORCH_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


class InputError(ValueError, RuntimeError):
    """A tensor argument (input, state, weight, or a PackedSequence's fields) whose size, rank,
    dtype or device does not fit the call, or a sequence of length 0. It is a ValueError, what
    fused_rnn raised for these before, and a RuntimeError, what torch.nn.LSTM/GRU/RNN and the
    cells raise for most of them, so `except` clauses written for either catch it."""


def shape_of(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def autocast_mixes(a: Tensor, b: Tensor) -> bool:
    """Whether CUDA autocast will cast a and b to one dtype, so theirs may differ: as with
    nn.LSTM, a state that came back in float16 may go in again beside a float32 input."""
    return a.device.type == b.device.type == "cuda" and torch.is_autocast_enabled("cuda") \
        and a.dtype in AUTOCAST_DTYPES and b.dtype in AUTOCAST_DTYPES


def torch_says(note: Optional[str]) -> str:
    """torch's own message for the same error, appended to ours."""
    return f" ({note})" if note else ""


def check_shape(name: str, t, shape, size_note: Optional[str] = None):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if shape_of(t) != tuple(shape):
        raise InputError(f"{name}: expected shape {tuple(shape)}, got {shape_of(t)}"
                         f"{torch_says(size_note)}")


def check_tensor(name: str, t, shape, like: Tensor, size_note: Optional[str] = None):
    """A state: t must be a tensor of exactly `shape` with like's (the input's) dtype (or one
    autocast casts to it) and device. size_note: torch's message for a wrong shape."""
    check_shape(name, t, shape, size_note)
    if t.dtype != like.dtype and not autocast_mixes(t, like):
        raise InputError(f"{name}: expected dtype {like.dtype} (the input's), got {t.dtype}")
    if t.device != like.device:
        raise InputError(f"{name}: expected device {like.device} (the input's), got {t.device}"
                         f" (Input and hidden tensors are not at the same device, found input "
                         f"tensor at {like.device} and hidden tensor at {t.device})")


def check_options(mode, num_layers, dropout, proj_size, bidirectional, bias, batch_first):
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers: expected an int >= 1, got {num_layers!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout <= 1:
        raise ValueError(f"dropout: expected a number in [0, 1], got {dropout!r}")
    if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
        raise ValueError(f"proj_size: expected an int >= 0, got {proj_size!r}")
    if proj_size and mode != "LSTM":
        raise ValueError(f"proj_size: only LSTM supports a projection, got {proj_size} for {mode}")
    for name, value in (("bidirectional", bidirectional), ("bias", bias),
                        ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected a bool, got {value!r}")


def check_weights(mode, weights, *, num_layers, bidirectional, bias, proj_size, labels=None):
    """Check count, shapes, dtype and device of the flat weight list (nn.LSTM._flat_weights
    order). labels name the weights in messages (the cells' w_ih, w_hh, b_ih, b_hh); by
    default "weights[k] (weight_hh_l0)". Returns (input_size, hidden_size)."""
    D = 2 if bidirectional else 1
    per = 2 + 2 * bias + (proj_size > 0)
    if labels is not None:
        for label, w in zip(labels, weights):
            if not isinstance(w, Tensor):
                raise TypeError(f"{label}: expected a Tensor, got {type(w).__name__}")
    if not isinstance(weights, (list, tuple)) or not all(isinstance(w, Tensor) for w in weights):
        raise TypeError("weights: expected a list of Tensors (nn.LSTM._flat_weights order)")
    if len(weights) != num_layers * D * per:
        raise InputError(
            f"weights: expected {num_layers * D * per} tensors for num_layers={num_layers}, "
            f"bidirectional={bidirectional}, bias={bias}, proj_size={proj_size}, "
            f"got {len(weights)}")
    G = GATES[mode]
    labels = labels or weight_labels(num_layers, D, bias, proj_size)
    check_same_kind(weights, labels)
    w0 = weights[0]
    if w0.dim() != 2 or w0.shape[0] % G:
        raise InputError(f"{labels[0]}: expected shape ({G}*hidden_size, input_size), "
                         f"got {shape_of(w0)}")
    H, I = w0.shape[0] // G, w0.shape[1]
    H_out = proj_size or H
    if proj_size >= H and proj_size:
        raise ValueError(f"proj_size: expected < hidden_size={H}, got {proj_size}")
    for k in range(num_layers * D):
        expected = [(G * H, I if k < D else D * H_out), (G * H, H_out)]
        if bias:
            expected += [(G * H,), (G * H,)]
        if proj_size:
            expected += [(proj_size, H)]
        for j, shape in enumerate(expected):
            w = weights[k * per + j]
            if shape_of(w) != shape:
                raise InputError(f"{labels[k * per + j]}: expected shape {shape}, "
                                 f"got {shape_of(w)}")
    return I, H


def weight_labels(num_layers, D, bias, proj_size):
    """"weights[k] (weight_hh_l0)" for each weight, in nn.LSTM._flat_weights order."""
    names = ["weight_ih", "weight_hh"] + ["bias_ih", "bias_hh"] * bias + ["weight_hr"] * (
        proj_size > 0)
    labels = []
    for k in range(num_layers * D):
        tag = f"_l{k // D}" + ("_reverse" if k % D else "")
        for name in names:
            labels.append(f"weights[{len(labels)}] ({name}{tag})")
    return labels


def check_same_kind(weights, labels):
    """Every weight must have one dtype and device. The message names the odd one out (one
    that differs from most of the others) and the weight it differs from."""
    kinds = [(w.dtype, w.device) for w in weights]
    if all(kind == kinds[0] for kind in kinds):  # (the only branch torch.compile traces)
        return
    counts = [kinds.count(kind) for kind in kinds]
    common = kinds[counts.index(max(counts))]  # ties: the first weight's kind
    odd = next(k for k, kind in enumerate(kinds) if kind != common)
    ref = kinds.index(common)
    raise InputError(f"{labels[odd]}: expected dtype {common[0]} on {common[1]} like "
                     f"{labels[ref]} (every weight must have one dtype and device), got "
                     f"{kinds[odd][0]} on {kinds[odd][1]}")


def check_data(data: Tensor, *, input_size, weight: Tensor, cell: bool = False):
    """dtype, device and feature size of the input tensor (or a PackedSequence's data); cell:
    torch's wording is that of the cells (ATen's) rather than nn.RNNBase.check_input's."""
    if not data.is_floating_point():
        raise ValueError(f"input: expected a floating-point tensor, got dtype {data.dtype}")
    if data.dtype != weight.dtype and not autocast_mixes(data, weight):
        raise InputError(
            f"input: dtype {data.dtype} does not match the weights' dtype {weight.dtype}"
            + ("" if cell else torch_says(
                f"RNN input dtype ({data.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: "
                f"model.to({data.dtype})")))
    if data.device != weight.device:
        raise InputError(f"input: is on {data.device} but the weights are on {weight.device} "
                         f"(Input and parameter tensors are not at the same device, found "
                         f"input tensor at {data.device} and parameter tensor at "
                         f"{weight.device})")
    check_input_size(data, input_size, cell)


def check_input_size(data: Tensor, input_size: int, cell: bool = False):
    if data.shape[-1] != input_size:
        got = data.shape[-1]
        note = (f"input has inconsistent input_size: got {got} expected {input_size}" if cell
                else f"input.size(-1) must be equal to input_size. Expected {input_size}, "
                     f"got {got}")
        raise InputError(f"input: expected input_size={input_size} in the last dimension, "
                         f"got shape {shape_of(data)}{torch_says(note)}")


def check_input(input, *, input_size, weight: Tensor, batch_first: bool, mode: str = "LSTM"):
    """Returns (x, seq, unbatched): x the time-major (T, B, I) tensor (None when packed), seq the
    PackedSequence (or None)."""
    if isinstance(input, PackedSequence):
        if not isinstance(input.data, Tensor) or input.data.dim() != 2:
            raise InputError(f"input: expected a PackedSequence's data to be 2-D "
                             f"(total_length, input_size), got {describe_tensor(input.data)}")
        check_data(input.data, input_size=input_size, weight=weight)
        check_packed(input)
        return None, input, False
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor or PackedSequence, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise InputError(f"input: expected a 3-D (batched) or 2-D (unbatched) tensor, got "
                         f"{input.dim()}-D with shape {shape_of(input)} ({TORCH_NAMES[mode]}: "
                         f"Expected input to be 2D or 3D, got {input.dim()}D"
                         f"{' tensor' if TORCH_NAMES[mode] == 'RNN' else ''} instead)")
    check_data(input, input_size=input_size, weight=weight)
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if batch_first else input)
    if x.shape[0] == 0:
        raise InputError(f"input: sequence length must be at least 1, got 0 (shape "
                         f"{shape_of(input)}) (Expected sequence length to be larger than 0 in "
                         f"RNN)")
    return x, None, unbatched


def describe_tensor(t) -> str:
    return f"shape {shape_of(t)}" if isinstance(t, Tensor) else type(t).__name__


def preview(values, n: int = 8) -> str:
    """A list for a message, cut to its first n entries."""
    values = list(values)
    return str(values) if len(values) <= n else f"[{', '.join(map(str, values[:n]))}, ...]"


def check_packed(seq: PackedSequence):
    """A PackedSequence built by hand (pack_padded_sequence and pack_sequence always build
    consistent ones) must be consistent: batch_sizes a non-empty 1-D integer CPU tensor of
    positive, non-increasing sizes whose sum is data's length, sorted_indices a permutation of
    range(batch_sizes[0]) and unsorted_indices its inverse. The index checks read the indices'
    values, so they run on CPU indices only: on CUDA they would cost a host sync per call, which
    a CUDA-graph capture refuses; under torch.compile and on the meta device there are no values
    to read."""
    sizes = seq.batch_sizes
    if not isinstance(sizes, Tensor) or sizes.dim() != 1 or sizes.numel() == 0 \
            or sizes.is_floating_point() or sizes.is_complex() or sizes.device.type != "cpu":
        got = (f"{sizes.dim()}-D {sizes.dtype} tensor of shape {shape_of(sizes)} on "
               f"{sizes.device}" if isinstance(sizes, Tensor) else type(sizes).__name__)
        raise InputError(f"input.batch_sizes: expected a non-empty 1-D integer tensor on the "
                         f"cpu (one batch size per time step), got a {got}")
    if torch.compiler.is_compiling():
        return
    b = sizes.tolist()
    if min(b) < 1:
        k = next(k for k, v in enumerate(b) if v < 1)
        raise InputError(f"input.batch_sizes: expected positive sizes, got {b[k]} at step {k} "
                         f"(batch_sizes {preview(b)})")
    k = next((k for k in range(1, len(b)) if b[k] > b[k - 1]), None)
    if k is not None:
        raise InputError(f"input.batch_sizes: expected non-increasing sizes (sequences sorted "
                         f"by decreasing length), got {b[k]} at step {k} after {b[k - 1]} "
                         f"(batch_sizes {preview(b)})")
    if seq.data.shape[0] != sum(b):
        raise InputError(f"input.data: expected sum(batch_sizes) = {sum(b)} rows, got "
                         f"{seq.data.shape[0]} (shape {shape_of(seq.data)})")
    B = b[0]
    named = [(name, idx) for name, idx in (("sorted_indices", seq.sorted_indices),
                                           ("unsorted_indices", seq.unsorted_indices))
             if idx is not None]
    for name, idx in named:
        if not isinstance(idx, Tensor) or idx.dim() != 1 or idx.numel() != B \
                or idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise InputError(f"input.{name}: expected a 1-D integer tensor of {B} indices "
                             f"(batch_sizes[0]), got {describe_tensor(idx)}"
                             + (f" of {idx.dtype}" if isinstance(idx, Tensor) else ""))
    named = [(name, idx) for name, idx in named if idx.device.type == "cpu"]
    if not named:
        return
    step = torch.arange(B)
    bad = [bool((torch.sort(idx).values != step).any()) for _, idx in named]
    si, ui = seq.sorted_indices, seq.unsorted_indices
    if len(named) == 2:  # both on the CPU: unsorted_indices must undo sorted_indices
        bad.append(bool((si[ui.clamp(0, B - 1)] != step).any()))
    if not any(bad):
        return
    for (name, idx), wrong in zip(named, bad):
        if wrong:
            raise InputError(f"input.{name}: expected a permutation of range({B}), got "
                             f"{preview(idx.tolist())}")
    raise InputError(f"input.unsorted_indices: expected the inverse of sorted_indices "
                     f"{preview(si.tolist())}, got {preview(ui.tolist())}")


def check_hx(hx, *, state_shapes, names, unbatched, like: Tensor, zeros: bool = True):
    """Check hx against state_shapes (one per state tensor, batched layout); returns the
    states batched; where hx is None, zeros (or None with zeros=False)."""
    n = len(state_shapes)
    if hx is None:
        if not zeros:
            return [None] * n
        return [torch.zeros(s, dtype=like.dtype, device=like.device) for s in state_shapes]
    if n == 2:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx: expected a tuple (h_0, c_0) of two tensors for LSTM, "
                            f"got {describe(hx)}")
        hx = list(hx)
    else:
        hx = [hx]
    for name, h in zip(names, hx):
        if not isinstance(h, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(h).__name__}")
    rank = 2 if unbatched else 3
    if any(h.dim() != rank for h in hx):
        kind = "unbatched 2-D" if unbatched else "batched 3-D"
        ranks = ", ".join(f"{h.dim()}-D" for h in hx)
        note = (f"For {kind} input, hx and cx should also be {rank}-D but got ({ranks}) tensors"
                if n == 2 else f"For {kind} input, hx should also be {rank}-D but got {ranks} "
                               f"tensor")
        k = next(k for k, h in enumerate(hx) if h.dim() != rank)
        shape = drop_batch(state_shapes[k]) if unbatched else tuple(state_shapes[k])
        raise InputError(f"{names[k]}: for {'unbatched (2-D)' if unbatched else 'batched (3-D)'}"
                         f" input expected a {rank}-D state of shape {shape}, got shape "
                         f"{shape_of(hx[k])} ({note})")
    states = []
    for k, (name, shape, h) in enumerate(zip(names, state_shapes, hx)):
        # torch's wording: the expected batched size, and what it got after unsqueezing
        got = list(h.unsqueeze(1).shape if unbatched else h.shape)
        note = (f"Expected hidden{f'[{k}]' if n == 2 else ''} size {tuple(shape)}, got {got}")
        if unbatched:
            check_tensor(name, h, drop_batch(shape), like, note)
            h = h.unsqueeze(-2)
        else:
            check_tensor(name, h, shape, like, note)
        states.append(h)
    return states


def describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def drop_batch(shape):
    return tuple(shape[:-2]) + (shape[-1],)


def check_layer_norm(mode, ln, *, groups, H, like: Tensor, label="layer_norm"):
    """The LayerNorm parameters: per (layer, direction) ih_weight, ih_bias, hh_weight, hh_bias
    (G·H,) and for LSTM c_weight, c_bias (H,), with the weights' dtype and device."""
    if ln is None:
        return None
    if mode not in ("LSTM", "GRU"):
        raise ValueError(f"{label}: LayerNorm cells are LSTM and GRU (Ba et al. 2016), got {mode}")
    if not isinstance(ln, (list, tuple)) or not all(isinstance(t, Tensor) for t in ln):
        raise TypeError(f"{label}: expected a list of Tensors (ih_weight, ih_bias, hh_weight, "
                        f"hh_bias[, c_weight, c_bias] per layer and direction)")
    G = GATES[mode]
    shapes = [(G * H,)] * 4 + ([(H,)] * 2 if mode == "LSTM" else [])
    if len(ln) != groups * len(shapes):
        raise ValueError(f"{label}: expected {groups * len(shapes)} tensors "
                         f"({len(shapes)} per layer and direction), got {len(ln)}")
    for k, t in enumerate(ln):
        shape = shapes[k % len(shapes)]
        if shape_of(t) != shape:
            raise ValueError(f"{label}[{k}]: expected shape {shape}, got {shape_of(t)}")
        if t.dtype != like.dtype or t.device != like.device:
            raise ValueError(f"{label}[{k}]: expected dtype {like.dtype} on {like.device} like "
                             f"the weights, got {t.dtype} on {t.device}")
    return list(ln)


def cell_size_note(k: int, h: Tensor, shape) -> Optional[str]:
    """ATen's message for a state of the right rank but the wrong batch or hidden size."""
    if h.dim() != len(shape):
        return None
    if len(shape) == 2 and h.shape[0] != shape[0]:
        return f"Input batch size {shape[0]} doesn't match hidden{k} batch size {h.shape[0]}"
    if h.shape[-1] != shape[-1]:
        return f"hidden{k} has inconsistent hidden_size: got {h.shape[-1]}, expected {shape[-1]}"
    return None
