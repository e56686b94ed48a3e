"""The cluster kernels' CPU tests can fail: each mutation in scripts/mutation_check.py (of the
cluster backward, csrc/rnn_bwd_cluster.cu: a dgates term dropped, a rank's partial skipped in the
reduce-scatter, the saved gates of the wrong step; of the multi-cluster exchange,
csrc/exchange.cuh: a stale step tag accepted, one cluster's slice skipped; of the fp32 products,
csrc/mma.cuh: the IEEE-accurate one's al.bh term dropped, two rows of the tf32 one's fragment
swapped) builds its own emulated extension and must
fail at least one case of test_cuda_kernels.py's grid for those kernels (the fp32 one: one case
per emulated cluster plan, under the parity rule). Each in a subprocess: one emulated build
(about 45 s) per mutation. Likewise each mutation of the Triton tile kernels in
scripts/triton_mutation_check.py must fail a tile test of test_triton.py in the interpreter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import mutation_check  # noqa: E402
import triton_mutation_check  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU check of the emulated build (CI)")
@pytest.mark.parametrize("name", list(mutation_check.MUTATIONS))
def test_cluster_kernel_mutation_is_caught(name):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               FUSED_RNN_CUDA_EMULATE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "mutation_check.py"), name],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows, f"no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    row = rows[0]
    fp32 = mutation_check.MUTATIONS[name][4] in ("fp32", "tf32")
    assert row["mutation"] == name and row["cases"] >= (7 if fp32 else 15), row
    assert row["caught"] and proc.returncode == 0, row


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU check in Triton's interpreter (CI)")
@pytest.mark.parametrize("name", list(triton_mutation_check.MUTATIONS))
def test_triton_tile_mutation_is_caught(name):
    row = triton_mutation_check.check(name)
    assert row["caught"], row
