"""What the cluster kernels' designs promise, read off their sm_90 SASS (no GPU needed:
benchmarks/sass_table.py compiles them with nvcc and disassembles them with cuobjdump): every
cluster kernel has a time loop holding exactly its plan's MMAs per step (one warp's HMMA
count); the loops of the fence-free plans (the asynchronous exchange; a one-block backward plan, where
one is compiled) hold no MEMBAR or other fence, and those of the barrier plans exactly the
barrier arrive's release; no loop calls out of line (the IEEE divide's slow path), computes in
fp64 or touches local memory. And benchmarks/results/sass_sm90.json, the stored table, is this code's: a kernel
change regenerates it (python benchmarks/sass_table.py --out benchmarks/results/sass_sm90.json)
so that its effect on the loops shows in the diff."""
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import sass_table  # noqa: E402

# One worker for the file (--dist loadgroup): the table is compiled once, in the module fixture.
pytestmark = [pytest.mark.nvcc, pytest.mark.slow, pytest.mark.xdist_group("sass"),
              pytest.mark.skipif(shutil.which("nvcc") is None and
                                 not Path("/usr/local/cuda/bin/nvcc").exists(),
                                 reason="nvcc not found")]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return sass_table.table(tmp_path_factory.mktemp("sass"))


def test_every_cluster_kernel_and_plan_is_in_the_table(rows):
    kinds = {(r["kernel"], r["cell"], r["dtype"]) for r in rows}
    assert len(kinds) == 2 * 4 * 2, sorted(kinds)  # fwd/bwd x cells x fp16/bf16
    plans_h = (ROOT / "csrc" / "plans.h").read_text()
    for kind, macro in (("fwd", "FRNN_CLUSTER_PLANS"), ("bwd", "FRNN_CLUSTER_BWD_PLANS")):
        gpu = plans_h[plans_h.index(f"#define {macro}"):].split("#else", 1)[1].split("#endif")[0]
        want = {f"H{h}-{cs}x{s}{'a' if int(e) else ''}"
                for h, cs, s, e in re.findall(r"X\((\d+), (\d+), (\d+), (\d+)\)", gpu)}
        got = {f"H{r['H']}-{r['plan']}" for r in rows if r["kernel"] == kind}
        assert got == want, (kind, got ^ want)


def test_time_loops_hold_their_plans_mmas(rows):
    for r in rows:
        assert r["loop_found"], r
        assert r["HMMA"] == r["expected_hmma"], r


def test_fence_free_loops_hold_no_fence(rows):
    for r in rows:
        # The barrier plans' one release: MEMBAR.ALL.CTA, MEMBAR.ALL.GPU, ERRBAR, CGAERRBAR.
        assert r["MEMBAR"] == (0 if r["fence_free"] else 4), r
        assert r["CALL"] == 0 and r["FP64"] == 0 and r["LOCAL"] == 0, r
    assert sum(r["fence_free"] for r in rows) >= 40


def test_stored_table_is_this_codes(rows):
    stored = json.loads((ROOT / "benchmarks" / "results" / "sass_sm90.json").read_text())
    assert stored["rows"] == rows, (
        "csrc changed the cluster kernels' loops: regenerate the table with "
        "python benchmarks/sass_table.py --out benchmarks/results/sass_sm90.json")
