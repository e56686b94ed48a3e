"""The benchmark harness on the CPU: grid selection, rows, files, table, skipped providers,
the timer's measurement count and the busy-machine warning."""
import json
import os
from pathlib import Path

import pytest
import torch

from fused_rnn import cli
from fused_rnn.bench import report, suite as S

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
ROW_KEYS = {"cell", "dtype", "T", "B", "I", "H", "mode", "provider", "option", "median_ms",
            "p20_ms", "p80_ms", "peak_mb"}
# Fields added to the rows since; stored results may lack them.
NEW_ROW_KEYS = {"measurements", "load", "spread", "noisy"}
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
TIMER = {k: getattr(S, k) for k in ("CPU_MEASUREMENTS", "CPU_MIN_MEASUREMENTS", "CPU_MIN_RUN_S",
                                    "CPU_MAX_RUN_S")}


@pytest.fixture(autouse=True)
def _short_timer(monkeypatch):
    """These tests check rows, not times: a few blocks per row, on one thread (on a loaded
    machine, a tiny op on two threads can wait a whole time slice for the second one). The
    timer's own test puts the real counts back."""
    for k, v in dict(CPU_MEASUREMENTS=4, CPU_MIN_MEASUREMENTS=4, CPU_MIN_RUN_S=0.0,
                     CPU_MAX_RUN_S=0.0).items():
        monkeypatch.setattr(S, k, v)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_default_gpu_grid_is_the_issue_grid():
    s = S.default_suite(CUDA)  # a device object only: nothing runs
    assert list(s.shapes) == [(100, 64, 512, 512), (256, 1, 256, 256), (256, 8, 512, 512),
                              (256, 16, 1024, 1024), (256, 64, 1024, 1024),
                              (100, 256, 1024, 1024), (64, 32, 2048, 2048), (512, 16, 128, 128),
                              (256, 16, 256, 256), (1024, 16, 768, 768)]
    assert tuple(s.cells) == ("LSTM", "GRU")
    assert tuple(s.dtypes) == ("fp32", "tf32", "bf16", "fp16")
    assert tuple(s.modes) == ("fwd", "fwdbwd")
    assert {"cudnn", "loop", "reference", "triton", "triton_persistent", "cuda", "cuda_step",
            "cuda_persistent", "cuda_cluster"} <= set(s.providers)
    assert set(S.default_suite(CUDA, quick=True).shapes) < set(s.shapes)
    # Regularisation rows: every option, bf16, the quick shapes, the fused default providers.
    assert set(s.options) == {"variational_dropout", "weight_drop", "recurrent_dropout",
                              "rnndrop", "zoneout", "layer_norm"}
    assert (tuple(s.option_dtypes), tuple(s.option_shapes), tuple(s.option_providers)) == \
        (("bf16",), tuple(S.GPU_QUICK), ("triton", "cuda"))
    assert S.default_suite(CPU).options == ()
    assert S.default_suite(CUDA, options=["none"]).options == ()


def test_cpu_suite_and_overrides():
    s = S.default_suite(CPU)
    assert s.dtypes == ("fp32",) and s.name == "cpu" and s.shapes == S.CPU_SHAPES
    q = S.default_suite(CPU, quick=True, cells=["GRU"], modes=["fwd"], shapes=[(4, 2, 3, 5)])
    assert (q.cells, q.modes, q.shapes, q.name) == (["GRU"], ["fwd"], [(4, 2, 3, 5)], "cpu-quick")


@pytest.mark.parametrize("field,value", [("cells", ["LSTMX"]), ("dtypes", ["fp8"]),
                                         ("modes", ["bwd"]), ("providers", ["cudnn", "magic"]),
                                         ("options", ["dropconnect"])])
def test_bad_selection_names_the_option(field, value):
    with pytest.raises(ValueError, match=field):
        S.default_suite(CPU, **{field: value})


def test_cudnn_baseline_is_required():
    with pytest.raises(ValueError, match="providers: 'cudnn' is the baseline"):
        S.default_suite(CPU, providers=["reference"])


