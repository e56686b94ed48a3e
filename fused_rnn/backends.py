"""Backend names, what each can run, and the choice made by "auto".

"reference": plain torch (ops/naive.py), any device, the ground truth.
"cudnn":     torch's own implementation, as nn.LSTM runs it (cuDNN on CUDA, ATen's native
             kernels on the CPU), for comparison.
"triton", "cuda": fused kernels, CUDA tensors only. Neither has landed yet, so both report
             why they cannot run and "auto" falls back to "reference".
"""
from typing import Optional

import torch

NAMES = ("auto", "reference", "triton", "cuda", "cudnn")
# Preference of "auto", fastest first; it takes the first that can run the call.
_AUTO_ORDER = ("cuda", "triton")
_NOT_BUILT = {
    "triton": "fused_rnn has no Triton kernels yet",
    "cuda": "fused_rnn has no CUDA C++ kernels yet",
}


def check_name(backend) -> str:
    """Return backend if it is a known name, else raise ValueError naming the argument."""
    if not isinstance(backend, str) or backend not in NAMES:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, NAMES))}, "
                         f"got {backend!r}")
    return backend


def why_not(backend: str, device: Optional[torch.device]) -> Optional[str]:
    """None if `backend` can run on tensors of `device` (None: any device), else the reason."""
    if backend in ("reference", "cudnn"):
        return None
    if device is not None and device.type != "cuda":
        return f"it runs on CUDA tensors, and the input is on {device}"
    return _NOT_BUILT[backend]


def resolve(backend: str, device: torch.device) -> str:
    """The concrete backend for a call on `device`. An explicit backend that cannot run the
    call raises RuntimeError saying why; "auto" takes the fastest that can, else "reference"."""
    check_name(backend)
    if backend == "auto":
        return next((b for b in _AUTO_ORDER if why_not(b, device) is None), "reference")
    reason = why_not(backend, device)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} cannot run this call: {reason}")
    return backend
