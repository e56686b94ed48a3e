"""Distribution of the parity rule's ratios (fused_rnn/testing.py) over the random cases of
`fused-rnn parity`, per backend: for each case, the worst over its checked tensors (output,
h_n, c_n, every gradient) of

  rms  = rms_err / (RMS_FACTOR x torch's rms_err + atol)   the rule's accuracy statistic
  max  = max_err / (MAX_FACTOR x torch's max_err + atol)   the rule's outlier statistic
  rule = max(rms, max)                                     the case passes when <= 1
  old  = max_err / (2 x torch's max_err + ATOL)            the rule before the RMS statistic

with the rule's atol (ATOL x max(1, rms(truth)) outside float64), and, to show what scaling
the atol changes, rms and max with the fixed ATOL. Prints median, p90, p99 and max of each,
the worst case's label and tensor, and how many cases exceed 1.

On a machine without CUDA it runs the Triton kernels in Triton's interpreter and the CUDA
kernels emulated (TRITON_INTERPRET=1, FUSED_RNN_CUDA_EMULATE=1, set here unless given); the
first use of "cuda" builds the emulated extension (minutes). Slow: run it in the background.

  python scripts/parity_distribution.py --seeds 8 --backends reference triton cuda \\
      --json parity_distribution.json
  python scripts/parity_distribution.py --from-json parity_distribution.json
"""
import argparse
import json
import math
import os
import sys
import time
import warnings

import torch

if not torch.cuda.is_available():  # before fused_rnn imports triton
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("FUSED_RNN_CUDA_EMULATE", "1")

from fused_rnn import backends, testing  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
STATS = ("rule", "rms", "max", "old", "rms, fixed atol", "max, fixed atol")


def records(result: testing.Result, seed: int):
    """One JSON-able record per checked tensor of a Result."""
    for k in result.errors:
        yield {"backend": result.backend, "dtype": str(result.dtype).replace("torch.", ""),
               "seed": seed, "case": result.case.label(), "tensor": k,
               "max_err": result.errors[k], "torch_max_err": result.torch_errors[k],
               "rms_err": result.rms_errors[k], "torch_rms_err": result.torch_rms_errors[k],
               "truth_rms": result.truth_rms[k]}


def ratios(r) -> dict:
    """Every statistic of one tensor's record."""
    dtype = DTYPES[r["dtype"]]
    a, fixed = testing.atol(dtype, r["truth_rms"]), testing.ATOL[dtype]
    rms = r["rms_err"] / (testing.RMS_FACTOR * r["torch_rms_err"] + a)
    mx = r["max_err"] / (testing.MAX_FACTOR * r["torch_max_err"] + a)
    return {"rule": max(rms, mx), "rms": rms, "max": mx,
            "old": r["max_err"] / (2 * r["torch_max_err"] + fixed),
            "rms, fixed atol": r["rms_err"] / (testing.RMS_FACTOR * r["torch_rms_err"] + fixed),
            "max, fixed atol": r["max_err"] / (testing.MAX_FACTOR * r["torch_max_err"] + fixed)}


