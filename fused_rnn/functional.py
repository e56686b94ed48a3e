"""Functional interface: lstm(), gru(), rnn() and their single-step cells.

Every argument is checked here (with the checks of fused_rnn/checks.py), and the backend
chosen (fused_rnn/backends.py); the modules hold only parameters, and the backends
(fused_rnn/ops) assume checked, time-major inputs.

Empty inputs: a batch of size 0 gives empty outputs of the right shapes, as nn.LSTM does. A
sequence of length 0 is an error, as in nn.LSTM ("input: sequence length must be at least 1").

Errors: a tensor that does not fit the call (its size, rank, dtype or device, or a malformed
PackedSequence) raises InputError (fused_rnn/checks.py), which is both ValueError and
RuntimeError: torch.nn's RNNs raise RuntimeError for most of these, so code written against
either keeps working. Each message names the argument and gives expected vs actual, then
torch's own wording in parentheses where torch has one (e.g. "Expected hidden size (1, 3, 6),
got [2, 3, 6]").
"""
import contextlib
import os
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _packing, backends, checks
from .checks import InputError  # noqa: F401  (part of the functional API)
from .ops.cells import GATES
from .ops.naive import layer_naive
from .ops.native import cell_native, run_native
from .ops import cells as _cells
from .ops.cuda import tuned as _tuned  # (plain Python: neither builds nor loads the extension)
from .ops import regularize
from .ops.regularize import Regularization
from .ops.stack import group_weights, run_stack

__all__ = ["lstm", "gru", "rnn", "lstm_cell", "gru_cell", "rnn_cell", "InputError"]


# Per-(layer, direction) recurrence of each backend that runs through ops/stack.py.
_LAYER_FNS = {"reference": layer_naive}


def _layer_fn(name: str):
    if name not in _LAYER_FNS and name == "triton":
        from .ops.triton.launch import layer_triton  # imports triton: only when asked for
        _LAYER_FNS["triton"] = layer_triton
    if name not in _LAYER_FNS and name == "cuda":
        from .ops.cuda.launch import layer_cuda  # the extension loads (or builds) on first call
        _LAYER_FNS["cuda"] = layer_cuda
    return _LAYER_FNS[name]




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
    them (that would mix bf16 gates with fp32 weights). Devices without autocast (meta: shape
    inference) have nothing to turn off; asking torch about them raises."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _cast(dtype, x, seq, h0, c0, weights):
    """x, seq, h0, c0 and every weight in dtype (None stays None)."""
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    if seq is not None:
        seq = PackedSequence(seq.data.to(dtype), seq.batch_sizes, seq.sorted_indices,
                             seq.unsorted_indices)
    return cast(x), seq, cast(h0), cast(c0), [cast(w) for w in weights]


# ----------------------------------------------------------------------- the host's fast path
# A plain call (a tensor input, batched, no regularisation, no LayerNorm, no autocast, not
# traced) on the CUDA backend goes straight to ops/cuda/stack.py, whose binding checks every
# tensor (device, dtype, contiguity, shape) in C++. Where the binding refuses the call, the
# full path below runs it, so its error is the full path's own (torch's wording); where the
# options are new, they are checked once (a set of the tuples seen). On a 2-core CPU the full
# path's Python costs about 100 us a call before the first kernel (benchmarks/README.md).

_FAST_BACKENDS = ("cuda", "auto")
_FAST_INPUTS = (Tensor, PackedSequence)
_configs: dict = {}   # checked options -> ops/cuda/stack.Config
_resolved: dict = {}  # (backend, device, dtype, proj, cell, emulation) -> extension or None


def _fast_extension(backend, like: Tensor, proj: bool, cell: bool = False):
    """The loaded CUDA extension if `backend` resolves to "cuda" for like's device and dtype,
    else None (memoised per process and emulation setting: the answer depends on nothing
    else)."""
    key = (backend, like.device, like.dtype, proj, cell,
           os.environ.get("FUSED_RNN_CUDA_EMULATE"))
    if key not in _resolved:
        try:
            name = backends.resolve(backend, like.device, like.dtype, proj=proj, cell=cell)
        except RuntimeError:
            return None  # the full path raises it
        _resolved[key] = _cuda_stack().extension.load() if name == "cuda" else None
    return _resolved[key]


