"""CUDA graphs of the Triton backend's per-step path: a layer and direction that runs per step
(projection, H over the tile kernels' limit) launches one to four kernels per timestep, and each
launch pays Triton's host-side argument binding (the per-step path measured 40-72 µs per step
forward on an H100, where a plain launch costs 3.4 µs and a graph's replay 0.93 µs per step).
Here the whole call, forward or backward, is captured once per (shapes, dtypes, flags) into a
graph and replayed per call, with no Python per step.

A graph reads and writes fixed addresses, so an entry keeps static copies of the call's tensor
arguments, dense whatever their strides (an expanded h0, autograd's stride-0 gradient of a
sum; each call copies its own in), and the outputs the capture allocated in the graph's memory
pool (each call returns clones, so that a later replay cannot overwrite what autograd saved).
The key is what the captured launches depend on: the arguments' shapes, dtypes and devices, the
flags and floats among them, and the global settings read while capturing (TF32 for the
recurrent dots and for the weight-gradient GEMMs, inference mode, NaN-poisoning). A key is
captured on its second call (the first runs eagerly: a shape seen once, such as one of many
sequence lengths, never pays for a capture); entries are kept least recently used first, at most
MAX_GRAPHS (each holds its outputs' and inputs' memory). A call waits for the previous replay of
its entry (an event), so that calls from other streams cannot overwrite inputs still being read.
A capture that raises is warned about and its key runs eagerly from then on. Not used while
the caller's own stream is being captured (torch.compile's "reduce-overhead", a
user's torch.cuda.graph: the per-step launches become part of that graph), nor where
FUSED_RNN_TRITON_GRAPHS=0.
"""
import collections
import os
import threading
import warnings
from typing import Callable, Tuple

import torch

MAX_GRAPHS = 16
MAX_SEEN = 256  # keys remembered as called once


def enabled(device: torch.device) -> bool:
    """Whether a call on `device` runs through a graph."""
    return (device.type == "cuda" and os.environ.get("FUSED_RNN_TRITON_GRAPHS", "1") not in
            ("", "0") and not torch.cuda.is_current_stream_capturing())


def _spec(x):
    """A hashable description of an argument: what a graph's kernels and addresses depend on."""
    if isinstance(x, torch.Tensor):  # (the static copy is dense: strides do not matter)
        return ("tensor", tuple(x.shape), x.dtype, x.device)
    if isinstance(x, (tuple, list)):
        return (type(x).__name__,) + tuple(_spec(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _spec(v)) for k, v in x.items()))
    return x  # floats, flags, names, None: baked into the graph


def _settings():
    """The global settings the captured launches depend on."""
    from ... import _alloc
    return (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
            torch.get_float32_matmul_precision(), torch.is_inference_mode_enabled(),
            _alloc.poisoning())


def _static(x):
    """x with each tensor replaced by a dense copy the graph owns."""
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x)
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
    # thread_local: CUDA work of the caller's other threads does not break the capture
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = call()
    return graph.replay, outputs


class Graphs:
    """The cache of captured calls (capture: cuda_capture; tests give their own)."""

    def __init__(self, capture: Callable = cuda_capture):
        self._capture = capture
        self._entries: "collections.OrderedDict" = collections.OrderedDict()
        self._seen: "collections.OrderedDict" = collections.OrderedDict()
        self._failed: set = set()  # keys whose capture raised: they run eagerly
        self._lock = threading.Lock()  # autograd runs backward calls on its own thread

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seen.clear()
            self._failed.clear()

    def run(self, fn: Callable, *args, **kwargs) -> Tuple[torch.Tensor, ...]:
        """fn(*args, **kwargs) through its graph (from its key's second call: clones of the
        graph's outputs), or eagerly (the first call)."""
        key = (fn.__qualname__, _spec(args), _spec(kwargs), _settings())
        with self._lock:
            entry = self._entries.get(key)
            if entry is None and key in self._failed:
                eager = True
            elif entry is None and key not in self._seen:
                self._seen[key] = True
                while len(self._seen) > MAX_SEEN:
                    self._seen.popitem(last=False)
                eager = True
            elif entry is None:
                del self._seen[key]
                static_args, static_kwargs = _static(args), _static(kwargs)
                try:
                    replay, outputs = self._capture(lambda: fn(*static_args, **static_kwargs))
                except Exception as e:  # noqa: BLE001 (a capture that fails runs eagerly)
                    self._failed.add(key)
                    warnings.warn(f"fused_rnn: a CUDA graph of the Triton per-step path could "
                                  f"not be captured; this call's shape runs eagerly ({e})",
                                  RuntimeWarning)
                    return fn(*args, **kwargs)
                done = torch.cuda.Event() if any(o.is_cuda for o in outputs) else None
                entry = self._entries[key] = (static_args, static_kwargs, replay, outputs, done)
                while len(self._entries) > MAX_GRAPHS:
                    self._entries.popitem(last=False)
                eager = False
            else:
                self._entries.move_to_end(key)
                if entry[4] is not None:  # the previous replay has read its inputs
                    torch.cuda.current_stream().wait_event(entry[4])
                _copy_in(entry[0], args)
                _copy_in(entry[1], kwargs)
                eager = False
            if not eager:
                entry[2]()
                result = tuple(o.clone() for o in entry[3])
                if entry[4] is not None:
                    entry[4].record()
                return result
        return fn(*args, **kwargs)


GRAPHS = Graphs()
