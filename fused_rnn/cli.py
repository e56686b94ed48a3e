"""`fused-rnn` (also `python -m fused_rnn`): info | parity | bench."""
import argparse
import platform
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import List, Sequence

import torch

from . import __version__, backends, testing
from .bench.suite import package_version

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def console():
    """A rich Console; wide when output is not a terminal, so tables in logs are not squashed."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=200)


def format_table(header: Sequence[str], rows: List[Sequence], title: str = None):
    from rich.table import Table
    t = Table(*header, title=title)
    for r in rows:
        t.add_row(*(str(c) for c in r))
    return t


def cmd_info(args) -> int:
    triton_version = package_version("triton") or "not installed"
    cuda = torch.cuda.is_available()
    print(f"fused_rnn  {__version__}")
    print(f"python     {platform.python_version()}")
    print(f"torch      {torch.__version__} (CUDA {torch.version.cuda or 'none'}, cuDNN "
          f"{torch.backends.cudnn.version() if cuda else 'n/a'})")
    print(f"triton     {triton_version}")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda \
        else []
    print(f"GPU        {', '.join(gpus) if gpus else 'none (torch.cuda.is_available() is False)'}")
    print()
    device = torch.device("cuda" if cuda else "cpu")
    rows = []
    for name in backends.NAMES:
        if name == "auto":
            rows.append((name, "yes", f"picks {backends.resolve('auto', device)!r} on {device}"))
            continue
        reason = backends.why_not(name, device)
        note = {"reference": "plain torch, the ground truth",
                "cudnn": "torch's own (cuDNN on CUDA, ATen on the CPU)"}.get(name, "")
        rows.append((name, "yes" if reason is None else "no", reason or note))
    console().print(format_table(("backend", f"available on {device}", "why / what"), rows))
    return 0


def cmd_parity(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = args.backend or [b for b in backends.NAMES
                             if b != "auto" and backends.why_not(b, device) is None]
    for name in names:
        reason = backends.why_not(backends.check_name(name), device)
        if reason is not None:
            print(f"backend {name!r} skipped: {reason}")
    names = [n for n in names if backends.why_not(n, device) is None]
    if not names:
        print("no backend to check: every one asked for is unavailable here")
        return 2
    # Off the CPU, dropout masks cannot match the CPU truth's: no dropout cases there.
    cases = testing.random_cases(args.cases, seed=args.seed, with_dropout=device.type == "cpu")
    dtypes = [_DTYPES[d] for d in args.dtype]
    atols = ", ".join(f"{d}: {testing.ATOL[_DTYPES[d]]:g}"
                      + (" x max(1, rms(truth))" if _DTYPES[d] in testing.ATOL_SCALED else "")
                      for d in args.dtype)
    print(f"parity on {device}: {len(cases)} random cases x {len(dtypes)} dtypes x "
          f"{len(names)} backends, against float64 torch on the CPU; per tensor, rms err <= "
          f"{testing.RMS_FACTOR:g} x torch's rms err + atol and max err <= "
          f"{testing.MAX_FACTOR:g} x torch's max err + atol, torch in the same dtype; "
          f"atol {atols}")
    groups = defaultdict(list)
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "LSTM with projections ... oneDNN"
        for name in names:
            for dtype in dtypes:
                for case in cases:
                    res = testing.check(case, name, dtype, device)
                    groups[(name, case.cell, str(dtype).replace("torch.", ""))].append(res)
                    if not res.ok:
                        failures.append(res)
    rows = []
    for (name, cell, dtype), results in groups.items():
        ok = sum(r.ok for r in results)
        worst = max((r.worst() for r in results), key=lambda w: (w[0] != w[0], w[0]))
        rows.append((name, cell, dtype, len(results), f"{ok}/{len(results)}",
                     f"{max(max(r.errors.values()) for r in results):.2e}",
                     f"{max(max(r.torch_errors.values()) for r in results):.2e}",
                     f"{max(max(r.rms_errors.values()) for r in results):.2e}",
                     f"{max(max(r.torch_rms_errors.values()) for r in results):.2e}",
                     f"{worst[0]:.3f} ({worst[2]})",
                     "PASS" if ok == len(results) else "FAIL"))
    console().print(format_table(("backend", "cell", "dtype", "cases", "passed", "max err",
                                  "torch max err", "rms err", "torch rms err",
                                  "worst err/bound", "status"), rows))
    for res in failures[:20]:
        print(f"FAIL {res.backend} {res.dtype} {res.case.label()}: {'; '.join(res.failures())}")
    return 1 if failures else 0


def cmd_bench(args) -> int:
    from rich.progress import track

    from . import bench
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = console()
    if device.type != "cuda":
        out.print("No CUDA GPU here: running the small CPU suite (reference and a Python loop "
                  "against torch's own CPU LSTM/GRU). The GPU suite (the default grid against "
                  "cuDNN, fp32/tf32/bf16) needs CUDA.")
    if args.sweep:
        return _bench_sweep(args, device, out)
    if args.tune:
        return _bench_tune(args, device, out)
    if args.tune_backends:
        return _bench_tune_backends(args, device, out)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes or []]
    if any(len(s) != 4 for s in shapes):
        raise SystemExit("--shapes: expected T,B,I,H for each shape, e.g. 256,16,512,512")
    suite = bench.default_suite(device, quick=args.quick, cells=args.cells, dtypes=args.dtypes,
                                modes=args.modes, providers=args.providers, shapes=shapes,
                                options=args.options, option_dtypes=args.option_dtypes)
    results = bench.run_suite(suite, progress=lambda jobs: track(
        jobs, description="benchmarking", console=out, transient=True))
    results["meta"]["command"] = "fused-rnn " + " ".join(args.argv)
    out.print(bench.table(results))  # with the busy-machine warning under it, if any
    meta = results["meta"]
    out.print(f"load average (1 min): {meta['load_start']} at the start, {meta['load_end']} at "
              f"the end, on {meta['cores']} cores; busy: {'yes' if meta['busy'] else 'no'}")
    if bench.option_costs(results["rows"]):
        out.print(bench.option_table(results))
    for what, reason in results["meta"]["skipped"].items():
        out.print(f"skipped {what}: {reason}")
    name = args.name or suite.name
    folder = Path(args.out)
    json_path = bench.write_json(results, folder / f"{name}.json")
    png_path = bench.plot(results, folder / f"{name}.png")
    out.print(f"wrote {json_path} and {png_path}")
    return 0


def _bench_tune(args, device, out) -> int:
    """`fused-rnn bench --tune`: the measured plan table of the CUDA backend (bench/tune.py)."""
    from .bench import tune
    from .ops.cuda import extension
    if device.type != "cuda" and not extension.emulated():
        raise SystemExit("--tune times the CUDA kernels: it needs a GPU, or "
                         "FUSED_RNN_CUDA_EMULATE=1 to tune the emulated build on the CPU")
    gpu = device.type == "cuda"
    table = tune.tune(device, cells=args.cells or ("LSTM", "GRU"),
                      dtypes=args.dtypes or (("bf16", "fp16") if gpu else ("fp32",)),
                      b_buckets=tune.B_BUCKETS if gpu else tune.CPU_B_BUCKETS,
                      T=tune.T_STEPS if gpu else tune.CPU_T_STEPS,
                      log=out.print)
    path = tune.write(table)
    out.print(f"wrote {path}: {len(table['entries'])} entries for {table['gpu']}")
    return 0


def _bench_tune_backends(args, device, out) -> int:
    """`fused-rnn bench --tune-backends`: which backend and variant backend="auto" takes per
    cell, dtype, H and batch bucket, measured, into this GPU's table (bench/tune.py)."""
    from .bench import tune
    from .ops.cuda import tuned
    gpu = device.type == "cuda"
    entries = tune.tune_backends(
        device, cells=args.cells or ("LSTM", "GRU"),
        dtypes=args.dtypes or (("bf16", "fp16", "fp32") if gpu else ("fp32",)),
        b_buckets=tune.B_BUCKETS if gpu else tune.CPU_B_BUCKETS,
        T=tune.AUTO_T if gpu else tune.CPU_T_STEPS, hs=tune.AUTO_HS if gpu else (16,),
        providers=args.providers or tuned.AUTO_PROVIDERS, log=out.print)
    table = tune.merge(tune.existing(device), entries, tuned.AUTO_KINDS)
    path = tune.write(table)
    out.print(f"wrote {path}: {len(entries)} backend entries for {table['gpu']}")
    return 0


