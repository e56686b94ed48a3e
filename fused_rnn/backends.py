"""Backend names, what each can run, and the choice made by "auto".

"reference": plain torch (ops/naive.py), any device, the ground truth.
"cudnn":     torch's own implementation, as nn.LSTM runs it (cuDNN on CUDA, ATen's native
             kernels on the CPU), for comparison.
"triton":    per-step fused Triton kernels (ops/triton/): CUDA tensors, or CPU tensors in
             float32/float64 when TRITON_INTERPRET=1 (the interpreter, for tests).
"cuda":      fused CUDA C++ kernels (csrc/, ops/cuda/): CUDA tensors with a CUDA build of
             torch, or CPU tensors in float32/float64 when FUSED_RNN_CUDA_EMULATE=1 (the
             kernels emulated on the CPU, for tests).
"""
import importlib.util
import os
import warnings
from typing import Optional

import torch

NAMES = ("auto", "reference", "triton", "cuda", "cudnn")
# Preference of "auto" on CUDA tensors, fastest first; it takes the first that can run.
_AUTO_ORDER = ("cuda", "triton")


def check_name(backend) -> str:
    """Return backend if it is a known name, else raise ValueError naming the argument."""
    if not isinstance(backend, str) or backend not in NAMES:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, NAMES))}, "
                         f"got {backend!r}")
    return backend


def triton_interpreted() -> bool:
    """Whether Triton kernels run in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _why_not_triton(device, dtype) -> Optional[str]:
    # find_spec, not import: triton decorates its own library for the interpreter or the GPU
    # when first imported, so importing it here would fix that choice too early.
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if device is not None and device.type != "cuda":
        if not triton_interpreted():
            return (f"it runs on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), and the "
                    f"input is on {device}")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            return (f"under TRITON_INTERPRET=1 it runs float32 and float64 only (the interpreter "
                    f"computes half types wrongly), got {dtype}")
    return None


def _constant_for_dynamo(fn):
    """torch.compile: Dynamo cannot trace the imports and importlib look-ups in the checks below
    (seen on an H100, torch 2.11: "Attempted to call function marked as skipped", find_spec and
    _gcd_import), and their answers are fixed for a process, so Dynamo should call them while
    tracing and keep the result. That is what torch.compiler.assume_constant_result marks
    (torch/_dynamo/decorators.py sets this attribute); calling it here would import Dynamo, and
    with it Triton, before a test can set TRITON_INTERPRET."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_for_dynamo
def why_not(backend: str, device: Optional[torch.device],
            dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None if `backend` can run a call on tensors of `device` and `dtype` (None: any), else
    the reason."""
    if backend in ("reference", "cudnn"):
        return None
    if backend == "triton":
        return _why_not_triton(device, dtype)
    return _why_not_cuda(device, dtype)


def _why_not_cuda(device, dtype) -> Optional[str]:
    from .ops.cuda import extension as _ext
    if _ext.emulated():
        if device is not None and device.type != "cpu":
            return (f"FUSED_RNN_CUDA_EMULATE=1 runs the emulated kernels on CPU tensors, and the "
                    f"input is on {device}")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            return f"the emulated kernels run float32 and float64 only, got {dtype}"
        return None
    if device is not None and device.type != "cuda":
        return (f"it runs on CUDA tensors (or on the CPU under FUSED_RNN_CUDA_EMULATE=1), and "
                f"the input is on {device}")
    return _ext.why_not_buildable()


@_constant_for_dynamo
def _cuda_extension_loads() -> bool:
    """For "auto": whether the CUDA extension loads (it builds on first use). A failed build
    warns once and lets "auto" go on to the next backend; backend="cuda" raises instead."""
    from .ops.cuda import extension as _ext
    try:
        _ext.load()
        return True
    except RuntimeError as e:
        if not _ext_failure_warned:
            _ext_failure_warned.append(True)
            warnings.warn(f"fused_rnn: backend 'auto' skips 'cuda': {e}", RuntimeWarning)
        return False


_ext_failure_warned: list = []


def _resolve_layer_norm(backend: str, device: torch.device, dtype, proj: bool) -> str:
    """A LayerNorm cell runs on the Triton kernels (not with proj_size) or the reference
    backend: "auto" takes Triton where it can run, else the reference, and on CUDA tensors says
    so once (a per-step loop, not a fused kernel)."""
    if backend == "auto":
        if device.type == "cuda" and not proj and why_not("triton", device, dtype) is None:
            return "triton"
        if device.type == "cuda" and not _ln_warned:
            _ln_warned.append(True)
            warnings.warn("fused_rnn: layer_norm runs on the reference backend here (a per-step "
                          "loop in plain torch): the fused LayerNorm cells are Triton kernels "
                          "without proj_size", RuntimeWarning)
        return "reference"
    if backend == "reference" or (backend == "triton" and not proj):
        return resolve(backend, device, dtype)
    why = ("proj_size with layer_norm runs on the reference backend only" if proj and
           backend == "triton" else "layer_norm runs on backend='triton' or 'reference' only "
           "so far")
    raise RuntimeError(f"backend={backend!r} cannot run this call: {why}")


_ln_warned: list = []


def resolve(backend: str, device: torch.device, dtype: Optional[torch.dtype] = None, *,
            layer_norm: bool = False, proj: bool = False, options: str = "",
            cell: bool = False) -> str:
    """The concrete backend for a call. An explicit backend that cannot run the call raises
    RuntimeError saying why; "auto" takes the fastest fused backend that can run on CUDA
    tensors, else "reference" (on the CPU always: the interpreter is for tests, not speed).
    layer_norm: a LayerNorm cell; proj: an LSTM with proj_size; options: the regularisation
    options asked for (their names, "" for none); cell: a cell (LSTMCell, ...), not a layer."""
    check_name(backend)
    if backend == "cudnn" and options:
        raise RuntimeError(f"backend='cudnn' cannot run this call: it is torch's own "
                           f"{'cell' if cell else 'RNN'}, which has no regularisation options; "
                           f"got {options}")
    if layer_norm:
        return _resolve_layer_norm(backend, device, dtype, proj)
    if backend == "auto":
        if device.type != "cuda":
            return "reference"
        return next((b for b in _AUTO_ORDER if why_not(b, device, dtype) is None
                     and (b != "cuda" or _cuda_extension_loads())), "reference")
    reason = why_not(backend, device, dtype)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} cannot run this call: {reason}")
    return backend