def test_run_suite_rows_and_skips(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    s = S.default_suite(CPU, shapes=[(6, 2, 8, 8)], cells=["LSTM", "GRU"])
    res = S.run_suite(s)
    rows = res["rows"]
    assert len(rows) == 2 * 3 * 2  # cells x (cudnn, loop, reference) x modes
    for r in rows:
        assert set(r) == ROW_KEYS | NEW_ROW_KEYS
        assert 0 < r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["peak_mb"] is None  # no such count on the CPU
        assert r["measurements"] >= 4 and r["spread"] == pytest.approx(report.spread(r))
        assert r["noisy"] == (r["spread"] > report.SPREAD_LIMIT)
    assert {r["provider"] for r in rows} == {"cudnn", "loop", "reference"}
    for name in ("triton fp32", "triton_persistent fp32"):
        assert "interpreter, which is for tests, not timing" in res["meta"]["skipped"][name]
    assert "CUDA tensors" in res["meta"]["skipped"]["cuda fp32"]
    meta = res["meta"]
    for key in ("gpu", "torch", "cuda", "cudnn", "triton", "git_commit", "date", "device",
                "cores", "load_start", "load_end", "busy", "busy_reasons", "spread_limit"):
        assert key in meta
    assert meta["torch"] == torch.__version__ and meta["device"] == "cpu"
    assert meta["busy"] == bool(meta["busy_reasons"]) == bool(report.busy_reasons(res))


def test_cpu_timer_takes_many_measurements(monkeypatch):
    """The CPU path times many blocks (the real counts, not this file's short ones), so p20 and
    p80 are two different measurements, not one sample three times."""
    for k, v in TIMER.items():
        monkeypatch.setattr(S, k, v)
    call = S.calls("cudnn", "LSTM", (4, 2, 4, 4), "fp32", CPU)[0]["fwd"]
    t = S.timings(call, CPU)
    assert t["measurements"] >= S.CPU_MIN_MEASUREMENTS >= 10
    assert t["p20_ms"] <= t["median_ms"] <= t["p80_ms"] and t["p20_ms"] < t["p80_ms"]
    assert S.measure(call, CPU)[0] > 0  # the (median, p20, p80) form other scripts use


def test_cpu_timer_stops_at_the_minimum_count_for_slow_rows(monkeypatch):
    """A slow row (or a busy machine): after CPU_MAX_RUN_S, CPU_MIN_MEASUREMENTS blocks are
    enough; a fast one runs CPU_MEASUREMENTS blocks and CPU_MIN_RUN_S."""
    for k, v in TIMER.items():
        monkeypatch.setattr(S, k, v)
    clock = [0.0]

    class FakeTimer:  # each call "takes" 0.5 s (the first, sizing the block, too)
        def __init__(self, fn):
            pass

        def timeit(self, number):
            clock[0] += 0.5 * number
            return 0.5 * number

    monkeypatch.setattr(S.timeit, "Timer", FakeTimer)
    t = S.timings(lambda: None, CPU)
    assert t["measurements"] == S.CPU_MIN_MEASUREMENTS and t["median_ms"] == 500.0


def _fake_timings(spread):
    """timings() that "measures" 1 ms with the given (p80 - p20) / median."""
    def timings(fn, device, grad_to_none=()):
        return dict(median_ms=1.0, p20_ms=1.0 - spread / 2, p80_ms=1.0 + spread / 2,
                    measurements=20)
    return timings


@pytest.mark.parametrize("spread,load,busy", [(0.05, 0.1, False), (0.8, 0.1, True),
                                              (0.05, 99.0, True)])
def test_busy_machine_is_flagged(monkeypatch, spread, load, busy):
    """A large spread or a load average above the cores marks the run busy, in the JSON and
    under the table; a quiet one is not marked. (Fake timings and load: nothing is loaded.)"""
    from rich.console import Console
    monkeypatch.setattr(S, "timings", _fake_timings(spread))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    res = S.run_suite(S.default_suite(CPU, shapes=[(3, 2, 4, 4)], cells=["GRU"]))
    meta = res["meta"]
    assert meta["load_start"] == meta["load_end"] == load and meta["cores"] == S.cores()
    assert meta["busy"] is busy and meta["spread_limit"] == report.SPREAD_LIMIT
    assert all(r["noisy"] is (spread > report.SPREAD_LIMIT) for r in res["rows"])
    assert all(r["load"] == load for r in res["rows"])
    assert any("load average 99.00 at the start" in why for why in meta["busy_reasons"]) \
        is (load > S.cores())
    assert any("6 of 6 rows" in why for why in meta["busy_reasons"]) is \
        (spread > report.SPREAD_LIMIT)
    console = Console(width=250, record=True)
    console.print(report.table(res))
    text = console.export_text()
    assert ("WARNING: the machine looks busy" in text) is busy
    marked = [line for line in text.splitlines() if " ! " in line]
    assert len(marked) == (2 if spread > report.SPREAD_LIMIT else 0)  # fwd and fwdbwd


def test_one_noisy_row_is_marked_but_the_machine_is_not_busy():
    """Below BUSY_SHARE of the rows noisy: those rows are marked and a note says so, but the
    machine is not called busy (one row can be the code's own variance)."""
    rows = [_row("cudnn", 1.0, T=t) for t in range(8)]
    rows[3] = dict(rows[3], p20_ms=0.7, p80_ms=1.3)  # spread 0.6
    res = report.check_busy({"meta": {"device": "cpu", "cores": 2, "load_start": 0.5,
                                      "load_end": 1.0}, "rows": rows})
    assert res["meta"]["busy"] is False and res["meta"]["busy_reasons"] == []
    assert report.busy_note(res).startswith("note: 1 of 8 rows")
    rows[4] = dict(rows[4], p20_ms=0.7, p80_ms=1.3)  # 2 of 8 = BUSY_SHARE: busy
    assert report.busy_reasons(res) == [f"2 of 8 rows have (p80 - p20) / median above "
                                        f"{report.SPREAD_LIMIT:g} (marked !)"]


def test_cli_bench_prints_the_warning_and_load(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(S, "timings", _fake_timings(0.05))
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert cli.main(["bench", "--shapes", "3,1,4,4", "--cells", "GRU", "--providers", "cudnn",
                     "--out", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: the machine looks busy" in out and "load average 50.00 at the start" in out
    assert f"load average (1 min): 50.0 at the start, 50.0 at the end, on {S.cores()} cores; " \
           "busy: yes" in out
    meta = json.loads((tmp_path / "cpu.json").read_text())["meta"]
    assert meta["busy"] is True and meta["load_start"] == 50.0


@pytest.mark.parametrize("name", ["cpu.json", "h100_headline.json"])
def test_stored_results_still_load(name):
    """Results stored before the spread and load fields existed: the table and the check
    still work (the spread from p20/p80/median; no load recorded, so none checked)."""
    from rich.console import Console
    res = json.loads((RESULTS / name).read_text())
    reasons = report.busy_reasons(res)
    assert not any("load average" in why for why in reasons)
    console = Console(width=400, record=True)
    console.print(report.table(res))
    text = console.export_text()
    assert "spread" in text and "geomean" in text


def test_gpu_dtypes_are_skipped_on_cpu_with_reason():
    res = S.run_suite(S.default_suite(CPU, shapes=[(2, 1, 4, 4)], dtypes=["bf16"]))
    assert res["rows"] == []
    assert res["meta"]["skipped"]["cudnn bf16"] == "bf16 rows run on CUDA only"


def _row(provider, ms, cell="LSTM", T=8, mode="fwd"):
    return dict(cell=cell, dtype="bf16", T=T, B=1, I=4, H=4, mode=mode, provider=provider,
                median_ms=ms, p20_ms=0.99 * ms, p80_ms=1.01 * ms, peak_mb=1.0)


def test_speedups_and_geomean():
    rows = [_row("cudnn", 2.0), _row("triton", 1.0), _row("cudnn", 8.0, T=16),
            _row("triton", 1.0, T=16), _row("loop", 4.0, T=16)]
    sp = report.speedups(rows)
    assert sp["triton"] == [2.0, 8.0] and sp["loop"] == [2.0] and sp["cudnn"] == [1.0, 1.0]
    assert report.geomean(sp["triton"]) == pytest.approx(4.0)
    assert report.providers(rows) == ["cudnn", "triton", "loop"]


def test_table_contents():
    from rich.console import Console
    rows = [_row("cudnn", 2.0), _row("triton", 0.5), _row("cudnn", 3.0, mode="fwdbwd")]
    res = {"meta": {"device": "cuda", "gpu": "NVIDIA H100"}, "rows": rows}
    console = Console(width=250, record=True)
    console.print(report.table(res))
    text = console.export_text()
    assert "NVIDIA H100" in text and "triton ms" in text and "triton x" in text
    assert "4.00" in text  # 2.0 / 0.5
    lines = [line for line in text.splitlines() if "fwdbwd" in line]
    assert len(lines) == 1 and " - " in lines[0]  # triton did not run that row
    assert any("geomean" in line and "4.00" in line for line in text.splitlines())
    assert "spread" in text and "0.02" in text and "!" not in text and "WARNING" not in text


def test_cli_bench_writes_json_plot_and_table(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rc = cli.main(["bench", "--shapes", "5,2,6,6", "--cells", "GRU", "--out", str(tmp_path),
                   "--name", "smoke", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "GPU suite" in out and "needs CUDA" in out
    assert "reference x" in out and "geomean" in out
    assert "skipped triton fp32: it runs on CUDA tensors (or on the CPU under" in out
    assert "skipped triton_persistent fp32: it runs on CUDA tensors" in out
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert set(data) == {"meta", "rows"} and len(data["rows"]) == 3 * 2
    assert data["meta"]["command"].startswith("fused-rnn bench")
    png = (tmp_path / "smoke.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_bench_rejects_bad_shape(tmp_path):
    with pytest.raises(SystemExit, match="T,B,I,H"):
        cli.main(["bench", "--shapes", "5,2,6", "--out", str(tmp_path)])


def test_a_failing_row_is_reported_not_fatal(monkeypatch):
    original = S.run_row

    def run_row(provider, *args, **kw):
        if provider == "loop":
            raise RuntimeError("out of resources: shared memory")
        return original(provider, *args, **kw)

    monkeypatch.setattr(S, "run_row", run_row)
    res = S.run_suite(S.default_suite(CPU, shapes=[(3, 2, 4, 4)], cells=["GRU"]))
    assert {r["provider"] for r in res["rows"]} == {"cudnn", "reference"}
    assert res["meta"]["skipped"]["loop fp32 GRU 3,2,4,4"] == \
        "failed: RuntimeError: out of resources: shared memory"


def test_option_rows_and_their_cost():
    """Option rows run in training mode with the option on, next to the same provider without
    it, and report their cost as the ratio of the two."""
    s = S.default_suite(CPU, shapes=[(6, 3, 5, 5)], cells=["LSTM", "RNN"], modes=["fwdbwd"],
                        providers=["cudnn", "reference"],
                        options=["rnndrop", "zoneout", "layer_norm"], option_dtypes=["fp32"],
                        option_providers=["reference"])
    rows = S.run_suite(s)["rows"]
    opts = {(r["cell"], r["option"]) for r in rows if r["option"]}
    assert opts == {("LSTM", "rnndrop"), ("LSTM", "zoneout"), ("RNN", "zoneout"),
                    ("LSTM", "layer_norm")}
    assert not S.option_applies("layer_norm", "GRU", "cuda_step")
    costs = report.option_costs(rows)
    assert len(costs) == 4 and all(c["provider"] == "reference" and c["cost"] > 0 for c in costs)
    assert all(c["cost"] == pytest.approx(c["median_ms"] / c["plain_ms"]) for c in costs)
    # The speedup table leaves the option rows out.
    assert all(len(config) == 2 for config in report.by_config(rows).values())


def test_option_cost_table():
    from rich.console import Console
    rows = [dict(_row("cuda", 2.0, mode="fwdbwd"), option=""),
            dict(_row("cuda", 2.1, mode="fwdbwd"), option="zoneout")]
    console = Console(width=200, record=True)
    console.print(report.option_table({"rows": rows}))
    text = console.export_text()
    assert "zoneout" in text and "1.050" in text


def test_cli_bench_sweep_writes_rows_and_a_plot_per_axis(tmp_path, capsys, monkeypatch):
    """`--sweep` on the CPU: the small sweeps over H, B and T, cuDNN and the reference backend,
    forward rows with µs per step, one JSON and one PNG per axis."""
    from fused_rnn.bench import sweep
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rc = cli.main(["bench", "--sweep", "--out", str(tmp_path), "--name", "s", "--device", "cpu"])
    assert rc == 0
    assert "µs/step" in capsys.readouterr().out
    data = json.loads((tmp_path / "s_sweep.json").read_text())
    rows = data["rows"]
    n_points = sum(len(v) for v in sweep.CPU_SWEEPS.values())
    assert len(rows) == 2 * n_points  # cudnn and reference, LSTM, fp32, fwd
    assert {r["provider"] for r in rows} == {"cudnn", "reference"}
    for r in rows:
        assert r["mode"] == "fwd" and r["us_per_step"] == pytest.approx(
            r["median_ms"] * 1e3 / r["T"])
        swept = {k: r[k] for k in ("T", "B", "H") if k != r["sweep"]}
        assert swept == {k: v for k, v in sweep.CPU_BASE.items() if k != r["sweep"]}
        assert r[r["sweep"]] in sweep.CPU_SWEEPS[r["sweep"]] and r["I"] == r["H"]
    for axis in ("H", "B", "T"):
        png = (tmp_path / f"s_sweep_{axis}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="sweep axis: expected H, B or T, got 'I'"):
        sweep.shapes("I", [1], sweep.CPU_BASE)