def _bench_sweep(args, device, out) -> int:
    """`fused-rnn bench --sweep`: µs per step against H, B and T (bench/sweep.py)."""
    from rich.progress import track

    from .bench import sweep
    results = sweep.run_sweeps(device, cells=args.cells or ("LSTM",), dtypes=args.dtypes,
                               providers=args.providers, progress=lambda jobs: track(
                                   jobs, description="sweeping", console=out, transient=True))
    results["meta"]["command"] = "fused-rnn " + " ".join(args.argv)
    from .bench.report import busy_note, spread, spread_text
    rows = [(r["sweep"], r["provider"], r["dtype"], r["cell"], f"{r['T']},{r['B']},{r['H']}",
             f"{r['us_per_step']:.2f}", spread_text(spread(r)))
            for r in results["rows"]]
    out.print(format_table(("sweep", "provider", "dtype", "cell", "T,B,H", "µs/step", "spread"),
                           rows, title="fused_rnn sweeps: forward µs per step"))
    note = busy_note(results)
    if note:
        out.print(note, style="bold red")
    for what, reason in results["meta"]["skipped"].items():
        out.print(f"skipped {what}: {reason}")
    from .bench import write_json
    name = (args.name or ("gpu" if device.type == "cuda" else "cpu")) + "_sweep"
    folder = Path(args.out)
    paths = [write_json(results, folder / f"{name}.json")] + sweep.plot(results, folder, name)
    out.print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fused-rnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, GPU, and which backends can run here (and why not)")
    p = sub.add_parser("parity", help="RMS and max error of each backend against torch's "
                                      "LSTM/GRU/RNN over random cases, against float64 truth "
                                      "(docs/testing.md); exits 1 if any breaks the rule")
    p.add_argument("--backend", action="append", choices=[b for b in backends.NAMES
                                                          if b != "auto"],
                   help="backend to check (repeatable; default: every available one)")
    p.add_argument("--cases", type=int, default=48, help="random cases per dtype (default 48)")
    p.add_argument("--dtype", action="append", choices=list(_DTYPES),
                   help="dtype (repeatable; default float64 and float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    from . import bench
    S = bench.suite

    def shape_list(shapes):
        return " ".join(",".join(map(str, s)) for s in shapes)
    b = sub.add_parser(
        "bench", help="time every provider against cuDNN (torch's own kernels on the CPU) over "
                      "the shape grid; write JSON results and a PNG plot",
        description="Time every provider against torch's own LSTM/GRU (cuDNN on CUDA, ATen on "
                    "the CPU) over a grid of (T, B, I, H) shapes, forward and forward+backward; "
                    "print a table of median ms and speedups, and write <name>.json and "
                    "<name>.png under --out. Each row gives the median and 20/80 percentiles: on "
                    "CUDA from triton.testing.do_bench, on the CPU from at least "
                    f"{S.CPU_MEASUREMENTS} timed blocks of calls, or {S.CPU_MIN_MEASUREMENTS} once "
                    f"a row has taken {S.CPU_MAX_RUN_S:g} s. Rows whose (p80 - p20) / median is "
                    f"above {bench.report.SPREAD_LIMIT:g} are marked '!', and a warning under the "
                    "table says when the machine looks busy: a 1-minute load average above the "
                    "number of cores at the start or end, or at least "
                    f"{bench.report.BUSY_SHARE:.0%} of the rows marked; the JSON records the "
                    "load, the spreads and the verdict (meta: busy, busy_reasons).")
    b.add_argument("--cells", nargs="+", choices=S.CELLS,
                   help="cell types (default: LSTM GRU; with --sweep: LSTM)")
    b.add_argument("--dtypes", nargs="+", choices=list(S.DTYPES),
                   help="dtypes (default: fp32 tf32 bf16 fp16 on CUDA, fp32 on the CPU; with "
                        "--sweep: bf16 fp16 on CUDA)")
    b.add_argument("--modes", nargs="+", choices=S.MODES,
                   help="fwd: forward without grad; fwdbwd: forward, then backward of "
                        "out.sum() (default: fwd fwdbwd)")
    b.add_argument("--providers", nargs="+", choices=S.PROVIDERS,
                   help="providers, cudnn included (default: all; unavailable ones are listed as "
                        "skipped, with the reason; with --sweep: cudnn cuda triton on CUDA, cudnn "
                        "reference on the CPU)")
    b.add_argument("--shapes", nargs="+", metavar="T,B,I,H",
                   help="instead of the default grid (CUDA: "
                        f"{shape_list(S.GPU_SHAPES)}; CPU: {shape_list(S.CPU_SHAPES)})")
    b.add_argument("--options", nargs="+", choices=list(S.OPTIONS) + ["none"],
                   help="regularisation rows, at p = 0.25 in training, for the triton and cuda "
                        "providers (default: all of them on CUDA, on the quick shapes or those of "
                        "--shapes; none on the CPU; none: no such rows)")
    b.add_argument("--option-dtypes", nargs="+", choices=list(S.DTYPES),
                   help="dtypes of the regularisation rows (default: bf16)")
    b.add_argument("--quick", action="store_true",
                   help=f"a small subset of the grid (CUDA: {shape_list(S.GPU_QUICK)}; CPU: "
                        f"{shape_list(S.CPU_QUICK)}) (default: off)")
    b.add_argument("--sweep", action="store_true",
                   help="instead of the grid: forward µs per step against H, B and T (LSTM, "
                        "bf16 and fp16 on CUDA, fp32 on the CPU), one plot per sweep (default: "
                        "off)")
    b.add_argument("--tune", action="store_true",
                   help="instead of the grid: time every CUDA cluster plan per cell, dtype, H "
                        "and batch bucket on this GPU (bf16 fp16, LSTM GRU by default) and write "
                        "the plan table the CUDA backend reads, one file per GPU model "
                        "(fused_rnn/ops/cuda/tuned/, or $FUSED_RNN_TUNED_DIR); on the CPU, under "
                        "FUSED_RNN_CUDA_EMULATE=1, the emulated kernels in fp32 (default: off)")
    b.add_argument("--tune-backends", action="store_true",
                   help="instead of the grid: time the fused providers (cuda, triton, "
                        "triton_step, triton_persistent; --providers to choose) per cell, dtype, "
                        "H and batch bucket, forward and training, and write which is fastest into "
                        "this GPU's table, for backend='auto' (default: off)")
    b.add_argument("--out", default="fused-rnn-results",
                   help="output folder (default: %(default)s)")
    b.add_argument("--name", help="file name stem (default: the suite's name: gpu, gpu-quick, "
                                  "cpu or cpu-quick; with --sweep: gpu or cpu, then _sweep)")
    b.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "parity" and not args.dtype:
        args.dtype = list(_DTYPES)
    return {"info": cmd_info, "parity": cmd_parity, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
