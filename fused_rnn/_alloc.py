"""Allocation of output buffers that the code under test must fill completely.

Every buffer that a backend writes piece by piece (a direction's half of a layer's output, one
layer's slice of h_n) is allocated here. With poisoning on (the test suite turns it on, or the
environment variable FUSED_RNN_POISON=1), the buffer starts as NaN, so an element that no code
wrote shows up as NaN in the parity checks instead of passing by luck as a stale zero.
"""
import contextlib
import os

import torch

_poison = os.environ.get("FUSED_RNN_POISON", "0") not in ("", "0")


def poisoning() -> bool:
    """Whether new buffers are filled with NaN."""
    return _poison


def set_poisoning(enabled: bool) -> bool:
    """Turn NaN-poisoning of new buffers on or off; returns the previous setting."""
    global _poison
    previous, _poison = _poison, bool(enabled)
    return previous


@contextlib.contextmanager
def poisoned(enabled: bool = True):
    """Context manager: NaN-poison buffers allocated inside it."""
    previous = set_poisoning(enabled)
    try:
        yield
    finally:
        set_poisoning(previous)


def empty(shape, *, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of `shape` with like's dtype and device (NaN when poisoning)."""
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    if _poison and out.is_floating_point():
        out.fill_(float("nan"))
    return out
