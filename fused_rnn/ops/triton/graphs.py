"""CUDA graphs of the Triton backend's per-step path: a layer and direction that runs per step
(projection, H over the tile kernels' limit) launches one to four kernels per timestep, and each
launch pays Triton's host-side argument binding (the per-step path measured 40-72 µs per step
forward on an H100, where a plain launch costs 3.4 µs and a graph's replay 0.93 µs per step).
Here the whole call, forward or backward, is captured once per (shapes, dtypes, flags) into a
graph and replayed per call, with no Python per step.

A graph reads and writes fixed addresses, so an entry keeps static copies of the call's tensor
arguments (each call copies its own in) and the outputs the capture allocated in the graph's
memory pool (each call returns clones, so that a later replay cannot overwrite what autograd
saved). Entries are kept least recently used first, at most MAX_GRAPHS (each holds its
outputs' memory). Not used while the caller's own stream is being captured (torch.compile's
"reduce-overhead", a user's torch.cuda.graph: the per-step launches become part of that graph),
nor where FUSED_RNN_TRITON_GRAPHS=0.
"""
import collections
import os
import threading
from typing import Callable, Tuple

import torch

MAX_GRAPHS = 16


def enabled(device: torch.device) -> bool:
    """Whether a call on `device` runs through a graph."""
    return (device.type == "cuda" and os.environ.get("FUSED_RNN_TRITON_GRAPHS", "1") not in
            ("", "0") and not torch.cuda.is_current_stream_capturing())


def _spec(x):
    """A hashable description of an argument: what a graph's kernels and addresses depend on."""
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.stride(), x.dtype, x.device)
    if isinstance(x, (tuple, list)):
        return (type(x).__name__,) + tuple(_spec(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _spec(v)) for k, v in x.items()))
    return x  # floats, flags, names, None: baked into the graph


def _static(x):
    """x with each tensor replaced by a copy the graph owns (same strides)."""
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype,
                                   device=x.device).copy_(x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a NamedTuple (StepMasks)
        return type(x)(*(_static(v) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_static(v) for v in x)
    if isinstance(x, dict):
        return {k: _static(v) for k, v in x.items()}
    return x


def _copy_in(static, x) -> None:
    if isinstance(x, torch.Tensor):
        static.copy_(x)
    elif isinstance(x, (tuple, list)):
        for s, v in zip(static, x):
            _copy_in(s, v)
    elif isinstance(x, dict):
        for k, v in x.items():
            _copy_in(static[k], v)


def cuda_capture(call: Callable[[], Tuple[torch.Tensor, ...]]):
    """(replay, outputs) of a CUDA graph of call(). One run first on a side stream, as
    torch.cuda.graph asks: it compiles the Triton kernels and fills the launchers' caches,
    which a capture may not do."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = call()
    return graph.replay, outputs


class Graphs:
    """The cache of captured calls (capture: cuda_capture; tests give their own)."""

    def __init__(self, capture: Callable = cuda_capture):
        self._capture = capture
        self._entries: "collections.OrderedDict" = collections.OrderedDict()
        self._lock = threading.Lock()  # autograd runs backward calls on its own thread

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def run(self, fn: Callable, *args, **kwargs) -> Tuple[torch.Tensor, ...]:
        """fn(*args, **kwargs) through its graph: clones of the graph's outputs."""
        key = (fn.__qualname__, _spec(args), _spec(kwargs))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                static_args, static_kwargs = _static(args), _static(kwargs)
                replay, outputs = self._capture(lambda: fn(*static_args, **static_kwargs))
                entry = self._entries[key] = (static_args, static_kwargs, replay, outputs)
                while len(self._entries) > MAX_GRAPHS:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
                _copy_in(entry[0], args)
                _copy_in(entry[1], kwargs)
            entry[2]()
            return tuple(o.clone() for o in entry[3])


GRAPHS = Graphs()
