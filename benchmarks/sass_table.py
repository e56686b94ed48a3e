"""A static table of the cluster kernels' time loops, from their sm_90 SASS: instructions per
step by class (HMMA, MUFU, LDS, STS, LDG, STG; LDST: loads and stores through generic
addresses, here the barrier plans' distributed shared memory; LOCAL: local memory, spills;
BAR, SYNCS (mbarriers), MEMBAR and the other fences, FP64, CALL: calls into out-of-line code such
as the IEEE divide's slow path; other) for every compiled
plan, cell and half dtype, so that a change's effect on the loop shows without a GPU. No GPU
needed: nvcc compiles csrc/rnn_fwd_cluster.cu and rnn_bwd_cluster.cu for sm_90 and cuobjdump
(the CUDA toolkit's, or the one in Triton's package) disassembles them.

    python benchmarks/sass_table.py --out benchmarks/results/sass_sm90.json

The time loop is the smallest loop (a backward branch and its target, with no EXIT between)
that holds every HMMA of the kernel; instructions out of line (the mbarrier wait's retry path)
are not counted. Each
kernel's expected HMMA count per step comes from its plan (the MMAs of one warp per step):
forward G.2.(H/KS/16), backward (H/(16.NW)).2.(G.H/CS/16). tests/test_sass.py checks those and
that no time loop of a fence-free plan (asynchronous exchange, or one block) holds a MEMBAR."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SOURCES = ("rnn_fwd_cluster.cu", "rnn_bwd_cluster.cu")
CELLS = {0: "LSTM", 1: "GRU", 2: "RNN_TANH", 3: "RNN_RELU"}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
DTYPES = {"13__nv_bfloat16": "bf16", "6__half": "fp16"}
CLASSES = ("HMMA", "MUFU", "LDS", "STS", "LDG", "STG", "LDST", "LOCAL", "BAR", "SYNCS", "MEMBAR",
           "FP64", "CALL", "other")
KERNEL = re.compile(r"rnn_(fwd|bwd)_cluster_kernelILi(\d)E(13__nv_bfloat16|6__half)"
                    r"Li(\d+)ELi(\d+)ELi(\d+)ELi(\d+)E")
INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def nvcc() -> str:
    return shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"


def cuobjdump() -> str:
    found = shutil.which("cuobjdump")
    if found:
        return found
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_sass(source: str, workdir: Path) -> str:
    """The sm_90 SASS of one csrc file (-O3, C++17, sm_90 only: the GPU build also passes
    -lineinfo and torch's own defines, which do not change these kernels' code)."""
    cubin = workdir / (source + ".cubin")
    subprocess.run([nvcc(), "-O3", "-std=c++17", "-arch=sm_90", "-cubin", "-I", str(CSRC),
                    str(CSRC / source), "-o", str(cubin)], check=True, capture_output=True,
                   text=True, timeout=900)
    return subprocess.run([cuobjdump(), "-sass", str(cubin)], check=True, capture_output=True,
                          text=True, timeout=300).stdout


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


def time_loop(code):
    """The instructions of the smallest loop holding every HMMA (None without HMMA)."""
    hmma = [a for a, t in code if opcode(t).startswith("HMMA")]
    if not hmma:
        return None
    best = None
    for addr, text in code:
        m = re.match(r"(?:@!?U?P[T0-9]+\s+)?BRA\s+(?:`?\(?\.?L?_?x?_?)?(0x[0-9a-f]+)", text)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target < addr and target <= min(hmma) and addr >= max(hmma):
            exits = any(target <= a <= addr and opcode(t) == "EXIT" for a, t in code)
            if not exits and (best is None or addr - target < best[1] - best[0]):
                best = (target, addr)
    if best is None:
        return None
    return [(a, t) for a, t in code if best[0] <= a <= best[1]]


def expected_hmma(kind: str, cell: str, H: int, cs: int, second: int) -> int:
    G = GATES[cell]
    if kind == "fwd":  # second: KS k slices
        return G * 2 * (H // second // 16)
    return (H // (16 * second)) * 2 * (G * H // cs // 16)  # second: NW warps


def table(workdir: Path):
    rows = []
    for source in SOURCES:
        for name, code in functions(compile_sass(source, workdir)):
            m = KERNEL.search(name)
            if not m:
                continue
            kind, cell, dt, H, cs, second, ex = m.groups()
            cell, H, cs, second, ex = CELLS[int(cell)], int(H), int(cs), int(second), int(ex)
            loop = time_loop(code)
            counts = {c: 0 for c in CLASSES}
            for _, text in loop or []:
                counts[klass(opcode(text))] += 1
            rows.append({
                "kernel": kind, "cell": cell, "dtype": DTYPES[dt], "H": H,
                "plan": f"{cs}x{second}{'a' if ex else ''}",
                "fence_free": bool(ex) or (kind == "bwd" and cs == 1),
                "loop_found": loop is not None, "instructions": len(loop or []),
                "expected_hmma": expected_hmma(kind, cell, H, cs, second), **counts})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = table(Path(tmp))
    head = ["kernel", "cell", "dtype", "H", "plan", "instructions", *CLASSES]
    print(" ".join(f"{h:>8}" for h in head))
    for r in rows:
        print(" ".join(f"{str(r[h]):>8}" for h in head))
    if args.out:
        ver = subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout
        Path(args.out).write_text(json.dumps({
            "what": "cluster kernels' time loops, sm_90 SASS instructions per step (one warp)",
            "nvcc": ver.strip().splitlines()[-1] if ver else None,
            "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