def quantile(sorted_values, q: float) -> float:
    """Nearest-rank quantile of a sorted list."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def table(recs, per: str = "case") -> str:
    """Markdown table: per backend, dtype and statistic, the quantiles of the worst ratio per
    case (per="case") or of every tensor's ratio (per="tensor")."""
    groups = {}
    for r in recs:
        key = (r["backend"], r["dtype"])
        unit = (r["seed"], r["case"]) if per == "case" else (r["seed"], r["case"], r["tensor"])
        stats = ratios(r)
        cases = groups.setdefault(key, {})
        worst = cases.setdefault(unit, {s: (-1.0, "") for s in STATS})
        for s, v in stats.items():
            v = float("inf") if v != v else v  # NaN: worst
            if v > worst[s][0]:
                worst[s] = (v, r["tensor"])
    lines = [f"| backend | dtype | statistic | {per}s | median | p90 | p99 | max | > 1 | "
             f"worst {per} (seed, label, tensor) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (backend, dtype), cases in groups.items():
        for s in STATS:
            vals = sorted((v[s][0], unit, v[s][1]) for unit, v in cases.items())
            xs = [v for v, _, _ in vals]
            top, unit, tensor = vals[-1]
            lines.append(f"| {backend} | {dtype} | {s} | {len(xs)} | {quantile(xs, 0.5):.3f} | "
                         f"{quantile(xs, 0.9):.3f} | {quantile(xs, 0.99):.3f} | {top:.3f} | "
                         f"{sum(x > 1 for x in xs)} | seed {unit[0]}, {unit[1]}, {tensor} |")
    return "\n".join(lines)


def torch_table(recs) -> str:
    """Markdown table: per backend and dtype, the quantiles over tensors of torch's own error
    (RMS and max) divided by max(1, rms(truth)), and the share of tensors where it is below
    the dtype's ATOL: the basis for choosing an atol (docs/testing.md)."""
    groups = {}
    for r in recs:
        scale = max(1.0, r["truth_rms"])
        g = groups.setdefault((r["backend"], r["dtype"]), {"rms": [], "max": []})
        g["rms"].append(r["torch_rms_err"] / scale)
        g["max"].append(r["torch_max_err"] / scale)
    lines = ["| backend | dtype | torch's error / max(1, rms(truth)) | tensors | median | p90 | "
             "p99 | max | share < ATOL |", "|---|---|---|---|---|---|---|---|---|"]
    for (backend, dtype), g in groups.items():
        a = testing.ATOL[DTYPES[dtype]]
        for s in ("rms", "max"):
            xs = sorted(g[s])
            lines.append(f"| {backend} | {dtype} | {s} | {len(xs)} | {quantile(xs, 0.5):.3g} | "
                         f"{quantile(xs, 0.9):.3g} | {quantile(xs, 0.99):.3g} | {xs[-1]:.3g} | "
                         f"{sum(x < a for x in xs) / len(xs):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--seeds", type=int, default=8,
                   help="number of seeds of testing.random_cases, from --first-seed (default 8)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=48,
                   help="random cases per seed (default 48, as `fused-rnn parity`)")
    p.add_argument("--backends", nargs="+", default=["reference", "triton", "cuda"],
                   help="backends (default reference triton cuda; unavailable ones are skipped)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--per", choices=("case", "tensor"), default="case",
                   help="quantiles of each case's worst ratio (default) or of every tensor's")
    p.add_argument("--json", help="write every tensor's errors here (JSON lines, appended as "
                                  "they come, so a stopped run keeps what it measured)")
    p.add_argument("--from-json", help="print the table of a file written by --json; no runs")
    p.add_argument("--torch-errors", action="store_true",
                   help="also print the distribution of torch's own errors (to choose an atol)")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        print(table(recs, args.per))
        if args.torch_errors:
            print("\n" + torch_table(recs))
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    names = []
    for name in args.backends:
        reason = backends.why_not(backends.check_name(name), device, dtype)
        if reason is None:
            names.append(name)
        else:
            print(f"backend {name!r} skipped: {reason}", file=sys.stderr)
    out = open(args.json, "a") if args.json else None
    recs = []
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "LSTM with projections ... oneDNN"
        for name in names:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                cases = testing.random_cases(args.cases, seed=seed,
                                             with_dropout=device.type == "cpu")
                for case in cases:
                    res = testing.check(case, name, dtype, device)
                    for r in records(res, seed):
                        recs.append(r)
                        if out:
                            out.write(json.dumps(r) + "\n")
                    if out:
                        out.flush()
                print(f"{name} seed {seed}: {len(cases)} cases, {time.time() - start:.0f} s",
                      file=sys.stderr, flush=True)
    if out:
        out.close()
    print(table(recs, args.per))
    if args.torch_errors:
        print("\n" + torch_table(recs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
