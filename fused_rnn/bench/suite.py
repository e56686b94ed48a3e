"""The benchmark suite: shape grid, providers, timing.

A provider builds a callable x -> output for one (cell, dtype, shape): torch's own nn.LSTM/GRU
("cudnn"), a Python loop over nn.LSTMCell/GRUCell ("loop"), and every fused_rnn backend. Each row
times one provider in one mode: "fwd" (no grad) or "fwdbwd" (forward, then backward of out.sum()
into the input and all weights).
"""
import contextlib
import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .. import __version__, _alloc, backends
from ..modules import GRU, LSTM, RNN
from . import report

Shape = Tuple[int, int, int, int]  # (T, B, I, H)

# The default GPU grid: latency-bound (B <= 16) and throughput-bound rows;
# (256, 16, 256, 256), (512, 16, 128, 128) and (1024, 16, 768, 768) are the headline rows
# (the last is where cuDNN's fp16 persistent kernel runs, about 2 us/step on an H100).
GPU_SHAPES: List[Shape] = [(100, 64, 512, 512), (256, 1, 256, 256), (256, 8, 512, 512),
                           (256, 16, 1024, 1024), (256, 64, 1024, 1024), (100, 256, 1024, 1024),
                           (64, 32, 2048, 2048), (512, 16, 128, 128), (256, 16, 256, 256),
                           (1024, 16, 768, 768)]
GPU_QUICK: List[Shape] = [(256, 16, 256, 256), (512, 16, 128, 128), (1024, 16, 768, 768)]
# The CPU suite: small enough to finish in seconds on 2 cores.
CPU_SHAPES: List[Shape] = [(64, 8, 64, 64), (32, 32, 128, 128), (16, 1, 256, 256)]
CPU_QUICK: List[Shape] = [(16, 4, 32, 32)]

CELLS = ("LSTM", "GRU", "RNN")
# dtype name -> (torch dtype, TF32 allowed). "tf32" is fp32 with TF32 on (torch's cuDNN default).
DTYPES = {"fp32": (torch.float32, False), "tf32": (torch.float32, True),
          "bf16": (torch.bfloat16, False), "fp16": (torch.float16, False)}
MODES = ("fwd", "fwdbwd")
# A fused backend's name runs its default variant ("triton": one program per batch tile where
# W_hh fits one, else per step; "cuda": the cluster forward where it applies, else persistent
# where the shape fits, else per step);
# "<backend>_<variant>" pins the variant (each still falls back where the shape does not fit).
# "auto" is backend="auto": what a user gets without choosing (fused_rnn/backends.py).
PROVIDERS = ("cudnn", "loop", "reference", "auto", "triton", "triton_step", "triton_persistent",
             "cuda", "cuda_step", "cuda_persistent", "cuda_cluster")

# Regularisation rows: one option at p = 0.25, in training mode, timed for the fused
# default providers against the same provider without it. OPTION_* is where they run on the GPU.
OPTIONS = {"variational_dropout": dict(variational_dropout=0.25),
           "weight_drop": dict(weight_drop=0.25), "recurrent_dropout": dict(recurrent_dropout=0.25),
           "rnndrop": dict(rnndrop=0.25), "zoneout": dict(zoneout=0.25),
           "layer_norm": dict(layer_norm=True)}
OPTION_PROVIDERS = ("triton", "cuda")
OPTION_DTYPES = ("bf16",)

_MODULES = {"LSTM": (nn.LSTM, LSTM, nn.LSTMCell), "GRU": (nn.GRU, GRU, nn.GRUCell),
            "RNN": (nn.RNN, RNN, nn.RNNCell)}


@dataclass(frozen=True)
class Suite:
    """What to run. Providers that cannot run here are reported as skipped, with the reason."""
    device: torch.device
    cells: Sequence[str]
    dtypes: Sequence[str]
    modes: Sequence[str]
    providers: Sequence[str]
    shapes: Sequence[Shape]
    name: str
    # Regularisation rows: each option on option_shapes x option_dtypes for the providers of
    # option_providers in the suite (rnndrop: LSTM only; recurrent_dropout: not RNN).
    options: Sequence[str] = ()
    option_shapes: Sequence[Shape] = ()
    option_dtypes: Sequence[str] = OPTION_DTYPES
    option_providers: Sequence[str] = OPTION_PROVIDERS


