"""benchmarks/host_overhead.py runs and writes the shape other tools read (no timing is checked
here: speed is shown by the stored results, benchmarks/README.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_host_overhead_writes_its_rows(tmp_path):
    out = tmp_path / "host.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_overhead.py"), "--calls",
                    "20", "--json", str(out)], check=True, env=env, cwd=ROOT, timeout=600,
                   capture_output=True)
    data = json.loads(out.read_text())
    assert {"what", "torch_floors_us", "calls"} <= set(data["meta"])
    rows = data["rows"]
    keys = {"cell", "layers", "bidirectional", "packed", "proj", "mode", "median_us", "p20_us",
            "p80_us", "linear_us", "instructions"}
    assert all(keys <= set(r) for r in rows), rows[0]
    modes = {(r["cell"], r["mode"]) for r in rows}
    assert modes == {(c, m) for c in ("LSTM", "GRU") for m in ("fwd", "fwdbwd", "cell")}
    assert all(0 < r["p20_us"] <= r["median_us"] <= r["p80_us"] for r in rows), rows
    assert any(r["proj"] for r in rows) and any(r["packed"] for r in rows)
