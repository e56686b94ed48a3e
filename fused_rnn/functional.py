"""Functional interface: lstm(), gru(), rnn() and their single-step cells.

Every argument check lives here, and so does the choice of backend; the modules hold only
parameters, and the backends (fused_rnn/ops) assume checked, time-major inputs.

Empty inputs: a batch of size 0 gives empty outputs of the right shapes, as nn.LSTM does. A
sequence of length 0 is an error, as in nn.LSTM ("input: sequence length must be at least 1").
"""
import contextlib
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _packing, backends
from .ops.cells import GATES
from .ops.naive import layer_naive
from .ops.native import cell_native, run_native
from .ops import cells as _cells
from .ops import regularize
from .ops.regularize import Regularization
from .ops.stack import group_weights, run_stack

__all__ = ["lstm", "gru", "rnn", "lstm_cell", "gru_cell", "rnn_cell"]

# Per-(layer, direction) recurrence of each backend that runs through ops/stack.py.
_LAYER_FNS = {"reference": layer_naive}


def _layer_fn(name: str):
    if name not in _LAYER_FNS and name == "triton":
        from .ops.triton_op import layer_triton  # imports triton: only when asked for
        _LAYER_FNS["triton"] = layer_triton
    if name not in _LAYER_FNS and name == "cuda":
        from .ops.cuda_op import layer_cuda  # the extension loads (or builds) on first call
        _LAYER_FNS["cuda"] = layer_cuda
    return _LAYER_FNS[name]


