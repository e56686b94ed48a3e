"""Results of the suite: speedups over cuDNN, the busy-machine check, the table, the JSON file
and the plot."""
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

BASELINE = "cudnn"
ROW_KEYS = ("cell", "dtype", "T", "B", "I", "H", "mode")
# A row whose (p80 - p20) / median is above SPREAD_LIMIT is marked noisy; when at least
# BUSY_SHARE of the rows are, the machine was busy (one noisy row alone can be the code's own
# variance, e.g. a bimodal kernel). Measured with the CPU suite on a 2-core machine: at a load
# average of about 1, the spreads were 0.03-0.29 (median 0.13; 0 of 24 rows above 0.3); at 2-18
# (other jobs running), 30-34 of 36 rows were above 0.3 (median spread 0.5-1.3). The stored
# results agree: benchmarks/results/cpu.json 1 of 36 rows above 0.3, the H100 runs 0 of 64 and
# 3 of 128 (do_bench: a median spread of about 0.01).
SPREAD_LIMIT = 0.3
BUSY_SHARE = 0.25


def _key(row) -> Tuple:
    return tuple(row[k] for k in ROW_KEYS)


def plain(rows: List[dict]) -> List[dict]:
    """The rows without a regularisation option (the speedup tables and plots)."""
    return [r for r in rows if not r.get("option")]


def option_costs(rows: List[dict]) -> List[dict]:
    """Per regularisation row: its time over the same provider's time without the option
    (same config and mode); the issue's bar is <= 1.10 in training (fwdbwd)."""
    base = {(_key(r), r["provider"]): r["median_ms"] for r in plain(rows)}
    out = []
    for r in rows:
        ref = base.get((_key(r), r["provider"]))
        if r.get("option") and ref:
            out.append(dict({k: r[k] for k in ROW_KEYS}, provider=r["provider"],
                            option=r["option"], median_ms=r["median_ms"], plain_ms=ref,
                            cost=r["median_ms"] / ref))
    return out


def by_config(rows: List[dict]) -> Dict[Tuple, Dict[str, dict]]:
    """{(cell, dtype, T, B, I, H, mode): {provider: row}} in first-seen order (rows without a
    regularisation option)."""
    table: Dict[Tuple, Dict[str, dict]] = {}
    for row in plain(rows):
        table.setdefault(_key(row), {})[row["provider"]] = row
    return table


def providers(rows: List[dict]) -> List[str]:
    """Providers present, the baseline first."""
    seen = list(dict.fromkeys(r["provider"] for r in plain(rows)))
    return sorted(seen, key=lambda p: p != BASELINE)


def speedups(rows: List[dict]) -> Dict[str, List[float]]:
    """Per provider, baseline_ms / provider_ms for every config both measured."""
    out = defaultdict(list)
    for config in by_config(rows).values():
        if BASELINE not in config:
            continue
        for name, row in config.items():
            out[name].append(config[BASELINE]["median_ms"] / row["median_ms"])
    return dict(out)


def geomean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def spread(row: dict) -> float:
    """(p80 - p20) / median of a row (also of stored rows, which may not have the field)."""
    return (row["p80_ms"] - row["p20_ms"]) / row["median_ms"] if row["median_ms"] > 0 \
        else float("inf")


def noisy(row: dict) -> bool:
    """Whether a row's spread is above SPREAD_LIMIT (marked ! in the tables)."""
    return spread(row) > SPREAD_LIMIT


def spread_text(value: float) -> str:
    """A spread for a table cell, with the mark ! above SPREAD_LIMIT."""
    return f"{value:.2f}" + (" !" if value > SPREAD_LIMIT else "")


def busy_reasons(results: dict) -> List[str]:
    """Why the timings look unreliable, if they do: a 1-minute load average above the number
    of cores at the start or end of the run (when recorded), and BUSY_SHARE or more of the rows
    with a spread above SPREAD_LIMIT. Empty when the machine looked quiet."""
    meta, rows = results.get("meta", {}), results["rows"]
    reasons = []
    cores = meta.get("cores")
    for when in ("start", "end"):
        load = meta.get(f"load_{when}")
        if load is not None and cores and load > cores:
            reasons.append(f"load average {load:.2f} at the {when} of the run, above the "
                           f"{cores} cores")
    marked = sum(map(noisy, rows))
    if marked and marked >= BUSY_SHARE * len(rows):
        reasons.append(f"{marked} of {len(rows)} rows have (p80 - p20) / median above "
                       f"{SPREAD_LIMIT:g} (marked !)")
    return reasons


def check_busy(results: dict) -> dict:
    """Record the busy-machine check in results["meta"] ("busy", "busy_reasons",
    "spread_limit", "busy_share"); returns results."""
    reasons = busy_reasons(results)
    results["meta"].update(busy=bool(reasons), busy_reasons=reasons, spread_limit=SPREAD_LIMIT,
                           busy_share=BUSY_SHARE)
    return results


