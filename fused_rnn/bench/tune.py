"""`fused-rnn bench --tune`: time every cluster plan the CUDA build compiled (the binding's
cluster_plans(), from csrc/plans.h) per (cell, dtype, H, B bucket) on this GPU and write the
table the CUDA backend reads (fused_rnn/ops/cuda/tuned.py), one file per GPU model.
`--tune-backends` (tune_backends) adds to the same table which backend and Triton variant
backend="auto" should take per (cell, dtype, H, B).

Per row: each forward plan, forward only (no_grad); then each backward plan, forward and
backward of out.sum() with the forward's fastest plan. A plan counts only where it ran
(last_used names it: a cluster that does not fit falls back). Timing: bench/suite.py's measure.
Under FUSED_RNN_CUDA_EMULATE=1 the same runs time the emulated kernels on the CPU (fp32): the
table machinery, not speed."""
import datetime
import json
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..ops.cuda import extension, tuned
from ..ops.cuda import launch as cuda_launch
from ..ops.cuda.plans import plan_name
from . import suite

B_BUCKETS = (1, 16, 64)  # batch sizes timed on a GPU: one tile, a full tile, four tiles
T_STEPS = 64             # steps per timed call on a GPU
# On the CPU (the emulated build): a partial tile and two tiles, few steps; what the test of the
# table machinery needs, not timings.
CPU_B_BUCKETS, CPU_T_STEPS = (2, 20), 2


def _commit() -> Optional[str]:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _plans() -> Dict[str, Dict[int, List[str]]]:
    """{kind: {H: [plan names, the default first]}} of this build."""
    out: Dict[str, Dict[int, List[str]]] = {"fwd": {}, "bwd": {}}
    for kind, H, code in extension.load().cluster_plans():
        out[kind].setdefault(int(H), []).append(plan_name(int(code)))
    return out


def _time(call: Callable[[], None], params: Sequence[torch.Tensor], device) -> float:
    call()  # the first call builds, plans and warms up
    return suite.measure(call, device, params)[0]


def tune(device: torch.device, cells: Sequence[str], dtypes: Sequence[str],
         b_buckets: Sequence[int] = B_BUCKETS, T: int = T_STEPS,
         hs: Optional[Sequence[int]] = None, log: Callable[[str], None] = print) -> dict:
    """The table's content: every (cell, dtype, H, B) row's fastest plan each way, with every
    plan's µs per step."""
    plans, entries = _plans(), []
    for cell in cells:
        for dtype in dtypes:
            # fp32 and tf32 are the suite's: TF32 off and on (other kernels, other plans).
            with suite.tf32(suite.DTYPES[dtype][1]):
                for H in sorted(hs or plans["fwd"]):
                    for B in b_buckets:
                        shape = (T, B, H, H)
                        x = torch.randn(T, B, H, device=device, dtype=suite.DTYPES[dtype][0])
                        best = {}
                        for kind in ("fwd", "bwd"):
                            timed = {}
                            for name in plans[kind].get(H, []):
                                fn, params = suite.build("cuda_cluster", cell, shape, dtype, device)

                                def call(fn=fn, name=name, kind=kind):
                                    if kind == "fwd":
                                        with torch.no_grad(), cuda_launch.cluster_plan(name):
                                            fn(x)
                                    else:
                                        with cuda_launch.cluster_plan(best["fwd"]), \
                                                cuda_launch.cluster_bwd_plan(name):
                                            fn(x).float().sum().backward()
                                ms = _time(call, params, device)
                                ran = cuda_launch.last_used["plan" if kind == "fwd" else "bwd_plan"]
                                if ran == name:
                                    timed[name] = round(ms * 1e3 / T, 3)
                                log(f"{kind} {cell} {dtype} H={H} B={B} {name}: "
                                    f"{ms * 1e3 / T:.2f} us/step" + ("" if ran == name else
                                                                      f" (ran {ran}: not counted)"))
                            if not timed:  # (the backward then runs with H's default forward)
                                best[kind] = None
                                continue
                            best[kind] = min(timed, key=timed.get)
                            entries.append(dict(kind=kind, cell=cell, dtype=dtype, H=H, B=B,
                                                plan=best[kind], us_per_step=timed))
    return {"gpu": tuned.device_name(device), "date": datetime.date.today().isoformat(),
            "commit": _commit(), "torch": torch.__version__, "T": T, "entries": entries}


def write(table: dict) -> Path:
    """The table to its file (tuned.table_path), and the backend's lookups forgotten."""
    path = tuned.table_path(table["gpu"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    tuned.clear()
    return path


# `--tune-backends`: the hidden sizes timed (where the tile, persistent and cluster kernels
# change hands) and the steps per timed call.
AUTO_HS = (64, 128, 256, 512, 1024)
AUTO_T = 64


def tune_backends(device: torch.device, cells: Sequence[str], dtypes: Sequence[str],
                  b_buckets: Sequence[int] = B_BUCKETS, T: int = AUTO_T,
                  hs: Sequence[int] = AUTO_HS, providers: Sequence[str] = tuned.AUTO_PROVIDERS,
                  log: Callable[[str], None] = print) -> List[dict]:
    """The auto kinds' entries (ops/cuda/tuned.py): per (cell, dtype, H, B), the fastest of
    `providers` that can run here, forward alone (auto_fwd) and forward and backward of
    out.sum() (auto_train), with every provider's µs per step (suite.build's rows)."""
    entries = []
    for cell in cells:
        for dtype in dtypes:
            with suite.tf32(suite.DTYPES[dtype][1]):
                for H in hs:
                    for B in b_buckets:
                        shape = (T, B, H, H)
                        x = torch.randn(T, B, H, device=device, dtype=suite.DTYPES[dtype][0])
                        for kind in tuned.AUTO_KINDS:
                            timed = {}
                            for provider in providers:
                                reason = suite.why_not(provider, device, dtype)
                                # (on the CPU the interpreter and the emulation run: the
                                # machinery's test, not timings)
                                if reason is not None and not reason.endswith("not timing"):
                                    continue
                                fn, params = suite.build(provider, cell, shape, dtype, device)

                                def call(fn=fn, kind=kind):
                                    if kind == "auto_fwd":
                                        with torch.no_grad():
                                            fn(x)
                                    else:
                                        fn(x).float().sum().backward()
                                timed[provider] = round(_time(call, params, device) * 1e3 / T, 3)
                                log(f"{kind} {cell} {dtype} H={H} B={B} {provider}: "
                                    f"{timed[provider]:.2f} us/step")
                            if timed:
                                entries.append(dict(kind=kind, cell=cell, dtype=dtype, H=H, B=B,
                                                    plan=min(timed, key=timed.get),
                                                    us_per_step=timed))
    return entries


def merge(table: dict, entries: List[dict], kinds: Sequence[str]) -> dict:
    """table with its entries of `kinds` replaced by `entries`."""
    kept = [e for e in table["entries"] if e["kind"] not in kinds]
    return dict(table, entries=kept + list(entries))


def existing(device: torch.device) -> dict:
    """This GPU's table as written, or an empty one."""
    path = tuned.table_path(tuned.device_name(device))
    if path.is_file():
        return json.loads(path.read_text())
    return {"gpu": tuned.device_name(device), "date": datetime.date.today().isoformat(),
            "commit": _commit(), "torch": torch.__version__, "T": AUTO_T, "entries": []}
