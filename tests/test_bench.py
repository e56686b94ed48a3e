"""The benchmark harness on the CPU: grid selection, rows, files, table, skipped providers."""
import json

import pytest
import torch

from fused_rnn import cli
from fused_rnn.bench import report, suite as S

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
ROW_KEYS = {"cell", "dtype", "T", "B", "I", "H", "mode", "provider", "option", "median_ms",
            "p20_ms", "p80_ms", "peak_mb"}


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
        assert set(r) == ROW_KEYS
        assert 0 < r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["peak_mb"] is None  # no such count on the CPU
    assert {r["provider"] for r in rows} == {"cudnn", "loop", "reference"}
    for name in ("triton fp32", "triton_persistent fp32"):
        assert "interpreter, which is for tests, not timing" in res["meta"]["skipped"][name]
    assert "CUDA tensors" in res["meta"]["skipped"]["cuda fp32"]
    meta = res["meta"]
    for key in ("gpu", "torch", "cuda", "cudnn", "triton", "git_commit", "date", "device"):
        assert key in meta
    assert meta["torch"] == torch.__version__ and meta["device"] == "cpu"


def test_gpu_dtypes_are_skipped_on_cpu_with_reason():
    res = S.run_suite(S.default_suite(CPU, shapes=[(2, 1, 4, 4)], dtypes=["bf16"]))
    assert res["rows"] == []
    assert res["meta"]["skipped"]["cudnn bf16"] == "bf16 rows run on CUDA only"


def _row(provider, ms, cell="LSTM", T=8, mode="fwd"):
    return dict(cell=cell, dtype="bf16", T=T, B=1, I=4, H=4, mode=mode, provider=provider,
                median_ms=ms, p20_ms=ms, p80_ms=ms, peak_mb=1.0)


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
