"""A static table of the cluster and multi-cluster kernels' time loops, from their sm_90 SASS:
instructions per step by class (HMMA, MUFU, LDS, STS, LDG, STG; LDST: loads and stores through
generic addresses, here the barrier plans' distributed shared memory; LOCAL: local memory,
spills; BAR, SYNCS (mbarriers), MEMBAR and the other fences, FP64, CALL: calls into out-of-line
code such as the IEEE divide's slow path; other) for every compiled plan, cell and product type
(fp16, bf16; fp32 as tf32 and as "fp32", the IEEE-accurate three tf32 products, csrc/mma.cuh),
so that a change's effect on the loop shows without a GPU. No GPU needed: nvcc compiles
csrc/rnn_fwd_cluster.cu, rnn_bwd_cluster.cu, rnn_fwd_multicluster.cu and rnn_bwd_multicluster.cu
for sm_90 and cuobjdump (the CUDA toolkit's, or the one in Triton's package) disassembles them.

    python benchmarks/sass_table.py --out benchmarks/results/sass_sm90.json

The time loop is the smallest loop (a backward branch and its target, with no EXIT between)
that holds every HMMA of the kernel and a step's synchronisation (a block or cluster barrier or
an mbarrier operation: so not a loop within the step, such as the multi-cluster forward's loop
over its batch tiles). Its counts are the static instructions of that address range: a loop
nested in it (the multi-cluster kernels' L2 polls, the slice sums, the exchange's loops over
words, a batch-tile loop the compiler keeps rolled) counts once, whatever its trip count, and
instructions out of line (the mbarrier wait's retry path) are not counted. hmma_nested says
that every HMMA lies in such a nested loop, whose one trip the counts then show.

Each kernel's expected HMMA count per step comes from its plan (the MMAs of one warp per step):
cluster forward G.2.(H/KS/16), cluster backward (H/(16.NW)).2.(G.H/CS/16); multi-cluster
forward BT.G.2.(H/KS/16), multi-cluster backward BT.2.(G.H/KS/16) (BT = 1; its first step
skips the product, but the loop holds it once), times 2 for tf32 and 6 for fp32 (m16n8k8
instructions per k16 step). Rows: kernel fwd/bwd, family "cluster" (plan
CSxKS or CSxNW, "a": the asynchronous exchange) or "multi" (plan NCxCSxKS, "bBT" for BT > 1
batch tiles per block, always asynchronous), as fused_rnn/ops/cuda/plans.py names them.
tests/test_sass.py checks those counts and that no time loop of a fence-free plan (asynchronous
exchange, one block, every multi-cluster plan) holds a MEMBAR."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fused_rnn.ops.cuda import extension  # noqa: E402

SOURCES = ("rnn_fwd_cluster.cu", "rnn_bwd_cluster.cu", "rnn_fwd_multicluster.cu",
           "rnn_bwd_multicluster.cu")
CELLS = {0: "LSTM", 1: "GRU", 2: "RNN_TANH", 3: "RNN_RELU"}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
# The product types (csrc/mma.cuh): fp32 is Tf32x3 (IEEE-accurate), tf32 Tf32.
DTYPES = {"13__nv_bfloat16": "bf16", "6__half": "fp16", "NS_4Tf32E": "tf32", "NS_6Tf32x3E": "fp32"}
# MMA instructions per k16 step of one 16 x 8 tile: m16n8k16 for 16-bit types, two m16n8k8 for
# tf32, three times two for fp32 (csrc/mma.cuh, mma_16816_tf32).
MMA_PER_K16 = {"bf16": 1, "fp16": 1, "tf32": 2, "fp32": 6}
CLASSES = ("HMMA", "MUFU", "LDS", "STS", "LDG", "STG", "LDST", "LOCAL", "BAR", "SYNCS", "MEMBAR",
           "FP64", "CALL", "other")
# <CELL, T, H, CS, KS or NW, exchange> (cluster) or <CELL, T, H, NC, CS, KS, BT> (multi).
KERNEL = re.compile(r"rnn_(fwd|bwd)_(cluster|multicluster)_kernelILi(\d)E"
                    r"(13__nv_bfloat16|6__half|NS_4Tf32E|NS_6Tf32x3E)"
                    r"Li(\d+)ELi(\d+)ELi(\d+)ELi(\d+)E(?:Li(\d+)E)?")
INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def cuobjdump() -> str:
    found = shutil.which("cuobjdump")
    if found:
        return found
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_sass(source: str) -> str:
    """The sm_90 SASS of one csrc file, disassembled from the object the GPU build's flags give
    (fused_rnn.ops.cuda.extension.compiled_objects, shared with tests/test_cuda_build.py)."""
    obj, log, returncode = extension.compiled_objects()[source]
    if returncode != 0:
        raise RuntimeError(f"nvcc failed on {source}:\n{log[-5000:]}")
    return subprocess.run([cuobjdump(), "-sass", "-arch", "sm_90", str(obj)], check=True,
                          capture_output=True, text=True, timeout=300).stdout


def functions(sass: str):
    """(mangled name, [(address, instruction text)]) per function."""
    for block in sass.split("Function : ")[1:]:
        name = block.split(None, 1)[0]
        yield name, [(int(a, 16), text.strip()) for a, text in INSTR.findall(block)]


def opcode(text: str) -> str:
    text = re.sub(r"^@!?U?P[T0-9]+\s+", "", text)  # predicate guard
    return text.split()[0] if text else ""


# The class of each opcode (its base, before the first dot); anything else is "other".
KLASS = {"HMMA": "HMMA", "MUFU": "MUFU", "LDS": "LDS", "LDSM": "LDS", "STS": "STS", "STAS": "STS",
         "LDG": "LDG", "STG": "STG", "LD": "LDST", "ST": "LDST", "LDL": "LOCAL", "STL": "LOCAL",
         "BAR": "BAR", "UCGABAR_ARV": "BAR", "UCGABAR_WAIT": "BAR", "WARPSYNC": "BAR",
         "SYNCS": "SYNCS", "MEMBAR": "MEMBAR", "FENCE": "MEMBAR", "ERRBAR": "MEMBAR",
         "CGAERRBAR": "MEMBAR", "CCTL": "MEMBAR", "DADD": "FP64", "DMUL": "FP64", "DFMA": "FP64",
         "DSETP": "FP64", "DMNMX": "FP64", "CALL": "CALL"}


def klass(op: str) -> str:
    if op.startswith(("F2F.F64", "F2F.F32.F64")):  # conversions from and to fp64
        return "FP64"
    return KLASS.get(op.split(".")[0], "other")


def loops(code):
    """(first, last) address of every loop: a backward branch and its target, no EXIT between."""
    exits = [a for a, t in code if opcode(t) == "EXIT"]
    found = []
    for addr, text in code:
        m = re.match(r"(?:@!?U?P[T0-9]+\s+)?BRA\s+(?:`?\(?\.?L?_?x?_?)?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            target = int(m.group(1), 16)
            if not any(target <= a <= addr for a in exits):
                found.append((target, addr))
    return found


# A step's synchronisation: a block or cluster barrier or an mbarrier operation (not WARPSYNC,
# which the compiler also puts in loops within a step, before their MMAs).
SYNC = ("BAR.", "UCGABAR_", "SYNCS.")


def time_loop(code):
    """The instructions of the smallest loop holding every HMMA and a step's synchronisation
    (None without HMMA), and whether every HMMA lies in a loop nested in it (so that its
    static counts hold one trip of that loop: the multi-cluster forward's loop over its batch
    tiles where the compiler keeps it rolled)."""
    hmma = [a for a, t in code if opcode(t).startswith("HMMA")]
    if not hmma:
        return None, False
    syncs = [a for a, t in code if opcode(t).startswith(SYNC)]
    holding = [(lo, hi) for lo, hi in loops(code) if lo <= min(hmma) and hi >= max(hmma)]
    steps = [(lo, hi) for lo, hi in holding if any(lo <= a <= hi for a in syncs)]
    if not steps:
        return None, False
    lo, hi = min(steps, key=lambda r: r[1] - r[0])
    nested = any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in holding)
    return [(a, t) for a, t in code if lo <= a <= hi], nested


def expected_hmma(kind: str, cell: str, H: int, cs: int, second: int) -> int:
    G = GATES[cell]
    if kind == "fwd":  # second: KS k slices
        return G * 2 * (H // second // 16)
    return (H // (16 * second)) * 2 * (G * H // cs // 16)  # second: NW warps


def expected_hmma_multi(kind: str, cell: str, H: int, ks: int, bt: int) -> int:
    """A multi-cluster plan's MMAs per warp and step, BT batch tiles of two column tiles."""
    G = GATES[cell]
    if kind == "fwd":  # G gates x KST = H/KS/16 k-steps (GQ gates a pass)
        return bt * 2 * G * (H // ks // 16)
    return bt * 2 * (G * H // ks // 16)  # KST = G.H/KS/16 k-steps


def table():
    rows = []
    for source in SOURCES:
        for name, code in functions(compile_sass(source)):
            m = KERNEL.search(name)
            if not m:  # every function of these files is a row: the table is what is compiled
                raise ValueError(f"{source}: not a (multi-)cluster kernel: {name}")
            kind, family, cell, dt, H, a, b, c, bt = m.groups()
            cell, H, a, b, c, bt = CELLS[int(cell)], int(H), int(a), int(b), int(c), int(bt or 1)
            if family == "cluster":  # a: CS, b: KS (fwd) or NW (bwd), c: exchange
                plan = f"{a}x{b}{'a' if c else ''}"
                fence_free = bool(c) or (kind == "bwd" and a == 1)
                expected = expected_hmma(kind, cell, H, a, b) * MMA_PER_K16[DTYPES[dt]]
            else:  # a: NC, b: CS, c: KS, bt: BT; the exchange is always asynchronous
                family, plan, fence_free = "multi", f"{a}x{b}x{c}{f'b{bt}' if bt > 1 else ''}", True
                expected = expected_hmma_multi(kind, cell, H, c, bt)
            loop, nested = time_loop(code)
            counts = {k: 0 for k in CLASSES}
            for _, text in loop or []:
                counts[klass(opcode(text))] += 1
            rows.append({
                "kernel": kind, "family": family, "cell": cell, "dtype": DTYPES[dt], "H": H,
                "plan": plan, "fence_free": fence_free,
                "loop_found": loop is not None, "instructions": len(loop or []),
                "expected_hmma": expected, "hmma_nested": nested, **counts})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = table()
    head = ["kernel", "family", "cell", "dtype", "H", "plan", "instructions", *CLASSES]
    print(" ".join(f"{h:>8}" for h in head))
    for r in rows:
        print(" ".join(f"{str(r[h]):>8}" for h in head))
    if args.out:
        ver = subprocess.run([extension.nvcc(), "--version"], capture_output=True, text=True).stdout
        Path(args.out).write_text(json.dumps({
            "what": "cluster and multi-cluster kernels' time loops, sm_90 SASS instructions "
                    "per step (one warp; nested loops counted once, statically)",
            "nvcc": ver.strip().splitlines()[-1] if ver else None,
            "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
