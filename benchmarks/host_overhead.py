"""What a layer call costs the host: the real Python and binding path of the CUDA backend with
its kernels stubbed, on the CPU.

The emulated build (FUSED_RNN_CUDA_EMULATE=1) runs in its null-launch mode: every launch checks
its arguments, is counted and returns without running the kernel (csrc/platform.cuh). What is
left is what a call costs the host on a GPU machine too: argument checks, the backend choice,
the buffers, the custom ops and autograd, the input and weight-gradient GEMMs (tiny here) and
the binding. Each row is timed call by call (median, p20, p80 over many calls) beside F.linear
on the same tiny input in the same run, so a busy machine shows in both; with --callgrind the
same rows are also counted in instructions per call under valgrind, which a busy machine does
not change.

    python benchmarks/host_overhead.py [--json benchmarks/results/host_cpu.json] [--callgrind]
        [--calls 2000] [--baseline OLD.json]

--baseline copies an earlier run's median_us and instructions into each row as *_before.
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["FUSED_RNN_CUDA_EMULATE"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fused_rnn  # noqa: E402
from fused_rnn import _alloc  # noqa: E402
from fused_rnn.ops.cuda import extension  # noqa: E402

# Tiny on purpose: the GEMMs that are left cost next to nothing, so the rows are the host path.
T, B, I, H, P = 8, 4, 16, 16, 8
LAYER_CONFIGS = [  # (layers, bidirectional, packed, proj)
    (1, False, False, False), (2, False, False, False), (1, True, False, False),
    (1, False, True, False), (1, False, False, True)]


def rows_to_run():
    rows = []
    for cell in ("LSTM", "GRU"):
        for layers, bi, packed, proj in LAYER_CONFIGS:
            if proj and cell != "LSTM":
                continue
            for mode in ("fwd", "fwdbwd"):
                rows.append(dict(cell=cell, layers=layers, bidirectional=bi, packed=packed,
                                 proj=proj, mode=mode))
        rows.append(dict(cell=cell, layers=1, bidirectional=False, packed=False, proj=False,
                         mode="cell"))
    return rows


def make_call(row):
    """A function that makes one call of the row, one that resets between calls, and whether
    the calls run with gradients (fwd and cell rows run inside one torch.no_grad() region, as
    an inference loop does: entering no_grad costs its own 3-4 us here, torch_floors_us)."""
    torch.manual_seed(0)
    cell, mode = row["cell"], row["mode"]
    if mode == "cell":
        m = {"LSTM": fused_rnn.LSTMCell, "GRU": fused_rnn.GRUCell}[cell](I, H, backend="cuda")
        x = torch.randn(B, I)
        h = torch.randn(B, H)
        hx = (h, torch.randn(B, H)) if cell == "LSTM" else h

        return (lambda: m(x, hx)), (lambda: None), False  # a decode step: inference
    kw = dict(num_layers=row["layers"], bidirectional=row["bidirectional"], backend="cuda")
    if row["proj"]:
        kw["proj_size"] = P
    m = {"LSTM": fused_rnn.LSTM, "GRU": fused_rnn.GRU}[cell](I, H, **kw)
    x = torch.randn(T, B, I)
    if row["packed"]:
        x = pack_padded_sequence(x, torch.tensor([T, T - 1, T - 3, 2]), enforce_sorted=True)
    params = list(m.parameters())
    if mode == "fwd":
        return (lambda: m(x)), (lambda: None), False
    out_shape = (T, B, (2 if row["bidirectional"] else 1) * (P if row["proj"] else H))
    g = torch.randn(out_shape)
    if row["packed"]:
        g = torch.randn(x.data.shape[0], out_shape[-1])

    def call():
        out = m(x)[0]
        (out.data if row["packed"] else out).backward(g)

    def reset():  # as optimizer.zero_grad() (set_to_none) between training steps
        for p in params:
            p.grad = None
    return call, reset, True


def linear_call():
    x = torch.randn(T * B, I)
    w = torch.randn(4 * H, I)
    return (lambda: F.linear(x, w)), (lambda: None), False


def floors(n):
    """What torch itself costs here for the same kinds of call: nn.Linear on the tiny input
    under no_grad (a module call with a GEMM), and forward + backward of the cheapest graph with
    four parameters (what autograd's engine costs, whatever the layer does)."""
    lin = torch.nn.Linear(I, 4 * H)
    x = torch.randn(T * B, I)

    def linear_module():
        return lin(x)

    def no_grad_region():
        with torch.no_grad():
            pass
    ws = [torch.randn(4 * H, I, requires_grad=True) for _ in range(4)]
    g = torch.randn(4 * H, I)

    def tiny_graph():
        (ws[0] * ws[1] + ws[2] * ws[3]).backward(g)

    def reset():
        for w in ws:
            w.grad = None
    return {"nn.Linear no_grad": round(time_calls(linear_module, lambda: None, n, False)[0], 2),
            "entering torch.no_grad()": round(time_calls(no_grad_region, lambda: None, n)[0], 2),
            "autograd fwd+bwd, 4 parameters, 3 ops": round(time_calls(tiny_graph, reset, n)[0], 2)}


def time_calls(call, reset, n, grad=True):
    """µs per call: median, p20, p80 over n calls, each timed alone (grad: gradients on)."""
    us = []
    with torch.set_grad_enabled(grad):
        for _ in range(max(20, n // 20)):
            call()
            reset()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            call()
            us.append((time.perf_counter_ns() - t0) / 1e3)
            reset()
    q = statistics.quantiles(us, n=10)
    return statistics.median(us), q[1], q[7]


def timed_rows(n):
    results = []
    lin_call, lin_reset, _ = linear_call()
    for row in rows_to_run():
        call, reset, grad = make_call(row)
        med, p20, p80 = time_calls(call, reset, n, grad)
        lin = time_calls(lin_call, lin_reset, max(100, n // 4), False)[0]
        results.append(dict(row, median_us=round(med, 2), p20_us=round(p20, 2),
                            p80_us=round(p80, 2), linear_us=round(lin, 2),
                            instructions=None))  # filled in by --callgrind
        print(f"{label(row):40s} {med:8.1f} us (p20 {p20:6.1f}, p80 {p80:6.1f})  "
              f"F.linear {lin:5.1f} us", flush=True)
    return results


def label(row):
    parts = [row["cell"], row["mode"], f"L{row['layers']}"]
    parts += [k for k in ("bidirectional", "packed", "proj") if row[k]]
    return " ".join(parts)


# ------------------------------------------------------------------------------ callgrind

_CLIENT = r"""
#include <valgrind/callgrind.h>
void frnn_cg_zero(void) { CALLGRIND_ZERO_STATS; }
void frnn_cg_dump(const char* label) { CALLGRIND_DUMP_STATS_AT(label); }
void frnn_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void frnn_cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def _client_library(tmp: Path):
    src, lib = tmp / "cg.c", tmp / "libcg.so"
    src.write_text(_CLIENT)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


def counted_rows(calls: int, out_dir: Path):
    """Child process under callgrind: per row, warm up, then count `calls` calls."""
    cg = _client_library(out_dir)
    rows = [linear_row()] + rows_to_run()
    for k, row in enumerate(rows):
        call, reset, grad = linear_call() if row.get("mode") == "linear" else make_call(row)
        with torch.set_grad_enabled(grad):
            cg.frnn_cg_start()
            for _ in range(3):
                call()
                reset()
            cg.frnn_cg_zero()
            for _ in range(calls):
                call()
                reset()
            cg.frnn_cg_dump(f"row{k}".encode())
            cg.frnn_cg_stop()


def linear_row():
    return dict(mode="linear")


def callgrind(calls: int):
    """Instructions per call of each row (and of F.linear), from callgrind's dumps."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={tmp}/cg.out", sys.executable, __file__,
               "--callgrind-child", str(calls), "--tmp", str(tmp)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counts = {}
        for f in tmp.glob("cg.out*"):
            text = f.read_text(errors="replace")
            desc = next((ln for ln in text.splitlines() if ln.startswith("desc: Trigger:")), "")
            total = next((ln for ln in text.splitlines() if ln.startswith(("summary:",
                                                                            "totals:"))), None)
            if "row" in desc and total:
                k = int(desc.rsplit("row", 1)[1].split()[0])
                counts[k] = int(total.split()[1]) / calls
        return counts


def _commit():
    """The checkout's commit, "-dirty" when its code has changes (None outside a git
    checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!benchmarks/results"],  # (this run's own output)
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="timed calls per row")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count instructions per call under valgrind (a few minutes)")
    ap.add_argument("--cg-calls", type=int, default=20, help="counted calls per row")
    ap.add_argument("--baseline", help="an earlier results file: its figures become *_before")
    ap.add_argument("--callgrind-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)  # one thread: a GEMM this small gains nothing from more
    ext = extension.load()
    ext.set_null_launch(True)
    with _alloc.poisoned(False):
        if args.callgrind_child:
            counted_rows(args.callgrind_child, Path(args.tmp))
            return
        torch_floors = floors(args.calls)  # beside the rows, before them
        rows = timed_rows(args.calls)
        meta = dict(what="host µs per call, kernels stubbed (emulated build, null launches)",
                    T=T, B=B, I=I, H=H, proj_size=P, dtype="float32", calls=args.calls,
                    torch=torch.__version__, python=platform.python_version(),
                    machine=platform.machine(), cpus=os.cpu_count(),
                    load_avg=round(os.getloadavg()[0], 2), date=time.strftime("%Y-%m-%d"),
                    commit=_commit(),
                    torch_floors_us=torch_floors)
        print("torch here:", meta["torch_floors_us"])
        if args.callgrind:
            counts = callgrind(args.cg_calls)
            meta["linear_instructions"] = round(counts.get(0, float("nan")))
            meta["cg_calls"] = args.cg_calls
            for k, row in enumerate(rows, start=1):
                row["instructions"] = round(counts[k]) if k in counts else None
                print(f"{label(row):40s} {row['instructions']:>12,} instructions/call")
    if args.baseline:
        before = {label(r): r for r in json.loads(Path(args.baseline).read_text())["rows"]}
        for row in rows:
            old = before.get(label(row), {})
            row["median_us_before"] = old.get("median_us")
            row["instructions_before"] = old.get("instructions")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