def _shape(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


_AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _autocast_mixes(a: Tensor, b: Tensor) -> bool:
    """Whether CUDA autocast will cast a and b to one dtype, so theirs may differ: as with
    nn.LSTM, a state that came back in float16 may go in again beside a float32 input."""
    return a.device.type == b.device.type == "cuda" and torch.is_autocast_enabled("cuda") \
        and a.dtype in _AUTOCAST_DTYPES and b.dtype in _AUTOCAST_DTYPES


def _check_tensor(name: str, t, shape, like: Tensor):
    """t must be a tensor of exactly `shape` with like's dtype (or one autocast casts to it)
    and device."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if _shape(t) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {_shape(t)}")
    if t.dtype != like.dtype and not _autocast_mixes(t, like):
        raise ValueError(f"{name}: expected dtype {like.dtype} (the input's), got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name}: expected device {like.device} (the input's), got {t.device}")


def _check_options(mode, num_layers, dropout, proj_size, bidirectional, bias, batch_first):
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


def _check_weights(mode, weights, *, num_layers, bidirectional, bias, proj_size, labels=None):
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
        raise ValueError(
            f"weights: expected {num_layers * D * per} tensors for num_layers={num_layers}, "
            f"bidirectional={bidirectional}, bias={bias}, proj_size={proj_size}, "
            f"got {len(weights)}")
    G = GATES[mode]
    w0 = weights[0]
    if w0.dim() != 2 or w0.shape[0] % G:
        label = labels[0] if labels else "weights[0] (weight_ih_l0)"
        raise ValueError(f"{label}: expected shape ({G}*hidden_size, input_size), "
                         f"got {_shape(w0)}")
    H, I = w0.shape[0] // G, w0.shape[1]
    H_out = proj_size or H
    if proj_size >= H and proj_size:
        raise ValueError(f"proj_size: expected < hidden_size={H}, got {proj_size}")
    for k in range(num_layers * D):
        layer, suffix = divmod(k, D)
        tag = f"_l{layer}" + ("_reverse" if suffix else "")
        expected = [("weight_ih", (G * H, I if layer == 0 else D * H_out)),
                     ("weight_hh", (G * H, H_out))]
        if bias:
            expected += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
        if proj_size:
            expected += [("weight_hr", (proj_size, H))]
        for j, (name, shape) in enumerate(expected):
            idx = k * per + j
            w = weights[idx]
            label = labels[idx] if labels else f"weights[{idx}] ({name}{tag})"
            if _shape(w) != shape:
                raise ValueError(f"{label}: expected shape {shape}, got {_shape(w)}")
            if w.dtype != w0.dtype or w.device != w0.device:
                raise ValueError(f"{label}: expected dtype {w0.dtype} on {w0.device} like "
                                 f"weights[0], got {w.dtype} on {w.device}")
    return I, H


def _check_data(data: Tensor, *, input_size, weight: Tensor):
    """dtype, device and feature size of the input tensor (or a PackedSequence's data)."""
    if not data.is_floating_point():
        raise ValueError(f"input: expected a floating-point tensor, got dtype {data.dtype}")
    if data.dtype != weight.dtype and not _autocast_mixes(data, weight):
        raise ValueError(f"input: dtype {data.dtype} does not match the weights' dtype "
                         f"{weight.dtype}")
    if data.device != weight.device:
        raise ValueError(f"input: is on {data.device} but the weights are on {weight.device}")
    if data.shape[-1] != input_size:
        raise ValueError(f"input: expected input_size={input_size} in the last dimension, "
                         f"got shape {_shape(data)}")


def _check_input(input, *, input_size, weight: Tensor, batch_first: bool):
    """Returns (x, seq, unbatched): x the time-major (T, B, I) tensor (None when packed), seq the
    PackedSequence (or None)."""
    if isinstance(input, PackedSequence):
        if input.data.dim() != 2:
            raise ValueError(f"input: expected a PackedSequence's data to be 2-D "
                             f"(total_length, input_size), got shape {_shape(input.data)}")
        _check_data(input.data, input_size=input_size, weight=weight)
        return None, input, False
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor or PackedSequence, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(f"input: expected a 3-D (batched) or 2-D (unbatched) tensor, got "
                         f"{input.dim()}-D with shape {_shape(input)}")
    _check_data(input, input_size=input_size, weight=weight)
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if batch_first else input)
    if x.shape[0] == 0:
        raise ValueError(f"input: sequence length must be at least 1, got 0 (shape "
                         f"{_shape(input)})")
    return x, None, unbatched


def _check_hx(hx, *, state_shapes, names, unbatched, like: Tensor):
    """Check hx against state_shapes (one per state tensor, batched layout); returns the
    states batched, zeros where hx is None."""
    n = len(state_shapes)
    if hx is None:
        return [torch.zeros(s, dtype=like.dtype, device=like.device) for s in state_shapes]
    if n == 2:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx: expected a tuple (h_0, c_0) of two tensors for LSTM, "
                            f"got {_describe(hx)}")
        hx = list(hx)
    else:
        hx = [hx]
    states = []
    for name, shape, h in zip(names, state_shapes, hx):
        if unbatched:
            if isinstance(h, Tensor) and h.dim() != len(shape) - 1:
                raise ValueError(f"{name}: for unbatched (2-D) input expected a "
                                 f"{len(shape) - 1}-D state of shape {_drop_batch(shape)}, got "
                                 f"shape {_shape(h)}")
            _check_tensor(name, h, _drop_batch(shape), like)
            h = h.unsqueeze(-2)
        else:
            _check_tensor(name, h, shape, like)
        states.append(h)
    return states


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def _drop_batch(shape):
    return tuple(shape[:-2]) + (shape[-1],)


def _autocast_dtype(like: Tensor, cell: bool = False) -> Optional[torch.dtype]:
    """The dtype torch's own RNNs run in under CUDA autocast, if it is on and like is a float
    CUDA tensor other than float64. nn.LSTM/GRU/RNN go through cuDNN, whose autocast wrapper
    (ATen's _cudnn_rnn_cast_reflatten) casts input, states and weights to float16 whatever dtype
    autocast names, so a layer runs in float16 (seen on an H100 with torch 2.11: bf16 autocast,
    float16 output); the cells (lstm_cell, gru_cell, ...) take autocast's own dtype. On the CPU
    torch's autocast treats its RNNs unevenly (nn.GRU stays float32, nn.RNN casts, nn.LSTM fails
    in torch 2.13 with oneDNN), so there we stay in the input's dtype."""
    if like.device.type == "cuda" and like.is_floating_point() and like.dtype != torch.float64 \
            and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda") if cell else torch.float16
    return None