def default_suite(device: torch.device, quick: bool = False, **overrides) -> Suite:
    """The default GPU grid on CUDA; on the CPU, a small fp32 suite (TF32/bf16 are GPU matters)."""
    gpu = device.type == "cuda"
    kw = dict(device=device, cells=("LSTM", "GRU"),
              dtypes=("fp32", "tf32", "bf16", "fp16") if gpu else ("fp32",), modes=MODES,
              providers=PROVIDERS,
              shapes=(GPU_QUICK if quick else GPU_SHAPES) if gpu else
              (CPU_QUICK if quick else CPU_SHAPES),
              name=("gpu" if gpu else "cpu") + ("-quick" if quick else ""),
              options=tuple(OPTIONS) if gpu else (), option_shapes=GPU_QUICK if gpu else ())
    kw.update({k: v for k, v in overrides.items() if v})
    if tuple(kw.get("options", ())) == ("none",):  # `--options none`: no regularisation rows
        kw["options"] = ()
    if "shapes" in overrides and overrides["shapes"] and "option_shapes" not in overrides:
        kw["option_shapes"] = overrides["shapes"]
    suite = Suite(**kw)
    for field, allowed in (("cells", CELLS), ("dtypes", DTYPES), ("modes", MODES),
                           ("providers", PROVIDERS), ("options", OPTIONS),
                           ("option_dtypes", DTYPES), ("option_providers", PROVIDERS)):
        bad = [v for v in getattr(suite, field) if v not in allowed]
        if bad:
            raise ValueError(f"{field}: expected values from {', '.join(allowed)}, got {bad}")
    if "cudnn" not in suite.providers:
        raise ValueError("providers: 'cudnn' is the baseline every speedup is measured against")
    return suite


def why_not(provider: str, device: torch.device, dtype: str) -> Optional[str]:
    """None if the provider can run here, else why not."""
    if dtype in ("tf32", "bf16", "fp16") and device.type != "cuda":
        return f"{dtype} rows run on CUDA only"
    if provider == "auto":  # whichever backend can run: on the CPU, the reference's row
        return None if device.type == "cuda" else "on the CPU it is the reference backend"
    if provider in ("cudnn", "loop"):
        return None
    reason = backends.why_not(provider.split("_")[0], device, DTYPES[dtype][0])
    if reason is None and provider != "reference" and device.type != "cuda":
        how = "Triton's interpreter" if provider.startswith("triton") else "CUDA emulation"
        return f"on the CPU it runs in {how}, which is for tests, not timing"
    return reason


def option_applies(option: str, cell: str, provider: str = "") -> bool:
    """Whether the option exists for the cell type and (given) provider: LayerNorm cells are
    LSTM and GRU, in the Triton kernels only so far."""
    if option == "layer_norm":
        return cell in ("LSTM", "GRU") and not provider.startswith(("cuda", "cudnn"))
    return not ((option == "rnndrop" and cell != "LSTM")
                or (option == "recurrent_dropout" and cell == "RNN"))


def build(provider: str, cell: str, shape: Shape, dtype: str,
          device: torch.device, option: str = "") -> Tuple[Callable, List[torch.Tensor]]:
    """The provider's x -> output function for one row (in training mode, with the
    regularisation `option` if given), and its parameters."""
    T, B, I, H = shape
    seq_cls, fused_cls, cell_cls = _MODULES[cell]
    torch_dtype = DTYPES[dtype][0]
    if provider == "loop":
        step = cell_cls(I, H, device=device, dtype=torch_dtype)

        def loop(x):
            h = x.new_zeros(B, H)
            state = (h, h) if cell == "LSTM" else h
            outs = []
            for t in range(x.shape[0]):
                state = step(x[t], state)
                outs.append(state[0] if cell == "LSTM" else state)
            return torch.stack(outs)
        return loop, list(step.parameters())
    if provider == "cudnn":
        module = seq_cls(I, H, device=device, dtype=torch_dtype)
        module.flatten_parameters()
    else:
        backend, _, variant = provider.partition("_")
        module = fused_cls(I, H, device=device, dtype=torch_dtype, backend=backend,
                           **OPTIONS.get(option, {}))
        if variant:
            if backend == "triton":
                from ..ops.triton.launch import variant as pin
            else:
                from ..ops.cuda.launch import variant as pin

            def run(x):
                with pin(variant):
                    return module(x)[0]
            return run, list(module.parameters())
    return (lambda x: module(x)[0]), list(module.parameters())


