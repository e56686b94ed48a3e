"""What the cluster and multi-cluster kernels' designs promise, read off their sm_90 SASS (no GPU
needed: benchmarks/sass_table.py compiles them with nvcc and disassembles them with cuobjdump):
every such kernel has a time loop holding exactly its plan's MMAs per step (one warp's HMMA
count); the loops of the fence-free plans (the asynchronous exchange; a one-block backward plan,
where one is compiled; every multi-cluster plan, whose clusters meet through L2 flag words) hold
no MEMBAR or other fence, and those of the barrier plans exactly the barrier arrive's release; no
loop calls out of line (the IEEE divide's slow path), computes in fp64 or touches local memory.
And benchmarks/results/sass_sm90.json, the stored table, is this code's: a kernel change
regenerates it (python benchmarks/sass_table.py --out benchmarks/results/sass_sm90.json) so
that its effect on the loops shows in the diff."""
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
def rows():
    return sass_table.table()


def gpu_plans(macro: str):
    """The X(...) argument tuples of a plans.h macro's GPU (#else) branch."""
    plans_h = (ROOT / "csrc" / "plans.h").read_text()
    gpu = plans_h[plans_h.index(f"#define {macro}"):].split("#else", 1)[1].split("#endif")[0]
    return [tuple(map(int, x.split(","))) for x in re.findall(r"X\(([\d, ]+)\)", gpu)]


def f32_budget() -> int:
    return int(re.search(r"kMaxF32WeightRegs = (\d+);", (ROOT / "csrc" / "plans.h").read_text())[1])


def f32_takes(kind: str, cell: str, dtype: str, H: int, a: int, b: int) -> bool:
    """plans.h's f32_plan_fits for plan (H, CS, KS or NW) and an fp32 product type: its weight
    registers per thread (one per element, two for the three-product "fp32") within the budget."""
    G = sass_table.GATES[cell]
    elems = G * H // (2 * b) if kind == "fwd" else G * H * H // (32 * a * b)
    return elems * (2 if dtype == "fp32" else 1) <= f32_budget()


def test_every_cluster_kernel_and_plan_is_in_the_table(rows):
    assert {r["family"] for r in rows} == {"cluster", "multi"}
    rows = [r for r in rows if r["family"] == "cluster"]
    kinds = {(r["kernel"], r["cell"], r["dtype"]) for r in rows}
    # fwd/bwd x cells x fp16/bf16/tf32/fp32 (every cell has fp32 plans within the budget)
    assert len(kinds) == 2 * 4 * 4, sorted(kinds)
    for kind, macro in (("fwd", "FRNN_CLUSTER_PLANS"), ("bwd", "FRNN_CLUSTER_BWD_PLANS")):
        for cell in sass_table.GATES:
            for dtype in ("fp16", "bf16", "tf32", "fp32"):
                want = {f"H{h}-{cs}x{s}{'a' if e else ''}" for h, cs, s, e in gpu_plans(macro)
                        if dtype in ("fp16", "bf16") or f32_takes(kind, cell, dtype, h, cs, s)}
                got = {f"H{r['H']}-{r['plan']}" for r in rows
                       if (r["kernel"], r["cell"], r["dtype"]) == (kind, cell, dtype)}
                assert got == want, (kind, cell, dtype, got ^ want)


def test_every_multicluster_plan_is_in_the_table(rows):
    # Every function of the four files is a row (sass_table.table refuses any other), so the
    # rows are what is compiled: plans.h's plans, but those whose shared memory exceeds
    # kMaxBlockSmem (not instantiated; more gates take more, so a plan compiled for a cell is
    # compiled for every cell with fewer gates, and all of them for the one-gate cells).
    multi = [r for r in rows if r["family"] == "multi"]
    for kind, macro in (("fwd", "FRNN_MULTI_PLANS"), ("bwd", "FRNN_MULTI_BWD_PLANS")):
        want = {f"H{h}-{nc}x{cs}x{ks}{f'b{bt}' if bt > 1 else ''}"
                for h, nc, cs, ks, bt in gpu_plans(macro)}
        assert want, macro
        got = {}
        for cell in sass_table.GATES:
            for dtype in ("fp16", "bf16"):
                got[cell, dtype] = {f"H{r['H']}-{r['plan']}" for r in multi if
                                    (r["kernel"], r["cell"], r["dtype"]) == (kind, cell, dtype)}
                assert got[cell, dtype] <= want, (kind, cell, dtype, got[cell, dtype] - want)
            assert got[cell, "fp16"] == got[cell, "bf16"], (kind, cell)
        assert got["RNN_TANH", "fp16"] == got["RNN_RELU", "fp16"] == want, kind
        assert got["LSTM", "fp16"] <= got["GRU", "fp16"] <= got["RNN_TANH", "fp16"], kind


def test_time_loops_hold_their_plans_mmas(rows):
    for r in rows:
        assert r["loop_found"], r
        bt = re.fullmatch(r"\d+x\d+x\d+(?:b(\d+))?", r["plan"]) if r["family"] == "multi" else None
        bt = int(bt.group(1) or 1) if bt else 1
        if r["hmma_nested"]:
            # Only a multi-cluster forward's batch-tile loop, kept rolled: one tile's MMAs.
            assert r["family"] == "multi" and bt > 1, r
            assert r["HMMA"] * bt == r["expected_hmma"], r
        else:
            assert r["HMMA"] == r["expected_hmma"], r


def test_fence_free_loops_hold_no_fence(rows):
    for r in rows:
        # The barrier plans' one release: MEMBAR.ALL.CTA, MEMBAR.ALL.GPU, ERRBAR, CGAERRBAR.
        assert r["MEMBAR"] == (0 if r["fence_free"] else 4), r
        assert r["CALL"] == 0 and r["FP64"] == 0 and r["LOCAL"] == 0, r
    assert sum(r["fence_free"] for r in rows if r["family"] == "cluster") >= 40


def test_multicluster_loops_exchange_without_fences(rows):
    multi = [r for r in rows if r["family"] == "multi"]
    kinds = {(r["kernel"], r["cell"], r["dtype"]) for r in multi}
    assert len(kinds) == 2 * 4 * 2, sorted(kinds)  # fwd/bwd x cells x fp16/bf16
    for r in multi:
        # No fence of any kind (a grid sync would bring one: its release is a MEMBAR.GPU).
        assert r["fence_free"] and r["MEMBAR"] == 0, r
        # The whole step is in the loop: the mbarrier wait and arrive.expect_tx (SYNCS), the
        # st.async words (STAS, in STS) and the L2 flag words' stores and polls (STG, LDG);
        # no generic-address (distributed shared memory) access.
        assert r["SYNCS"] == 2 and r["STS"] > 0 and r["STG"] > 0 and r["LDG"] > 0, r
        assert r["LDST"] == 0, r


def test_stored_table_is_this_codes(rows):
    stored = json.loads((ROOT / "benchmarks" / "results" / "sass_sm90.json").read_text())
    assert stored["rows"] == rows, (
        "csrc changed the (multi-)cluster kernels' loops: regenerate the table with "
        "python benchmarks/sass_table.py --out benchmarks/results/sass_sm90.json")
