"""Scaling sweeps (`fused-rnn bench --sweep`): forward µs per step against one of
H, B or T with the others fixed, for cuDNN and the fused providers, one plot per sweep. They
show which kernel variant takes over where (the cluster forward up to H = 256, the
multi-cluster one at H = 512-1024 while a batch's clusters fit the GPU at once, the persistent
one elsewhere, cuDNN's persistent fp16 kernels for B a multiple of 8).
"""
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .. import _alloc
from . import suite as S
from .report import BASELINE, check_busy

# axis -> the values swept; every other size from BASE. I follows H (I = H), as in the grid's
# square rows.
GPU_SWEEPS: Dict[str, List[int]] = {"H": [64, 128, 256, 512, 768, 1024, 2048],
                                    "B": [1, 2, 4, 8, 16, 32, 64, 128, 256],
                                    "T": [16, 64, 256, 1024, 4096]}
GPU_BASE = dict(T=256, B=16, H=256)
CPU_SWEEPS: Dict[str, List[int]] = {"H": [16, 32], "B": [1, 4], "T": [4, 16]}
CPU_BASE = dict(T=8, B=2, H=16)
GPU_PROVIDERS = ("cudnn", "cuda", "triton")
CPU_PROVIDERS = ("cudnn", "reference")


def shapes(axis: str, values: Sequence[int], base: Dict[str, int]) -> List[S.Shape]:
    """(T, B, I, H) for each value of the swept axis."""
    if axis not in ("H", "B", "T"):
        raise ValueError(f"sweep axis: expected H, B or T, got {axis!r}")
    out = []
    for v in values:
        d = dict(base, **{axis: v})
        out.append((d["T"], d["B"], d["H"], d["H"]))
    return out


def run_sweeps(device: torch.device, cells: Sequence[str] = ("LSTM",),
               dtypes: Optional[Sequence[str]] = None,
               providers: Optional[Sequence[str]] = None,
               sweeps: Optional[Dict[str, List[int]]] = None,
               progress: Optional[Callable] = None) -> dict:
    """Forward rows of every sweep: {"meta", "rows"}, each row as the suite's plus "sweep" (the
    axis) and "us_per_step". Defaults: bf16 and fp16 with cuDNN, cuda and triton on a GPU;
    fp32 with cuDNN and the reference backend on the CPU."""
    gpu = device.type == "cuda"
    dtypes = list(dtypes or (("bf16", "fp16") if gpu else ("fp32",)))
    providers = list(providers or (GPU_PROVIDERS if gpu else CPU_PROVIDERS))
    sweeps = sweeps or (GPU_SWEEPS if gpu else CPU_SWEEPS)
    base = GPU_BASE if gpu else CPU_BASE
    skipped: Dict[str, str] = {}
    jobs = []
    for dtype in dtypes:
        for provider in providers:
            reason = S.why_not(provider, device, dtype)
            if reason is not None:
                skipped[f"{provider} {dtype}"] = reason
                continue
            jobs += [(axis, provider, cell, shape, dtype) for axis, values in sweeps.items()
                     for cell in cells for shape in shapes(axis, values, base)]
    rows = []
    load_start = S.load_average()
    with _alloc.poisoned(False):
        for axis, provider, cell, shape, dtype in (progress(jobs) if progress else jobs):
            try:
                for row in S.run_row(provider, cell, shape, dtype, device, ("fwd",)):
                    rows.append(dict(row, sweep=axis,
                                     us_per_step=row["median_ms"] * 1e3 / shape[0]))
            except Exception as err:  # one failing point must not end the sweep
                skipped[f"{provider} {dtype} {cell} {','.join(map(str, shape))}"] = \
                    f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    meta = S.metadata(S.default_suite(device))
    meta.update(suite="sweep", skipped=skipped, base=base, sweeps=sweeps, load_start=load_start,
                load_end=S.load_average())
    return check_busy({"meta": meta, "rows": rows})


def plot(results: dict, folder: Path, name: str) -> List[Path]:
    """One PNG per sweep, `<name>_<axis>.png`: µs per step (log) against the swept size (log2),
    one line per provider, dtype and cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for axis in dict.fromkeys(r["sweep"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["sweep"] == axis]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        lines = dict.fromkeys((r["provider"], r["dtype"], r["cell"]) for r in rows)
        for provider, dtype, cell in lines:
            pts = sorted((r[axis], r["us_per_step"]) for r in rows
                         if (r["provider"], r["dtype"], r["cell"]) == (provider, dtype, cell))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="--" if provider == BASELINE else "-",
                    label=f"{provider} {dtype} {cell}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("µs per step (forward, input GEMM included)")
        fixed = ", ".join(f"{k}={v}" for k, v in results["meta"]["base"].items() if k != axis)
        ax.set_title(f"{results['meta'].get('gpu') or 'CPU'}: sweep over {axis} ({fixed}, I=H)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"{name}_{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