@contextlib.contextmanager
def tf32(enabled: bool):
    """Set both of torch's TF32 switches (matmul and cuDNN) for the block. cuDNN's through its
    flags() context manager, which also works where a process froze the global flags
    (torch.backends.disable_global_flags, as torch's own test utilities do)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled,
                                        allow_tf32=enabled):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


# What every row reports, in this order: the median and the 20th and 80th percentiles.
QUANTILES = (0.5, 0.2, 0.8)
# The CPU timer: blocks of calls, each of as many calls as fill CPU_BLOCK_S (one call for every
# row of the CPU suite), timed until there are at least CPU_MEASUREMENTS blocks and CPU_MIN_RUN_S
# seconds of them, or, once CPU_MAX_RUN_S seconds have gone (a slow row, a busy machine), at
# least CPU_MIN_MEASUREMENTS blocks; the quantiles are over the blocks. (blocked_autorange sizes
# its blocks so that timer overhead is 0.01% of a block, which for a 1-30 ms call means blocks
# of 10-100 calls and, in 0.2 s, one or two blocks: p20 = p80 = median, and no spread to see.)
CPU_BLOCK_S = 1e-3
CPU_MEASUREMENTS = 20
CPU_MIN_MEASUREMENTS = 10
CPU_MIN_RUN_S = 0.3
CPU_MAX_RUN_S = 1.0


def timings(fn: Callable[[], None], device: torch.device,
            grad_to_none: Sequence[torch.Tensor] = ()) -> dict:
    """{"median_ms", "p20_ms", "p80_ms", "measurements"}, after warm-up. CUDA: triton's do_bench
    (CUDA events, L2 flushed between runs; it does not say how many runs it timed, so
    "measurements" is None). CPU: the blocks of CPU_BLOCK_S above, timed with timeit (perf_counter,
    garbage collection off, as torch.utils.benchmark does), "measurements" = how many blocks."""
    if device.type == "cuda":
        from triton.testing import do_bench
        med, p20, p80 = do_bench(fn, warmup=25, rep=100, grad_to_none=list(grad_to_none),
                                 quantiles=list(QUANTILES))
        return dict(median_ms=med, p20_ms=p20, p80_ms=p80, measurements=None)
    timer = timeit.Timer(fn)
    fn()  # warm-up
    number = max(1, math.ceil(CPU_BLOCK_S / max(timer.timeit(1), 1e-9)))
    times: List[float] = []
    total = 0.0
    while not (len(times) >= CPU_MEASUREMENTS and total >= CPU_MIN_RUN_S
               or len(times) >= CPU_MIN_MEASUREMENTS and total >= CPU_MAX_RUN_S):
        block = timer.timeit(number)
        times.append(block / number)
        total += block
    med, p20, p80 = quantiles_ms(times)
    return dict(median_ms=med, p20_ms=p20, p80_ms=p80, measurements=len(times))


def quantiles_ms(times_s: Sequence[float]) -> Tuple[float, float, float]:
    """QUANTILES of times in seconds, in ms, with one interpolation rule for all three (linear,
    as torch.quantile and do_bench; torch.median takes the lower middle value, which can fall
    below an interpolated 20th percentile when there are few samples)."""
    q = torch.tensor(list(times_s), dtype=torch.float64).quantile(
        torch.tensor(QUANTILES, dtype=torch.float64)) * 1e3
    return q[0].item(), q[1].item(), q[2].item()


def measure(fn: Callable[[], None], device: torch.device,
            grad_to_none: Sequence[torch.Tensor] = ()) -> Tuple[float, float, float]:
    """(median, p20, p80) in ms: timings() without the count."""
    t = timings(fn, device, grad_to_none)
    return t["median_ms"], t["p20_ms"], t["p80_ms"]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def peak_mb(fn: Callable[[], None], device: torch.device) -> Optional[float]:
    """Peak memory allocated by torch on the GPU during one call, inputs and weights included
    (MiB); None on the CPU, where torch keeps no such count."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def calls(provider, cell, shape, dtype, device,
          option: str = "") -> Tuple[Dict[str, Callable[[], None]], list]:
    """{mode: a no-argument call that runs the row once}, and the tensors whose .grad a timer
    should reset between runs. Build and call inside tf32(...) for the dtype."""
    T, B, I, H = shape
    fn, params = build(provider, cell, shape, dtype, device, option)
    # Standard-normal inputs, never zeros (zeros can run faster and hide unwritten outputs).
    x = torch.randn(T, B, I, device=device, dtype=DTYPES[dtype][0])
    x_grad = x.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            fn(x)

    def fwdbwd():
        fn(x_grad).sum().backward()

    return {"fwd": fwd, "fwdbwd": fwdbwd}, [x_grad] + params