def _autocast_off(device: torch.device):
    """Our backends pick dtypes themselves: autocast must not recast F.linear's output under
    them (that would mix bf16 gates with fp32 weights)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _cast(dtype, x, seq, h0, c0, weights):
    """x, seq, h0, c0 and every weight in dtype (None stays None)."""
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    if seq is not None:
        seq = PackedSequence(seq.data.to(dtype), seq.batch_sizes, seq.sorted_indices,
                             seq.unsorted_indices)
    return cast(x), seq, cast(h0), cast(c0), [cast(w) for w in weights]


def _check_layer_norm(mode, ln, *, groups, H, like: Tensor, label="layer_norm"):
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
        if _shape(t) != shape:
            raise ValueError(f"{label}[{k}]: expected shape {shape}, got {_shape(t)}")
        if t.dtype != like.dtype or t.device != like.device:
            raise ValueError(f"{label}[{k}]: expected dtype {like.dtype} on {like.device} like "
                             f"the weights, got {t.dtype} on {t.device}")
    return list(ln)


def _resolve(backend, device, dtype, ln, proj=False) -> str:
    """backends.resolve, but a LayerNorm cell runs on the Triton kernels (not with proj_size)
    or the reference backend: "auto" takes Triton where it can run, else the reference, and
    on CUDA tensors says so once (a per-step loop, not a fused kernel)."""
    if ln is None:
        return backends.resolve(backend, device, dtype)
    if backend == "auto":
        if device.type == "cuda" and not proj and backends.why_not("triton", device, dtype) is None:
            return "triton"
        if device.type == "cuda" and not _ln_warned:
            _ln_warned.append(True)
            warnings.warn("fused_rnn: layer_norm runs on the reference backend here (a per-step "
                          "loop in plain torch): the fused LayerNorm cells are Triton kernels "
                          "without proj_size", RuntimeWarning)
        return "reference"
    if backend == "reference" or (backend == "triton" and not proj):
        return backends.resolve(backend, device, dtype)
    why = ("proj_size with layer_norm runs on the reference backend only" if proj and
           backend == "triton" else "layer_norm runs on backend='triton' or 'reference' only "
           "so far")
    raise RuntimeError(f"backend={backend!r} cannot run this call: {why}")


_ln_warned: list = []


def _rnn(mode, input, weights, hx, *, bias, num_layers, batch_first, dropout, training,
         bidirectional, proj_size, backend, reg: Regularization = None, ln=None):
    backends.check_name(backend)
    _check_options(mode, num_layers, dropout, proj_size, bidirectional, bias, batch_first)
    reg = regularize.check_options(mode, reg)
    I, H = _check_weights(mode, weights, num_layers=num_layers, bidirectional=bidirectional,
                          bias=bias, proj_size=proj_size)
    ln = _check_layer_norm(mode, ln, groups=num_layers * (2 if bidirectional else 1), H=H,
                           like=weights[0])
    x, seq, unbatched = _check_input(input, input_size=I, weight=weights[0],
                                     batch_first=batch_first)
    like = x if seq is None else seq.data
    B = int(seq.batch_sizes[0]) if seq is not None else x.shape[1]
    LD = num_layers * (2 if bidirectional else 1)
    shapes = [(LD, B, proj_size or H)] + ([(LD, B, H)] if mode == "LSTM" else [])
    names = ["hx[0] (h_0)", "hx[1] (c_0)"] if mode == "LSTM" else ["hx (h_0)"]
    states = _check_hx(hx, state_shapes=shapes, names=names, unbatched=unbatched,
                       like=like)
    h0, c0 = states[0], (states[1] if mode == "LSTM" else None)

    target = _autocast_dtype(like)
    name = _resolve(backend, like.device, target or like.dtype, ln, proj=proj_size > 0)
    if name == "cudnn" and reg.any:
        raise RuntimeError(f"backend='cudnn' cannot run this call: it is torch's own RNN, which "
                           f"has no regularisation options; got {_active(reg)}")
    if name == "cudnn":  # ATen applies autocast to its own kernels
        output, h_n, c_n = run_native(mode, x if seq is None else seq, h0, c0, list(weights),
                                      bias=bias, num_layers=num_layers, dropout=float(dropout),
                                      training=training, bidirectional=bidirectional)
    else:
        if target is not None:
            x, seq, h0, c0, weights = _cast(target, x, seq, h0, c0, weights)
            ln = None if ln is None else [t.to(target) for t in ln]
        with _autocast_off(like.device):
            output, h_n, c_n = _run_layers(mode, x, seq, h0, c0, weights, name, bias=bias,
                                           proj=proj_size > 0, num_layers=num_layers,
                                           dropout=dropout, training=training,
                                           bidirectional=bidirectional, reg=reg, ln=ln)
    if seq is None:
        if unbatched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif batch_first:
            output = output.transpose(0, 1)
    return output, h_n, c_n


def _active(reg: Regularization) -> str:
    return ", ".join(f"{k}={v}" for k, v in vars(reg).items() if v)


def _run_layers(mode, x, seq, h0, c0, weights, name, *, bias, proj, num_layers, dropout,
                training, bidirectional, reg, ln):
    """The layer-by-layer backends (ops/stack.py): unpack and mask packed input, draw the
    regularisation masks, run, repack."""
    mask = None
    if seq is not None:
        x = _packing.unpack(seq)
        steps = torch.arange(x.shape[0], device=x.device)
        mask = (steps[:, None] < _packing.lengths(seq)[None, :]).unsqueeze(-1)
    groups = group_weights(weights, h0.shape[0], bias, proj, ln)
    masks = None
    if reg.any:
        masks = regularize.draw(reg, training=training, num_layers=num_layers,
                                num_directions=2 if bidirectional else 1, T=x.shape[0],
                                B=x.shape[1], input_size=x.shape[2], H=groups[0].w_hh.shape[0]
                                // GATES[mode], HK=h0.shape[-1], gates=GATES[mode],
                                device=x.device)
    output, h_n, c_n = run_stack(mode, x, h0, c0, groups, num_layers=num_layers,
                                 bidirectional=bidirectional, dropout=dropout,
                                 training=training, mask=mask, layer_fn=_layer_fn(name),
                                 masks=masks)
    if seq is not None:
        output = _packing.pack_like(output, seq)
    return output, h_n, c_n


_Input = Union[Tensor, PackedSequence]


def lstm(input: _Input, weights: Sequence[Tensor], hx: Optional[Tuple[Tensor, Tensor]] = None, *,
         bias: bool = True, num_layers: int = 1, batch_first: bool = False,
         dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
         proj_size: int = 0, backend: str = "auto",
         regularization: Optional[Regularization] = None,
         layer_norm: Optional[Sequence[Tensor]] = None):
    """Multi-layer LSTM, as nn.LSTM computes it.

    input: (T, B, I), (B, T, I) if batch_first, (T, I) unbatched, or a PackedSequence.
    weights: nn.LSTM._flat_weights order: per layer and direction weight_ih (4H, I or D·H_out),
      weight_hh (4H, H_out), [bias_ih (4H,), bias_hh (4H,)], [weight_hr (P, H)].
    hx: (h_0 (L·D, B, H_out), c_0 (L·D, B, H)), batch dim dropped if unbatched; zeros if None.
    H_out is proj_size if > 0 else H; D is 2 if bidirectional else 1.
    regularization: fused_rnn.Regularization (variational_dropout, weight_drop,
      recurrent_dropout, rnndrop, zoneout_cell, zoneout_hidden); masks drawn in training only.
    layer_norm: a LayerNorm LSTM (Ba et al. 2016): per layer and direction ih_weight, ih_bias,
      hh_weight, hh_bias (4H,), c_weight, c_bias (H,); gates LN(x·W_ihᵀ) + LN(h·W_hhᵀ) + b,
      h = o·tanh(LN(c)). Runs on backend "triton" (not with proj_size; "auto" takes it on
      CUDA) or "reference".
    Returns output (T, B, D·H_out) (same layout and kind as input), (h_n, c_n).
    """
    out, h_n, c_n = _rnn("LSTM", input, weights, hx, bias=bias, num_layers=num_layers,
                         batch_first=batch_first, dropout=dropout, training=training,
                         bidirectional=bidirectional, proj_size=proj_size, backend=backend,
                         reg=regularization, ln=layer_norm)
    return out, (h_n, c_n)


def gru(input: _Input, weights: Sequence[Tensor], hx: Optional[Tensor] = None, *,
        bias: bool = True, num_layers: int = 1, batch_first: bool = False, dropout: float = 0.0,
        training: bool = False, bidirectional: bool = False, backend: str = "auto",
        regularization: Optional[Regularization] = None,
        layer_norm: Optional[Sequence[Tensor]] = None):
    """Multi-layer GRU (gates r, z, n), as nn.GRU. Shapes as lstm() with 3H gate rows and no
    c state; regularization as lstm() without rnndrop and zoneout_cell; layer_norm as lstm()
    without c_weight, c_bias. Returns output, h_n (L·D, B, H)."""
    out, h_n, _ = _rnn("GRU", input, weights, hx, bias=bias, num_layers=num_layers,
                       batch_first=batch_first, dropout=dropout, training=training,
                       bidirectional=bidirectional, proj_size=0, backend=backend,
                       reg=regularization, ln=layer_norm)
    return out, h_n


def rnn(input: _Input, weights: Sequence[Tensor], hx: Optional[Tensor] = None, *,
        nonlinearity: str = "tanh", bias: bool = True, num_layers: int = 1,
        batch_first: bool = False, dropout: float = 0.0, training: bool = False,
        bidirectional: bool = False, backend: str = "auto",
        regularization: Optional[Regularization] = None):
    """Multi-layer Elman RNN with tanh or relu, as nn.RNN. Shapes as gru() with H gate rows;
    regularization as gru() without recurrent_dropout."""
    out, h_n, _ = _rnn(_rnn_mode(nonlinearity), input, weights, hx, bias=bias,
                       num_layers=num_layers, batch_first=batch_first, dropout=dropout,
                       training=training, bidirectional=bidirectional, proj_size=0,
                       backend=backend, reg=regularization)
    return out, h_n


def _rnn_mode(nonlinearity) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


# ---------------------------------------------------------------------------- single-step cells

def _cell(mode, input, hx, w_ih, w_hh, b_ih, b_hh, backend, training=False, reg=None,
          ln=None):
    backends.check_name(backend)
    reg = regularize.check_options(mode, reg)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih, b_hh: expected both or neither, got only one")
    weights = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
    I, H = _check_weights(mode, weights, num_layers=1, bidirectional=False,
                          bias=b_ih is not None, proj_size=0,
                          labels=["w_ih", "w_hh", "b_ih", "b_hh"])
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    if input.dim() not in (1, 2):
        raise ValueError(f"input: expected a 2-D (batch, input_size) or 1-D (unbatched) tensor, "
                         f"got {input.dim()}-D with shape {_shape(input)}")
    _check_data(input, input_size=I, weight=w_ih)
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    state_shape = (H,) if unbatched else (x.shape[0], H)
    if mode == "LSTM":
        names = ("hx[0] (h)", "hx[1] (c)")
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"hx: expected a tuple (h, c) of two tensors for LSTMCell, "
                            f"got {_describe(hx)}")
    else:
        names = ("hx (h)",)
        hx = None if hx is None else (hx,)
    if hx is None:
        hx = [torch.zeros(state_shape, dtype=x.dtype, device=x.device) for _ in names]
    for name, h in zip(names, hx):
        _check_tensor(name, h, state_shape, x)
    if unbatched:
        hx = [h.unsqueeze(0) for h in hx]
    h, c = hx[0], (hx[1] if mode == "LSTM" else None)
    ln = _check_layer_norm(mode, ln, groups=1, H=H, like=w_ih)
    target = _autocast_dtype(x, cell=True)
    name = _resolve(backend, x.device, target or x.dtype, ln)
    if name == "cudnn" and reg.any:
        raise RuntimeError(f"backend='cudnn' cannot run this call: it is torch's own cell, "
                           f"which has no regularisation options; got {_active(reg)}")
    masks = (regularize.draw_cell(reg, training=training, B=x.shape[0], H=H, device=x.device)
             if reg.any else regularize.NO_MASKS)
    if name == "cudnn":  # ATen applies autocast to its own kernels
        h, c = cell_native(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
    else:
        if target is not None:
            x, _, h, c, (w_ih, w_hh, b_ih, b_hh) = _cast(target, x, None, h, c,
                                                          [w_ih, w_hh, b_ih, b_hh])
            ln = None if ln is None else [t.to(target) for t in ln]
        ln = None if ln is None else _cells.LayerNormWeights(*ln)
        with _autocast_off(x.device):
            gi = _cells.input_gates(x, w_ih, b_ih, ln)
            if name == "reference":
                dt = gi.dtype
                h_new, c = _cells.step(mode, gi, _cells.recurrent_gates(h, w_hh, b_hh, ln), h, c,
                                       masks.factor("g", dt, 0), 1.0, masks.factor("zc", dt, 0),
                                       _cells.cell_norm(ln))
                h = _cells.zone(h, h_new, masks.factor("zh", dt, 0))
            else:  # a fused backend: one step of its layer recurrence
                kw = {"masks": masks} if masks.active else {}
                if ln is not None:
                    kw["ln"] = ln
                _, h, c = _layer_fn(name)(mode, gi[None], h, c, w_hh, b_hh, None, None, False,
                                          **kw)
    if unbatched:
        h, c = h.squeeze(0), (None if c is None else c.squeeze(0))
    return h, c


def lstm_cell(input: Tensor, hx: Optional[Tuple[Tensor, Tensor]], w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None, *,
              backend: str = "auto", training: bool = False,
              regularization: Optional[Regularization] = None,
              layer_norm: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """One LSTM step, as nn.LSTMCell: input (B, I) or (I,), hx (h, c) each (B, H) or (H,) or
    None (zeros); w_ih (4H, I), w_hh (4H, H), b_ih/b_hh (4H,). regularization: only
    recurrent_dropout, zoneout_cell and zoneout_hidden (masks drawn per call, in training).
    layer_norm: ih_weight, ih_bias, hh_weight, hh_bias, c_weight, c_bias as lstm().
    Returns (h', c')."""
    return _cell("LSTM", input, hx, w_ih, w_hh, b_ih, b_hh, backend, training, regularization,
                 layer_norm)


def gru_cell(input: Tensor, hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
             b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None, *,
             backend: str = "auto", training: bool = False,
             regularization: Optional[Regularization] = None,
             layer_norm: Optional[Sequence[Tensor]] = None) -> Tensor:
    """One GRU step, as nn.GRUCell: input (B, I) or (I,), hx (B, H) or (H,) or None; w_ih (3H, I),
    w_hh (3H, H); regularization: recurrent_dropout, zoneout_hidden; layer_norm as gru().
    Returns h'."""
    return _cell("GRU", input, hx, w_ih, w_hh, b_ih, b_hh, backend, training,
                 regularization, layer_norm)[0]


def rnn_cell(input: Tensor, hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
             b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None, *,
             nonlinearity: str = "tanh", backend: str = "auto", training: bool = False,
             regularization: Optional[Regularization] = None) -> Tensor:
    """One Elman RNN step, as nn.RNNCell (tanh or relu); regularization: zoneout_hidden.
    Returns h'."""
    return _cell(_rnn_mode(nonlinearity), input, hx, w_ih, w_hh, b_ih, b_hh, backend, training,
                 regularization)[0]
