"""The cluster plans chosen by measurement: one JSON table per GPU model, written by
`fused-rnn bench --tune` (fused_rnn/bench/tune.py) into fused_rnn/ops/cuda/tuned/ (or
$FUSED_RNN_TUNED_DIR), and read here. An entry names the fastest plan for (kind, cell, dtype, H,
B): kind "fwd" (the cluster forward, timed alone) or "bwd" (the cluster backward, timed with the
forward's tuned plan). A call takes the entry of its kind, cell, dtype and H whose B is nearest
(in log2; the smaller on a tie), and H's default plan (code 0) where the table has none, or where
there is no table for the GPU. A plan asked with cluster_plan / cluster_bwd_plan comes first.

Entries of kinds "auto_fwd" (no grad) and "auto_train" (forward and backward), written by
`fused-rnn bench --tune-backends`, name instead the fastest of AUTO_PROVIDERS for (cell, dtype,
H, B): what backend="auto" runs on CUDA tensors (fused_rnn/functional.py), for the exact H and
the nearest B; where there is none, auto keeps its default order (backends.py).

Lookups are memoised per (device, kind, cell, dtype, H, B): the plain layer call pays one dict
lookup (benchmarks/host_overhead.py)."""
import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from .plans import plan_code

PACKAGE_DIR = Path(__file__).resolve().parent / "tuned"
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
               torch.float64: "fp64"}
EMULATED = "emulated"  # the device name of the emulated build (CPU tensors)
# The backend choices auto may take: bench providers ("<backend>[_<variant>]").
AUTO_KINDS = ("auto_fwd", "auto_train")
AUTO_PROVIDERS = ("cuda", "triton", "triton_step", "triton_persistent")

_tables: Dict[str, Optional[dict]] = {}
_memo: Dict[tuple, int] = {}


def table_dir() -> Path:
    return Path(os.environ.get("FUSED_RNN_TUNED_DIR") or PACKAGE_DIR)


def slug(gpu: str) -> str:
    """The table's file stem for a GPU model name ("NVIDIA H200" -> "nvidia_h200")."""
    return re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_")


def table_path(gpu: str) -> Path:
    return table_dir() / f"{slug(gpu)}.json"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else EMULATED


def clear() -> None:
    """Forget the loaded tables and lookups (after a new table is written)."""
    _tables.clear()
    _memo.clear()


def _table(gpu: str) -> Optional[dict]:
    if gpu not in _tables:
        path = table_path(gpu)
        _tables[gpu] = _index(json.loads(path.read_text())) if path.is_file() else None
    return _tables[gpu]


def _index(table: dict) -> dict:
    """{(kind, cell, dtype, H): [(B, plan code), ...]} from a table's entries (for the auto
    kinds the provider's name stands for the code)."""
    out: Dict[tuple, List[tuple]] = {}
    for e in table["entries"]:
        if e["kind"] in AUTO_KINDS:
            if e["plan"] not in AUTO_PROVIDERS:
                raise ValueError(f"tuned table: expected a provider of {AUTO_PROVIDERS} for "
                                 f"kind {e['kind']!r}, got {e['plan']!r}")
            code = e["plan"]
        else:
            code = plan_code(e["plan"], backward=e["kind"] == "bwd")
        out.setdefault((e["kind"], e["cell"], e["dtype"], int(e["H"])), []).append(
            (int(e["B"]), code))
    return out


def dtype_name(dtype: torch.dtype) -> Optional[str]:
    """A call's dtype as the table (and the benchmark suite) names it: fp32 is "tf32" while
    torch's cuDNN TF32 flag for RNNs is on, as the binding reads it for the kernels (their
    fp32 product is then Tf32, else the three-product Tf32x3: other kernels, other plans)."""
    if dtype == torch.float32:
        from . import extension
        return "tf32" if extension.load().rnn_allows_tf32() else "fp32"
    return DTYPE_NAMES.get(dtype)


def _nearest(entries, B: int):
    """The entry whose B is nearest B in log2 (the smaller on a tie)."""
    return min(entries, key=lambda e: (abs(math.log2(e[0]) - math.log2(B)), e[0]))[1]


def backend_for(device: torch.device, cell: str, dtype: torch.dtype, H: int, B: int,
                train: bool) -> Optional[str]:
    """The provider (AUTO_PROVIDERS) the table measured fastest for a call of `cell` ("LSTM",
    "GRU" or "RNN"), or None where it has no entry for the exact H. fp32 is "tf32" while
    torch's cuDNN TF32 flag is on, read from torch (not from the CUDA extension, which a
    Triton-only install may not build)."""
    name = (("tf32" if torch.backends.cudnn.allow_tf32 else "fp32") if dtype == torch.float32
            else DTYPE_NAMES.get(dtype))
    kind = AUTO_KINDS[1] if train else AUTO_KINDS[0]
    key = (device.type, device.index, kind, cell, name, H, B)
    if key not in _memo:
        table = _table(device_name(device))
        entries = table.get((kind, cell, name, H)) if table else None
        _memo[key] = _nearest(entries, B) if entries and B > 0 else None
    return _memo[key]


def plan_for(kind: str, device: torch.device, cell: str, dtype: torch.dtype, H: int,
             B: int) -> int:
    """The tuned plan code for a call (0: H's default)."""
    name = dtype_name(dtype)
    key = (device.type, device.index, kind, cell, name, H, B)
    code = _memo.get(key)
    if code is None:
        table = _table(device_name(device))
        entries = table.get((kind, cell, name, H)) if table else None
        code = _nearest(entries, B) if entries and B > 0 else 0
        _memo[key] = code
    return code
