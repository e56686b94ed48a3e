"""Mutation checks of the cluster kernels' CPU tests: each mutation below breaks one kernel source
(the cluster backward, csrc/rnn_bwd_cluster.cu, or the exchange between clusters of the
multi-cluster kernels, csrc/exchange.cuh) in one way, the emulated extension is built from the
broken copy, and the matching cases of tests/test_cuda_kernels.py (every emulated plan of the
kernels it breaks) run against the reference backend in fp64. A mutation is caught when at least
one case fails (error over 1e-10, or an exception: a wait that never completes ends the emulated
launch with an error after FRNN_EMULATE_WAIT_S seconds, here 2). Prints one JSON line per
mutation; exit 0 when every mutation asked for is caught.

    python scripts/mutation_check.py                 # all
    python scripts/mutation_check.py skip_rank       # one

tests/test_mutations.py runs each in a subprocess (about a minute each: one emulated build)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (what it breaks, the source, the text replaced, its replacement, the cases it runs:
# "cluster_bwd" or "multi", in fp64 against the reference; "fp32" / "tf32": the cluster
# kernels' fp32 cases with torch's TF32 flag off / on, under the parity rule against torch's
# fp32 / the reference's tf32 twin, testing.check_tf32); the text must occur once.
MUTATIONS = {
    "drop_dgates_term": (
        "one gate's dgates left out of the recurrent product (LSTM o, GRU n)",
        "rnn_bwd_cluster.cu",
        "tile[row * LDG + q * U + u] = from_acc<T>(dg[q]);",
        "tile[row * LDG + q * U + u] = from_acc<T>(NG > 1 && q == NG - 1 ? A(0) : dg[q]);",
        "cluster_bwd"),
    "skip_rank": (
        "the reduce-scatter skips rank 0's partial (plans of two or more blocks)",
        "rnn_bwd_cluster.cu",
        "for (int src = 0; src < CS; ++src) rec +=",
        "for (int src = CS > 1 ? 1 : 0; src < CS; ++src) rec +=",
        "cluster_bwd"),
    "wrong_step_saved": (
        "the saved gates read at the next time step (the last step's own)",
        "rnn_bwd_cluster.cu",
        "sv[j][q] = saved[at(t, B, b, NS * H) + q * H + unit];",
        "sv[j][q] = saved[at(t + 1 < T_ ? t + 1 : t, B, b, NS * H) + q * H + unit];",
        "cluster_bwd"),
    "stale_step": (
        "a polled L2 word taken with the step before's tag (its buffer's previous use, or the "
        "zeroed buffer at the first steps)",
        "exchange.cuh",
        "while (__atomic_load_n(&w->step, __ATOMIC_ACQUIRE) != step && !emu::hung) {",
        "while (__atomic_load_n(&w->step, __ATOMIC_ACQUIRE) + 2 < step && !emu::hung) {",
        "multi"),
    "skip_cluster": (
        "one other cluster's slice never polled nor forwarded",
        "exchange.cuh",
        "for (int idx = tid; idx < (NC - 1) * WORDS; idx += NT) {",
        "for (int idx = tid; idx < (NC - 2) * WORDS; idx += NT) {",
        "multi"),
    "drop_lo_hi": (
        "the IEEE-accurate fp32 product (Tf32x3) without its al.bh term",
        "mma.cuh",
        "mma_1688_tf32(c, tf32_round(r0.lo - a0),",
        "if (false) mma_1688_tf32(c, tf32_round(r0.lo - a0),",
        "fp32"),
    "tf32_rows_swapped": (
        "the tf32 product's A registers a1 and a2 exchanged (row g+8 at k = 2q, row g at 2q+1)",
        "mma.cuh",
        "mma_1688_tf32(c, r0.lo, r8.lo, r0.hi, r8.hi, b0, b1);",
        "mma_1688_tf32(c, r0.lo, r0.hi, r8.lo, r8.hi, b0, b1);",
        "tf32"),
}


def _build(name: str, build_root: Path):
    """The emulated extension from csrc/ with `name`'s mutation applied."""
    from torch.utils import cpp_extension

    from fused_rnn.ops.cuda import extension
    _, source, old, new, _ = MUTATIONS[name]
    src = build_root / "csrc"
    shutil.copytree(ROOT / "csrc", src)
    path = src / source
    text = path.read_text()
    assert text.count(old) == 1, f"{name}: the mutated text occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))
    out = build_root / "build"
    out.mkdir()
    return cpp_extension.load(
        name=f"fused_rnn_mutant_{name}",
        sources=[str(src / "binding.cpp"), str(src / "emulated.cpp")],
        extra_cflags=["-O2", "-DFRNN_EMULATE", "-pthread"],
        extra_ldflags=["-pthread", *extension.LINK_FLAGS], extra_include_paths=[str(src)],
        build_directory=str(out))


def _runs(kind: str):
    """(case, forward plan, backward plan) of the emulated cases of `kind`
    (tests/test_cuda_kernels.py): the cluster backward's, or the multi-cluster kernels' both
    ways."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_cuda_kernels as t
    if kind == "cluster_bwd":
        return [(case, None, plan) for case, plan in t.CLUSTER_BWD_RUNS]
    if kind in ("fp32", "tf32"):
        return t.F32_RUNS
    return ([(case, plan, None) for case, plan in t.MULTI_RUNS]
            + [(case, None, plan) for case, plan in t.MULTI_BWD_RUNS])


def check(name: str) -> dict:
    import torch

    from fused_rnn import testing
    from fused_rnn.ops.cuda import extension
    from fused_rnn.ops.cuda import launch as cuda_launch
    os.environ["FUSED_RNN_CUDA_EMULATE"] = "1"
    os.environ["FRNN_EMULATE_WAIT_S"] = "2"
    with tempfile.TemporaryDirectory() as tmp:
        module = _build(name, Path(tmp))
        extension._load = lambda emulate: module  # every launcher asks load(), which asks this
        failed, worst = 0, 0.0
        kind = MUTATIONS[name][4]
        runs = _runs(kind)
        for case, plan, bwd_plan in runs:
            try:
                with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan), \
                        cuda_launch.cluster_bwd_plan(bwd_plan), \
                        torch.backends.cudnn.flags(allow_tf32=kind == "tf32"):
                    if kind in ("fp32", "tf32"):  # worst: the rule's ratio (error over bound)
                        result = (testing.check_tf32(case, "cuda", "cpu") if kind == "tf32" else
                                  testing.check(case, "cuda", torch.float32, "cpu"))
                        err = result.worst_ratio
                        bad = not err <= 1.0
                    else:
                        err = max(testing.compare_backends(case, "cuda", "reference",
                                                           torch.float64, "cpu").values())
                        bad = not err <= 1e-10
            except Exception:  # noqa: BLE001 (a crash of the mutant counts as caught)
                err, bad = float("inf"), True
            worst = max(worst, err)
            failed += bad
    return {"mutation": name, "breaks": MUTATIONS[name][0], "cases": len(runs), "failed": failed,
            "worst_error": worst, "caught": failed > 0}


def main(argv):
    names = argv or list(MUTATIONS)
    if len(names) > 1:  # one process per mutation: the backends keep the extension they load
        codes = [subprocess.run([sys.executable, __file__, n], cwd=ROOT).returncode
                 for n in names]
        return 0 if all(c == 0 for c in codes) else 1
    row = check(names[0])
    print(json.dumps(row), flush=True)
    return 0 if row["caught"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
