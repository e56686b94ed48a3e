"""Mutation checks of the Triton tile kernels' CPU tests: each mutation below breaks
fused_rnn/ops/triton/tile.py in one way, in a copy of the package and its tests, and the tile
tests of tests/test_triton.py (test_tile_*, and the step-mask and LayerNorm comparisons with the
tile variant) run on the copy in Triton's interpreter. A mutation is caught when at least one test fails.
Prints one JSON line per mutation; exit 0 when every mutation asked for is caught.

    python scripts/triton_mutation_check.py                 # all
    python scripts/triton_mutation_check.py tile_w_transposed   # one

tests/test_mutations.py runs each (about 20 s each: pytest stops at the first failure)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "fused_rnn/ops/triton/tile.py"

# name -> (what it breaks, the text replaced, its replacement); the text must occur once.
MUTATIONS = {
    "tile_w_transposed": (
        "the forward reads W_hh transposed (W_hh[g·H + k, j] for row j, column k)",
        "w_ptr + offs_h[None, :] * H + offs_h[:, None]",
        "w_ptr + offs_h[:, None] * H + offs_h[None, :]"),
    "tile_bwd_drops_gate": (
        "the backward's recurrent product leaves out the LSTM's o gate",
        "rec += tl.dot(d3.to(w_ty), w3",
        "rec += 0.0 * tl.dot(d3.to(w_ty), w3"),
    "tile_bwd_packed_carry": (
        "dL/dh is not carried through steps past a sequence's end",
        "g_h = tl.where(valid, direct, g_h)",
        "g_h = direct"),
    "tile_fwd_c_kept": (
        "the LSTM's cell state is not kept through steps past a sequence's end",
        "c_prev = tl.where(valid, c, c_prev)",
        "c_prev = c"),
    "tile_fwd_hm": (
        "the forward's product with W_hh leaves out the variational dropout mask of h",
        "(h_prev * hm).to(w0.dtype)",
        "h_prev.to(w0.dtype)"),
    "tile_ln_gamma": (
        "the backward through the gates' LayerNorm leaves out the first gate's γ",
        "d0 * g[0], d1 * g[1]",
        "d0, d1 * g[1]"),
}
TESTS = "test_tile or (test_step_masks and tile) or (test_layer_norm and tile)"


def check(name: str) -> dict:
    what, old, new = MUTATIONS[name]
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("fused_rnn", "tests"):
            shutil.copytree(ROOT / part, Path(tmp) / part,
                            ignore=shutil.ignore_patterns("__pycache__", "tuned"))
        shutil.copy(ROOT / "pyproject.toml", tmp)
        path = Path(tmp) / SOURCE
        text = path.read_text()
        assert text.count(old) == 1, f"{name}: the mutated text occurs {text.count(old)} times"
        path.write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=tmp, TRITON_INTERPRET="1")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             "tests/test_triton.py", "-k", TESTS],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    # pytest exits 1 when a test failed; 0 (all passed) means the mutation went unseen, and any
    # other code (collection error, no tests) is no verdict.
    return {"mutation": name, "breaks": what, "pytest": summary, "exit": proc.returncode,
            "caught": proc.returncode == 1 and " failed" in summary}


def main(argv):
    rows = [check(n) for n in (argv or list(MUTATIONS))]
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0 if all(r["caught"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