_cuda_stack_module = None


def _cuda_stack():
    """fused_rnn.ops.cuda.stack, imported on first use (it imports the custom ops; an import
    statement costs 1-2 us even when done, so the module is kept here)."""
    global _cuda_stack_module
    if _cuda_stack_module is None:
        from .ops.cuda import stack
        _cuda_stack_module = stack
    return _cuda_stack_module


def _fast_states(mode, hx):
    """(h0, c0) of a plain hx (None for an absent one: zeros; c0 None unless LSTM), or None
    where the full path must take it (an LSTM hx that is not a tuple of two states)."""
    if hx is None:
        return None, None
    if mode != "LSTM":
        return hx, None
    if type(hx) is not tuple or len(hx) != 2 or hx[0] is None or hx[1] is None:
        return None
    return hx


def _fast_stack(mode, input, weights, hx, bias, num_layers, batch_first, dropout, training,
                bidirectional, proj_size, backend):
    """The output of the call through ops/cuda/stack.py, or None where the full path must run
    it."""
    options = (mode, num_layers, dropout, proj_size, bidirectional, bias, batch_first)
    cfg = _configs.get(options)
    if cfg is None:
        try:
            checks.check_options(*options)
        except (TypeError, ValueError):
            return None
        cfg = _configs[options] = _cuda_stack().Config.of(mode, num_layers, bidirectional,
                                                          bias, proj_size > 0)
    packed = type(input) is PackedSequence
    if packed:  # checked here as on the full path: the binding cannot see its layout
        like = input.data
        if type(like) is not Tensor or like.dim() != 2 or (
                input.sorted_indices is not None and input.sorted_indices.device != like.device):
            return None
        try:
            checks.check_packed(input)
        except (TypeError, ValueError):  # the full path raises it, in its order of checks
            return None
    else:
        like = input
        if input.dim() != 3:
            return None
    if ((training and dropout > 0 and num_layers > 1)
            or (like.is_cuda and torch.is_autocast_enabled("cuda"))
            or torch.compiler.is_compiling()):
        return None
    ext = _fast_extension(backend, like, proj_size > 0)
    if ext is None:
        return None
    if backend == "auto" and _tunable(like.device) and type(weights) in (list, tuple) \
            and len(weights) > 1 and isinstance(weights[1], Tensor):
        B = int(input.batch_sizes[0]) if packed else like.shape[0 if batch_first else 1]
        pick = _tuned_pick(mode, like.device, like.dtype,
                           weights[1].shape[0] // GATES[mode], B)
        if pick is not None and pick[0] != "cuda":  # the full path runs what the table chose
            return None
    states = _fast_states(mode, hx)
    if states is None:
        return None
    h0, c0 = states
    if type(weights) not in (list, tuple) or len(weights) != cfg.layers * cfg.per_layer:
        return None
    try:
        if packed:  # padded and masked, as on the full path (_run_whole)
            t_idx, b_idx, mask = ext.packed_index(input.batch_sizes, input.sorted_indices, like)
            x = _packing.unpack(input, (t_idx, b_idx))
        else:
            x, mask = (input.transpose(0, 1) if batch_first else input), None
        out, h_n, c_n = _cuda_stack().run(cfg, x, mask, h0, c0, weights, ext)
    except (ext.ArgumentError, TypeError):  # TypeError: pybind11's, an argument not a Tensor
        return None
    if packed:
        return _packing.pack_like(out, input, (t_idx, b_idx)), h_n, c_n
    return (out.transpose(0, 1) if batch_first else out), h_n, c_n


def _rnn(mode, input, weights, hx, *, bias, num_layers, batch_first, dropout, training,
         bidirectional, proj_size, backend, reg: Regularization = None, ln=None):
    if backend in _FAST_BACKENDS and type(input) in _FAST_INPUTS and ln is None \
            and (reg is None or (type(reg) is Regularization and not reg.any)):
        fast = _fast_stack(mode, input, weights, hx, bias, num_layers, batch_first, dropout,
                           training, bidirectional, proj_size, backend)
        if fast is not None:
            return fast
    backends.check_name(backend)
    checks.check_options(mode, num_layers, dropout, proj_size, bidirectional, bias, batch_first)
    reg = regularize.check_options(mode, reg)
    I, H = checks.check_weights(mode, weights, num_layers=num_layers,
                                bidirectional=bidirectional, bias=bias, proj_size=proj_size)
    ln = checks.check_layer_norm(mode, ln, groups=num_layers * (2 if bidirectional else 1), H=H,
                                 like=weights[0])
    x, seq, unbatched = checks.check_input(input, input_size=I, weight=weights[0],
                                           batch_first=batch_first, mode=mode)
    like = x if seq is None else seq.data
    B = int(seq.batch_sizes[0]) if seq is not None else x.shape[1]
    LD = num_layers * (2 if bidirectional else 1)
    shapes = [(LD, B, proj_size or H)] + ([(LD, B, H)] if mode == "LSTM" else [])
    names = ["hx[0] (h_0)", "hx[1] (c_0)"] if mode == "LSTM" else ["hx (h_0)"]
    states = checks.check_hx(hx, state_shapes=shapes, names=names, unbatched=unbatched,
                             like=like, zeros=False)
    target = _autocast_dtype(like)
    name = backends.resolve(backend, like.device, target or like.dtype,
                            layer_norm=ln is not None, proj=proj_size > 0,
                            options=_active(reg) if reg.any else "")
    variant = None  # a Triton variant the tuned table chose for backend="auto"
    if backend == "auto" and ln is None and not reg.any and _tunable(like.device):
        pick = _tuned_pick(mode, like.device, target or like.dtype, H, B)
        if pick is not None:
            name, variant = pick
    whole = name == "cuda" and _whole_stack(reg, ln, training, dropout, num_layers)
    if not whole and states[0] is None:  # the other paths take zeros for an absent hx
        states = [torch.zeros(s, dtype=like.dtype, device=like.device) for s in shapes]
    h0, c0 = states[0], (states[1] if mode == "LSTM" else None)
    if name == "cudnn":  # ATen applies autocast to its own kernels
        output, h_n, c_n = run_native(mode, x if seq is None else seq, h0, c0, list(weights),
                                      bias=bias, num_layers=num_layers, dropout=float(dropout),
                                      training=training, bidirectional=bidirectional)
    else:
        if target is not None:
            x, seq, h0, c0, weights = _cast(target, x, seq, h0, c0, weights)
            ln = None if ln is None else [t.to(target) for t in ln]
        with _autocast_off(like.device):
            if whole:
                output, h_n, c_n = _run_whole(mode, x, seq, h0, c0, weights, bias=bias,
                                              proj=proj_size > 0, num_layers=num_layers,
                                              bidirectional=bidirectional)
            else:
                with _triton_variant(variant):
                    output, h_n, c_n = _run_layers(mode, x, seq, h0, c0, weights, name,
                                                   bias=bias, proj=proj_size > 0,
                                                   num_layers=num_layers, dropout=dropout,
                                                   training=training,
                                                   bidirectional=bidirectional, reg=reg, ln=ln)
    if seq is None:
        if unbatched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif batch_first:
            output = output.transpose(0, 1)
    return output, h_n, c_n


def _tunable(device: torch.device) -> bool:
    """Whether backend="auto" consults the tuned table (fused_rnn/ops/cuda/tuned.py) here: CUDA
    tensors (on the CPU auto is the reference)."""
    return device.type == "cuda"


def _tuned_pick(mode: str, device: torch.device, dtype: torch.dtype, H: int,
                B: int) -> Optional[tuple]:
    """(backend, Triton variant or None) that the tuned table measured fastest for this call
    (`fused-rnn bench --tune-backends`), or None: no entry, or its backend cannot run here."""
    pick = _tuned.backend_for(device, "RNN" if mode.startswith("RNN") else mode, dtype, H, B,
                             torch.is_grad_enabled())
    if pick is None:
        return None
    name, _, variant = pick.partition("_")
    if backends.why_not(name, device, dtype) is not None or (
            name == "cuda" and not backends._cuda_extension_loads()):
        return None
    return name, variant or None


def _triton_variant(variant: Optional[str]):
    """A context that runs the Triton layers inside it as `variant` (None: as they are)."""
    if variant is None:
        return contextlib.nullcontext()
    from .ops.triton.launch import variant as use
    return use(variant)


def _active(reg: Regularization) -> str:
    return ", ".join(f"{k}={v}" for k, v in vars(reg).items() if v)


def _whole_stack(reg, ln, training, dropout, num_layers) -> bool:
    """Whether a CUDA-backend call runs as one node with one binding call per layer
    (ops/cuda/stack.py): no regularisation, no LayerNorm, no dropout between layers, not under
    torch.compile (which traces the custom ops and their fakes)."""
    return (not reg.any and ln is None and not (training and dropout > 0 and num_layers > 1)
            and not torch.compiler.is_compiling())


def _run_whole(mode, x, seq, h0, c0, weights, *, bias, proj, num_layers, bidirectional):
    """ops/cuda/stack.py on padded input (packed: unpacked, its lengths as a step mask)."""
    stack = _cuda_stack()  # the extension loads (or builds) on first call
    mask = index = None
    if seq is not None:  # the packed layout, once for unpacking, mask and packing
        si = seq.sorted_indices
        *index, mask = stack.extension.load().packed_index(
            seq.batch_sizes, None if si is None else si.to(seq.data.device), seq.data)
        x = _packing.unpack(seq, index)
    if x.shape[1] == 0:  # nothing for a kernel to do: empty outputs of the right shapes
        return _run_empty(mode, x, seq, h0, c0, weights, bias, proj, num_layers, bidirectional)
    cfg = stack.Config.of(mode, num_layers, bidirectional, bias, proj)
    # The binding takes contiguous tensors only (the fast path falls back here for others).
    contiguous = lambda t: None if t is None else t.contiguous()  # noqa: E731
    output, h_n, c_n = stack.run(cfg, x, mask, contiguous(h0), contiguous(c0),
                                 [w.contiguous() for w in weights])
    if seq is not None:
        output = _packing.pack_like(output, seq, index)
    return output, h_n, (c_n if mode == "LSTM" else None)


def _run_empty(mode, x, seq, h0, c0, weights, bias, proj, num_layers, bidirectional):
    D = 2 if bidirectional else 1
    HK = weights[1].shape[1]
    H = weights[0].shape[0] // GATES[mode]
    if h0 is None:
        h0 = x.new_zeros((num_layers * D, 0, HK))
        c0 = x.new_zeros((num_layers * D, 0, H)) if mode == "LSTM" else None
    return _run_layers(mode, x, seq, h0, c0, weights, "cuda", bias=bias, proj=proj,
                       num_layers=num_layers, dropout=0.0, training=False,
                       bidirectional=bidirectional, reg=Regularization(), ln=None)


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

_CELL_LABELS = ("w_ih", "w_hh", "b_ih", "b_hh")
_TORCH_CELLS = {mode: name + "Cell" for mode, name in checks.TORCH_NAMES.items()}  # LSTMCell, ...


def _cell(mode, input, hx, w_ih, w_hh, b_ih, b_hh, backend, training=False, reg=None,
          ln=None, labels=_CELL_LABELS):
    """One step of a cell. labels name w_ih, w_hh, b_ih, b_hh in messages (the modules pass
    their parameters' names, weight_ih, ...). Checks run in torch's order: the ranks of input
    and hx, then input_size, then each state's batch and hidden sizes."""
    if backend in _FAST_BACKENDS and ln is None and type(input) is Tensor \
            and (reg is None or (type(reg) is Regularization and not reg.any)):
        fast = _fast_cell(mode, input, hx, w_ih, w_hh, b_ih, b_hh, backend)
        if fast is not None:
            return fast
    backends.check_name(backend)
    reg = regularize.check_options(mode, reg)
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{labels[2]}, {labels[3]}: expected both or neither, got only one")
    weights = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
    I, H = checks.check_weights(mode, weights, num_layers=1, bidirectional=False,
                                bias=b_ih is not None, proj_size=0, labels=list(labels))
    if not isinstance(input, Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    cell = _TORCH_CELLS[mode]
    if input.dim() not in (1, 2):
        raise checks.InputError(
            f"input: expected a 2-D (batch, input_size) or 1-D (unbatched) tensor, got "
            f"{input.dim()}-D with shape {checks.shape_of(input)} ({cell}: Expected input to be "
            f"1D or 2D, got {input.dim()}D instead)")
    if mode == "LSTM":
        names = ("hx[0] (h)", "hx[1] (c)")
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"hx: expected a tuple (h, c) of two tensors for LSTMCell, "
                            f"got {checks.describe(hx)}")
    else:
        names = ("hx (h)",)
        hx = None if hx is None else (hx,)
    for k, (name, h) in enumerate(zip(names, hx or ())):
        if not isinstance(h, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(h).__name__}")
        if h.dim() not in (1, 2):
            which = f"hx[{k}]" if mode == "LSTM" else "hidden"
            raise checks.InputError(
                f"{name}: expected a 2-D (batch, hidden_size) or 1-D (unbatched) state, got "
                f"{h.dim()}-D with shape {checks.shape_of(h)} ({cell}: Expected {which} to be 1D "
                f"or 2D, got {h.dim()}D instead)")
    # sizes before dtypes and devices, as ATen's cells check them
    checks.check_input_size(input, I, cell=True)
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    state_shape = (H,) if unbatched else (x.shape[0], H)
    for k, (name, h) in enumerate(zip(names, hx or ())):
        checks.check_shape(name, h, state_shape, checks.cell_size_note(k, h, state_shape))
    checks.check_data(input, input_size=I, weight=w_ih, cell=True)
    if hx is None:
        hx = [torch.zeros(state_shape, dtype=x.dtype, device=x.device) for _ in names]
    for name, h in zip(names, hx):
        checks.check_tensor(name, h, state_shape, x)
    if unbatched:
        hx = [h.unsqueeze(0) for h in hx]
    h, c = hx[0], (hx[1] if mode == "LSTM" else None)
    ln = checks.check_layer_norm(mode, ln, groups=1, H=H, like=w_ih)
    target = _autocast_dtype(x, cell=True)
    name = backends.resolve(backend, x.device, target or x.dtype, layer_norm=ln is not None,
                            options=_active(reg) if reg.any else "", cell=True)
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
            if name == "reference" or h.numel() == 0:  # (empty: nothing for a kernel to do)
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


def _fast_cell(mode, input, hx, w_ih, w_hh, b_ih, b_hh, backend):
    """A plain batched cell step as a one-step layer of ops/cuda/stack.py (see _fast_stack), or
    None where the full path must run it."""
    if backend not in _FAST_BACKENDS or input.dim() != 2 or (b_ih is None) != (b_hh is None) \
            or (input.is_cuda and torch.is_autocast_enabled("cuda")) \
            or torch.compiler.is_compiling():
        return None
    ext = _fast_extension(backend, input, False, cell=True)
    if ext is None:
        return None
    states = _fast_states(mode, hx)
    if states is None:
        return None
    h, c = states
    if h is not None and (type(h) is not Tensor or h.dim() != 2 or (
            c is not None and (type(c) is not Tensor or c.dim() != 2))):
        return None
    bias = b_ih is not None
    weights = (w_ih, w_hh, b_ih, b_hh) if bias else (w_ih, w_hh)
    stack = _cuda_stack()
    try:
        if not torch.is_grad_enabled():  # a decode step: the binding's cell entry
            return stack.cell_step(mode, input, h, c, weights, ext)
        cfg = _configs.get((mode, bias))
        if cfg is None:
            cfg = _configs[(mode, bias)] = stack.Config.of(mode, 1, False, bias, False)
        _, h_n, c_n = stack.run(cfg, input[None], None, None if h is None else h[None],
                                None if c is None else c[None], weights, ext)
    except (ext.ArgumentError, TypeError):  # TypeError: pybind11's, an argument not a Tensor
        return None
    return h_n[0], (None if c_n is None else c_n[0])


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