def busy_note(results: dict) -> str:
    """The warning line under a table: the machine looks busy, or (a milder note) a few rows
    are noisy; "" when neither."""
    reasons = busy_reasons(results)
    if reasons:
        return ("WARNING: the machine looks busy, these timings are not reliable: "
                + "; ".join(reasons) + ". Rerun on a quiet machine.")
    marked = sum(map(noisy, results["rows"]))
    return (f"note: {marked} of {len(results['rows'])} rows have (p80 - p20) / median above "
            f"{SPREAD_LIMIT:g} (marked !): their times are less certain") if marked else ""


def table(results: dict):
    """A rich Table: one row per config, each provider's median ms and speedup over cuDNN, and
    the geometric-mean speedup per provider last."""
    from rich.table import Table

    rows = results["rows"]
    names = providers(rows)
    device = results["meta"]["device"]
    baseline = "cuDNN" if device == "cuda" else "torch (ATen on the CPU)"
    t = Table(title=f"fused_rnn bench on {results['meta'].get('gpu') or 'CPU'}: median ms and "
                    f"speedup over {baseline} (provider 'cudnn')",
              caption=busy_note(results) or None, caption_style="bold red",
              caption_justify="left")
    for col in ROW_KEYS:
        t.add_column(col, justify="right" if col in "TBIH" else "left")
    for name in names:
        t.add_column(f"{name} ms", justify="right")
        if name != BASELINE:
            t.add_column(f"{name} x", justify="right")
    t.add_column("spread", justify="right")  # the largest (p80 - p20) / median of the row
    for key, config in by_config(rows).items():
        cells = [str(v) for v in key]
        base = config.get(BASELINE)
        for name in names:
            row = config.get(name)
            cells.append(f"{row['median_ms']:.3f}" if row else "-")
            if name != BASELINE:
                cells.append(f"{base['median_ms'] / row['median_ms']:.2f}"
                             if row and base else "-")
        worst = max(spread(r) for r in config.values())
        cells.append(spread_text(worst))
        t.add_row(*cells)
    gm = speedups(rows)
    footer = ["geomean", "", "", "", "", "", ""]
    for name in names:
        footer.append("")
        if name != BASELINE:
            footer.append(f"{geomean(gm.get(name, [])):.2f}")
    footer.append("")
    t.add_section()
    t.add_row(*footer)
    return t


def option_table(results: dict):
    """A rich Table of the regularisation rows: ms with the option, ms without, and the ratio."""
    from rich.table import Table

    t = Table(title="regularisation cost: time with the option / time without (same provider)")
    for col in ROW_KEYS + ("provider", "option", "ms", "plain ms", "cost"):
        t.add_column(col, justify="right" if col in ("T", "B", "I", "H", "ms", "plain ms",
                                                     "cost") else "left")
    for c in option_costs(results["rows"]):
        t.add_row(*[str(c[k]) for k in ROW_KEYS], c["provider"], c["option"],
                  f"{c['median_ms']:.3f}", f"{c['plain_ms']:.3f}", f"{c['cost']:.3f}")
    return t


def write_json(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def plot(results: dict, path: Path) -> Path:
    """Speedup over the baseline per shape, one bar per provider; one panel per (mode, dtype),
    log scale, with the baseline at 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    rows = plain(results["rows"])
    others = [p for p in providers(rows) if p != BASELINE]
    panels = list(dict.fromkeys((r["mode"], r["dtype"]) for r in rows))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(8.0, 0.9 * len(by_config(rows)) / max(1, len(panels))),
                                      3.2 * len(panels)))
    for ax, (mode, dtype) in zip(axes[:, 0], panels):
        configs = [(k, c) for k, c in by_config(rows).items()
                   if k[6] == mode and k[1] == dtype and BASELINE in c]
        labels = [f"{k[0]}\n{k[2]},{k[3]},{k[4]},{k[5]}" for k, _ in configs]
        width = 0.8 / max(1, len(others))
        for j, name in enumerate(others):
            xs, ys = [], []
            for i, (_, c) in enumerate(configs):
                if name in c:
                    xs.append(i + (j - (len(others) - 1) / 2) * width)
                    ys.append(c[BASELINE]["median_ms"] / c[name]["median_ms"])
            ax.bar(xs, ys, width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xticks(range(len(configs)), labels, fontsize=7)
        ax.set_ylabel("speedup over cudnn")
        ax.set_title(f"{mode}, {dtype}  (T,B,I,H)", fontsize=9)
        if others:  # the baseline alone has no bars
            ax.legend(fontsize=7, loc="best")
    device = results["meta"].get("gpu") or "CPU"
    fig.suptitle(f"fused_rnn bench on {device}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
