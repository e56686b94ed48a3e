"""`fused-rnn info` and `fused-rnn parity`."""
import re
import subprocess
import sys

import pytest
import torch

from fused_rnn import backends, cli, functional, ops


def test_info_lists_backends_and_why(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("FUSED_RNN_CUDA_EMULATE", raising=False)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "triton" in out and "GPU" in out
    for name in ("auto", "reference", "triton", "cuda", "cudnn"):
        assert re.search(rf"│ {name} +│", out), name
    if torch.cuda.is_available():
        cuda_ok = backends.why_not("cuda", torch.device("cuda")) is None
        assert f"picks '{'cuda' if cuda_ok else 'triton'}' on cuda" in out
    else:
        assert "picks 'reference' on cpu" in out
        assert "it runs on CUDA tensors (or on the CPU under FUSED_RNN_CUDA_EMULATE=1)" in out


def test_parity_passes_and_prints_a_table(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # triton's parity: test_triton.py
    assert cli.main(["parity", "--cases", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "worst err/bound" in out
    rows = [line for line in out.splitlines() if "reference" in line or "cudnn " in line]
    # 2 backends x 4 cells x 2 dtypes, all passing
    assert len(rows) == 16 and all(re.search(r"│ PASS +│$", r.rstrip()) for r in rows)


def test_parity_exits_non_zero_when_a_backend_breaks_the_rule(capsys, monkeypatch):
    def off_by_a_bit(*args, **kw):
        out, h, c = ops.naive.layer_naive(*args, **kw)
        return out * (1 + 1e-4), h, c

    monkeypatch.setitem(functional._LAYER_FNS, "reference", off_by_a_bit)
    assert cli.main(["parity", "--cases", "4", "--backend", "reference", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL reference" in out and "output: err" in out


def test_parity_with_no_runnable_backend_fails(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert cli.main(["parity", "--cases", "1", "--backend", "triton", "--device", "cpu"]) == 2
    assert "backend 'triton' skipped: it runs on CUDA tensors" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["-m", "fused_rnn", "info"]])
def test_python_dash_m(argv):
    res = subprocess.run([sys.executable] + argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "fused_rnn" in res.stdout