def run_row(provider, cell, shape, dtype, device, modes=MODES, option: str = "") -> List[dict]:
    """One provider on one (cell, shape, dtype[, option]); one result row per mode."""
    T, B, I, H = shape
    with tf32(DTYPES[dtype][1]):
        mode_calls, grads = calls(provider, cell, shape, dtype, device, option)
        rows = []
        for mode in modes:
            call = mode_calls[mode]
            t = timings(call, device, grad_to_none=grads)
            row = dict(cell=cell, dtype=dtype, T=T, B=B, I=I, H=H, mode=mode,
                       provider=provider, option=option, median_ms=t["median_ms"],
                       p20_ms=t["p20_ms"], p80_ms=t["p80_ms"], peak_mb=peak_mb(call, device),
                       measurements=t["measurements"], load=load_average())
            rows.append(dict(row, spread=report.spread(row), noisy=report.noisy(row)))
    return rows


def metadata(suite: Suite) -> dict:
    """Where and with what the rows were measured."""
    cuda = suite.device.type == "cuda"
    return {
        "suite": suite.name, "device": suite.device.type,
        "gpu": torch.cuda.get_device_name(suite.device) if cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "triton": package_version("triton"), "python": platform.python_version(),
        "fused_rnn": __version__, "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timing": "triton.testing.do_bench, CUDA events, median and 20/80 percentiles"
        if cuda else f"timeit, blocks of >= {CPU_BLOCK_S * 1e3:g} ms: per row at least "
        f"{CPU_MEASUREMENTS} blocks and {CPU_MIN_RUN_S:g} s, or {CPU_MIN_MEASUREMENTS} blocks "
        f"after {CPU_MAX_RUN_S:g} s; median and 20/80 percentiles over the blocks",
        "cores": cores(), "torch_threads": torch.get_num_threads(),
        "loss": "fwdbwd: out.sum().backward() into the input and all weights",
    }


def package_version(name: str) -> Optional[str]:
    """An installed package's version, without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> Optional[str]:
    """HEAD of the checkout fused_rnn runs from, "-dirty" if it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return head.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_suite(suite: Suite, progress: Optional[Callable] = None) -> dict:
    """Run every row. Returns {"meta": ..., "rows": [...]}, with meta["skipped"] giving each
    provider that could not run (per dtype) and why, and each row that failed, with its error;
    meta also has the load average at the start and end and the busy-machine verdict
    (report.check_busy), each row its measurement count, load average, spread and noisy flag."""
    skipped: Dict[str, str] = {}
    jobs = []
    for dtype in suite.dtypes:
        for provider in suite.providers:
            reason = why_not(provider, suite.device, dtype)
            if reason is not None:
                skipped[f"{provider} {dtype}"] = reason
                continue
            jobs += [(provider, cell, shape, dtype, "") for cell in suite.cells
                     for shape in suite.shapes]
    for dtype in suite.option_dtypes if suite.options else ():
        for provider in [p for p in suite.providers if p in suite.option_providers]:
            if why_not(provider, suite.device, dtype) is not None:
                continue
            for shape in suite.option_shapes:
                # The same provider without an option is the reference of the option rows.
                if dtype not in suite.dtypes or shape not in suite.shapes:
                    jobs += [(provider, cell, shape, dtype, "") for cell in suite.cells]
                jobs += [(provider, cell, shape, dtype, option) for option in suite.options
                         for cell in suite.cells if option_applies(option, cell, provider)]
    rows = []
    load_start = load_average()
    with _alloc.poisoned(False):  # never time the NaN fill that tests turn on
        for job in (progress(jobs) if progress else jobs):
            provider, cell, shape, dtype, option = job
            try:
                rows += run_row(provider, cell, shape, dtype, suite.device, suite.modes, option)
            except Exception as err:  # one failing row must not end the suite: report it
                where = f"{provider} {dtype} {cell} {','.join(map(str, shape))} {option}"
                skipped[where.strip()] = \
                    f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    meta = metadata(suite)
    meta.update(skipped=skipped, load_start=load_start, load_end=load_average())
    return report.check_busy({"meta": meta, "rows": rows})
