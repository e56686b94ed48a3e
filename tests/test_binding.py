"""Every argument check of the extension's binding (csrc/binding.cpp), each with a bad argument,
in a subprocess: a crash there (a segfault in the error path, as one GPU build had) fails the
test instead of taking a pytest worker down. Each check must raise the binding's ArgumentError,
a ValueError and a RuntimeError, whose message names the argument. CPU: the emulated build;
GPU: the GPU build (marker gpu). A scan of binding.cpp makes sure no check goes untested."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in the subprocess: builds valid arguments for each entry point, breaks one per case and
# prints one JSON line per case (flushed, so a crash shows the case it happened in).
SCRIPT = r'''
import json, sys
import torch
from fused_rnn.ops.cuda import extension
ext = extension.load()
dev = sys.argv[1]
T, B, H, I = 2, 3, 4, 5
f = torch.float32

def t(*shape, dtype=f):
    return torch.randn(*shape, dtype=dtype).to(dev) if dtype.is_floating_point else \
        torch.ones(*shape, dtype=dtype, device=dev)

def u8(*shape):
    return torch.ones(*shape, dtype=torch.uint8, device=dev)

def meta(*shape):
    return torch.empty(*shape, device="meta")

def fwd(**kw):  # rnn_fwd of an LSTM, H = 4
    a = dict(gi=t(T, B, 4 * H), w_hh=t(4 * H, H), b_hh=None, w_hr=None, mask=None, m_h=None,
             m_g=None, m_c=None, m_zc=None, m_zh=None, scales=[1.0, 1.0, 1.0, 0.0, 0.0],
             h0=None, c0=None, h_n=t(B, H), c_n=t(B, H), hs=t(T + 1, B, H), cs=t(T + 1, B, H),
             out=t(T, B, H), saved=t(T, B, 4 * H), ms=t(0), cell=0, reverse=False, variant=1,
             plan=0, store_saved=True, stream=0)
    a.update(kw)
    return ext.rnn_fwd(*a.values())

def gru_fwd(**kw):
    a = dict(gi=t(T, B, 3 * H), w_hh=t(3 * H, H), cell=1, saved=t(T, B, 4 * H))
    a.update(kw)
    return fwd(**a)

def bwd(**kw):  # rnn_bwd of an LSTM
    a = dict(w_hh=t(4 * H, H), w_hr_t=None, dout=t(T, B, H), dh_n=None, dc_n=None,
             saved=t(T, B, 4 * H), hs=t(T + 1, B, H), cs=t(T + 1, B, H), mask=None, m_h=None,
             m_g=None, m_c=None, m_zc=None, m_zh=None, scales=[1.0, 1.0, 1.0, 0.0, 0.0],
             dgh=t(T, B, 4 * H), dgi=t(T, B, 4 * H), dhs=None, carry_h=t(B, H), carry_c=t(B, H),
             cell=0, reverse=False, variant=1, plan=0, stream=0)
    a.update(kw)
    return ext.rnn_bwd(*a.values())

def lweights(G=4, proj=0, D=1, bias=True):
    HK = proj or H
    one = [t(G * H, I), t(G * H, HK)] + ([t(G * H), t(G * H)] if bias else []) + \
        ([t(HK, H)] if proj else [])
    return [w for _ in range(D) for w in one]

def lfwd(**kw):  # layer_fwd of a one-layer LSTM
    a = dict(x=t(T, B, I), w=lweights(), h0=None, c0=None, h_n=None, c_n=None, LD=1, layer=0,
             mask=None, cell=0, D=1, bias=True, proj=False, variant=1, plan=0, store_saved=True,
             poison=False, stream=0)
    a.update(kw)
    return ext.layer_fwd(*a.values())

def lbwd(**kw):  # layer_bwd of lfwd()'s result
    x, w = t(T, B, I), lweights()
    _, h_n, c_n, kept, _, _ = lfwd(x=x, w=w)
    a = dict(dout=t(T, B, H), dh_n=None, dc_n=None, x=x, w=w, kept=kept, dh0=None, dc0=None,
             LD=1, layer=0, mask=None, cell=0, D=1, bias=True, proj=False, variant=1, plan=0,
             need_dx=True, need_w=[], stream=0)
    a.update(kw)
    return ext.layer_bwd(*a.values())

def cell(**kw):  # cell_fwd of an LSTMCell
    a = dict(x=t(B, I), w=lweights(), h0=None, c0=None, cell=0, bias=True, variant=1,
             poison=False, stream=0)
    a.update(kw)
    return ext.cell_fwd(*a.values())

CASES = {
    # rnn_fwd
    "cell": lambda: fwd(cell=7),
    "variant": lambda: fwd(variant=5),
    "plan": lambda: fwd(plan=-1),
    "gi": lambda: fwd(gi=t(T, 4 * H)),
    "gi device": lambda: fwd(gi=meta(T, B, 4 * H)),
    "gi dtype": lambda: fwd(gi=t(T, B, 4 * H, dtype=torch.int32), w_hh=t(4 * H, H, dtype=torch.int32),
                            h_n=t(B, H, dtype=torch.int32), c_n=t(B, H, dtype=torch.int32),
                            hs=t(T + 1, B, H, dtype=torch.int32), out=t(T, B, H, dtype=torch.int32)),
    "w_hh": lambda: fwd(w_hh=t(4 * H, H + 1)),
    "w_hh device": lambda: fwd(w_hh=meta(4 * H, H)),
    "w_hh contiguous": lambda: fwd(w_hh=t(H, 4 * H).t()),
    "b_hh": lambda: fwd(b_hh=t(4 * H + 1)),
    "w_hr": lambda: gru_fwd(w_hh=t(3 * H, 2), w_hr=t(2, H), hs=t(T + 1, B, 2)),
    "hs width": lambda: fwd(w_hh=t(4 * H, H + 1), hs=t(T + 1, B, H + 1)),
    "hs": lambda: fwd(hs=t(T + 2, B, H)),
    "hs rank": lambda: fwd(hs=t(B, H)),
    "ms": lambda: fwd(w_hh=t(4 * H, 2), w_hr=t(2, H), hs=t(T + 1, B, 2), out=t(T, B, 2),
                      h_n=t(B, 2), ms=t(T, B, H + 1)),
    "out": lambda: fwd(out=t(T, B, H + 1)),
    "saved": lambda: fwd(saved=t(T, B, 4 * H, dtype=torch.float64)),
    "h_n": lambda: fwd(h_n=t(B + 1, H)),
    "cs": lambda: fwd(cs=t(T, B, H)),
    "c_n": lambda: fwd(c_n=t(B, H + 1)),
    "mask": lambda: fwd(mask=u8(T, B + 1)),
    "h0": lambda: fwd(h0=t(B, H + 1)),
    "c0": lambda: fwd(c0=t(B + 1, H)),
    "m_h": lambda: fwd(m_h=u8(B, H + 1)),
    "m_g": lambda: fwd(m_g=u8(B, H)),
    "m_g cell": lambda: fwd(gi=t(T, B, H), w_hh=t(H, H), saved=t(T, B, H), cell=2, m_g=u8(T, B, H)),
    "m_c": lambda: gru_fwd(m_c=u8(B, H)),
    "m_zc": lambda: fwd(m_zc=u8(T, H, B).transpose(1, 2)),
    "m_zc, zc_p": lambda: gru_fwd(scales=[1.0, 1.0, 1.0, 0.5, 0.0]),
    "m_zh": lambda: fwd(m_zh=u8(T, B, H).bool()),
    "scales": lambda: fwd(scales=[1.0]),
    # rnn_bwd
    "bwd cell": lambda: bwd(cell=-1),
    "bwd variant": lambda: bwd(variant=3),
    "bwd plan": lambda: bwd(plan=-1),
    "bwd hs": lambda: bwd(hs=t(B, H)),
    "bwd hs device": lambda: bwd(hs=meta(T + 1, B, H)),
    "bwd hs dtype": lambda: bwd(hs=t(T + 1, B, H, dtype=torch.int32), w_hh=t(4 * H, H, dtype=torch.int32),
                                dout=t(T, B, H, dtype=torch.int32)),
    "bwd w_hh": lambda: bwd(w_hh=t(4 * H)),
    "bwd w_hh shape": lambda: bwd(w_hh=t(4 * H, H + 1)),
    "w_hr_t": lambda: bwd(w_hh=t(3 * H, H), saved=t(T, B, 4 * H), dgh=t(T, B, 3 * H),
                          dgi=t(T, B, 3 * H), cell=1, w_hr_t=t(H, 2)),
    "bwd hs width": lambda: bwd(w_hh=t(4 * H, 2), hs=t(T + 1, B, 2)),
    "dout": lambda: bwd(dout=t(T, B + 1, H)),
    "bwd saved": lambda: bwd(saved=t(T, B, H)),
    "dgh": lambda: bwd(dgh=t(T, B, H)),
    "dgi": lambda: bwd(w_hh=t(3 * H, H), dgh=t(T, B, 3 * H), dgi=t(T, B, H), cell=1),
    "carry_h": lambda: bwd(carry_h=t(B + 1, H)),
    "cs bwd": lambda: bwd(cs=t(T, B, H)),
    "carry_c": lambda: bwd(carry_c=t(B, H + 2)),
    "dhs": lambda: bwd(w_hh=t(4 * H, 2), hs=t(T + 1, B, 2), dout=t(T, B, 2), carry_h=t(B, 2),
                       w_hr_t=t(H, 2), dhs=None),
    "w_hr_t shape": lambda: bwd(w_hh=t(4 * H, 2), hs=t(T + 1, B, 2), dout=t(T, B, 2),
                                carry_h=t(B, 2), w_hr_t=t(H, 3), dhs=t(T, B, 2)),
    "dhs shape": lambda: bwd(w_hh=t(4 * H, 2), hs=t(T + 1, B, 2), dout=t(T, B, 2),
                             carry_h=t(B, 2), w_hr_t=t(H, 2), dhs=t(T, B, 3)),
    "dh_n": lambda: bwd(dh_n=t(B, H + 1)),
    "dc_n": lambda: bwd(dc_n=t(B + 1, H)),
    "bwd mask": lambda: bwd(mask=u8(T + 1, B)),
    "bwd scales": lambda: bwd(scales=[]),
    # layer_fwd
    "lf variant": lambda: lfwd(variant=9),
    "lf plan": lambda: lfwd(plan=10 ** 9),
    "lf cell": lambda: lfwd(cell=4),
    "directions": lambda: lfwd(D=3),
    "lf w_hr": lambda: lfwd(cell=1, w=lweights(G=3, proj=2), proj=True),
    "input device": lambda: lfwd(x=meta(T, B, I)),
    "input": lambda: lfwd(x=t(T, I)),
    "input empty": lambda: lfwd(x=t(T, 0, I)),
    "input dtype": lambda: lfwd(x=t(T, B, I, dtype=torch.int32),
                                w=[w.to(torch.int32) for w in lweights()]),
    "weights": lambda: lfwd(w=lweights()[:3]),
    "weight_ih": lambda: lfwd(w=[t(4 * H + 1, I)] + lweights()[1:]),
    "weight_ih shape": lambda: lfwd(w=[t(4 * H, I + 1)] + lweights()[1:]),
    "weight_hh": lambda: lfwd(w=lweights()[:1] + [t(4 * H)] + lweights()[2:]),
    "weight_hh width": lambda: lfwd(w=lweights()[:1] + [t(4 * H, H + 1)] + lweights()[2:]),
    "weight_hh shape": lambda: lfwd(D=2, w=lweights() + lweights()[:1] + [t(4 * H - 4, H)] +
                                    lweights()[2:]),
    "bias_ih": lambda: lfwd(w=lweights()[:2] + [t(H)] + lweights()[3:]),
    "bias_hh": lambda: lfwd(w=lweights()[:3] + [t(4 * H, 1)]),
    "weight_hr": lambda: lfwd(w=lweights(proj=2)[:-1] + [t(3, H)], proj=True),
    "layer": lambda: lfwd(layer=1),
    "lf h_n": lambda: lfwd(h_n=t(1, B, H + 1)),
    "lf c_n": lambda: lfwd(c_n=t(2, B, H)),
    "lf h0": lambda: lfwd(h0=t(1, B + 1, H)),
    "lf c0": lambda: lfwd(c0=t(1, B, H, dtype=torch.float64)),
    "lf mask": lambda: lfwd(mask=u8(T, B).float()),
    # cell_fwd
    "cell input": lambda: cell(x=t(T, B, I)),
    "cell h0": lambda: cell(h0=t(1, B, H)),
    "cell c0": lambda: cell(c0=t(H)),
    "cell h0 shape": lambda: cell(h0=t(B + 1, H)),
    "cell weights": lambda: cell(w=lweights()[:2]),
    # packed_index
    "batch_sizes": lambda: ext.packed_index(torch.tensor([[2, 1]]), None, t(3, I)),
    "batch_sizes first": lambda: ext.packed_index(torch.tensor([9]), None, t(3, I)),
    "batch_sizes order": lambda: ext.packed_index(torch.tensor([1, 2]), None, t(3, I)),
    "packed data": lambda: ext.packed_index(torch.tensor([2, 1]), None, t(())),
    "sorted_indices": lambda: ext.packed_index(torch.tensor([2, 1]), torch.tensor([0]).to(dev),
                                               t(3, I)),
    "need_w": lambda: lbwd(need_w=[True]),
    # layer_bwd
    "lb variant": lambda: lbwd(variant=-2),
    "lb plan": lambda: lbwd(plan=-1),
    "lb saved count": lambda: lbwd(kept=[]),
    "lb layer": lambda: lbwd(layer=-1),
    "dh0": lambda: lbwd(dh0=t(1, B, H + 1)),
    "dc0": lambda: lbwd(dc0=t(1, B, H, dtype=torch.float64)),
    "lb dh_n": lambda: lbwd(dh_n=t(2, B, H)),
    "lb dc_n": lambda: lbwd(dc_n=t(1, B, H + 1)),
    "lb mask": lambda: lbwd(mask=u8(T + 1, B)),
    "lb dout": lambda: lbwd(dout=t(T, B, H + 1)),
    "lb dout dtype": lambda: lbwd(dout=t(T, B, H, dtype=torch.float64)),
    "lb saved": lambda: lbwd(kept=[t(T, B, H), t(T + 1, B, H), t(T + 1, B, H), t(1)]),
    "lb hs": lambda: lbwd(kept=[t(T, B, 4 * H), t(T, B, H), t(T + 1, B, H), t(1)]),
    "lb cs": lambda: lbwd(kept=[t(T, B, 4 * H), t(T + 1, B, H), t(T, B, H), t(1)]),
    "lb ms": lambda: lbwd(w=lweights(proj=2), proj=True, dout=t(T, B, 2),
                          kept=[t(T, B, 4 * H), t(T + 1, B, 2), t(T + 1, B, H), t(T, B, 2)]),
}
for label, case in CASES.items():
    try:
        case()
        row = {"label": label, "raised": None}
    except Exception as e:  # noqa: BLE001 (the parent checks what it was)
        row = {"label": label, "raised": type(e).__name__, "value": isinstance(e, ValueError),
               "runtime": isinstance(e, RuntimeError), "message": str(e)}
    print(json.dumps(row), flush=True)
'''

# The argument each case must name at the start of its message (label -> argument).
NAMED = {
    "cell": "cell", "variant": "variant", "plan": "plan", "gi": "gi", "gi device": "gi",
    "gi dtype": "gi", "w_hh": "w_hh", "w_hh device": "w_hh", "w_hh contiguous": "w_hh",
    "b_hh": "b_hh", "w_hr": "w_hr", "hs width": "hs", "hs": "hs", "hs rank": "hs", "ms": "ms",
    "out": "out", "saved": "saved", "h_n": "h_n", "cs": "cs", "c_n": "c_n", "mask": "mask",
    "h0": "h0", "c0": "c0", "m_h": "m_h", "m_g": "m_g", "m_g cell": "m_g", "m_c": "m_c",
    "m_zc": "m_zc", "m_zc, zc_p": "m_zc, zc_p", "m_zh": "m_zh", "scales": "scales",
    "bwd cell": "cell", "bwd variant": "variant", "bwd hs": "hs", "bwd hs device": "hs",
    "bwd hs dtype": "hs", "bwd w_hh": "w_hh", "bwd w_hh shape": "w_hh", "bwd plan": "plan", "w_hr_t": "w_hr_t",
    "bwd hs width": "hs", "dout": "dout", "bwd saved": "saved", "dgh": "dgh", "dgi": "dgi",
    "carry_h": "carry_h", "cs bwd": "cs", "carry_c": "carry_c", "dhs": "dhs",
    "w_hr_t shape": "w_hr_t", "dhs shape": "dhs", "dh_n": "dh_n", "dc_n": "dc_n",
    "bwd mask": "mask", "bwd scales": "scales",
    "lf variant": "variant", "lf plan": "plan", "lf cell": "cell", "directions": "directions",
    "lf w_hr": "w_hr", "input device": "input", "input": "input", "input empty": "input",
    "input dtype": "input", "weights": "weights", "weight_ih": "weight_ih",
    "weight_ih shape": "weight_ih", "weight_hh": "weight_hh", "weight_hh width": "weight_hh",
    "weight_hh shape": "weight_hh", "bias_ih": "bias_ih", "bias_hh": "bias_hh",
    "weight_hr": "weight_hr", "layer": "layer", "lf h_n": "h_n", "lf c_n": "c_n", "lf h0": "h0",
    "lf c0": "c0", "lf mask": "mask",
    "cell input": "input", "cell h0": "h0", "cell c0": "c0", "cell h0 shape": "h0",
    "cell weights": "weights", "batch_sizes": "batch_sizes", "batch_sizes first": "batch_sizes",
    "batch_sizes order": "batch_sizes", "packed data": "data", "sorted_indices": "sorted_indices",
    "need_w": "need_w",
    "lb variant": "variant", "lb plan": "plan", "lb saved count": "saved", "lb layer": "layer", "dh0": "dh0",
    "dc0": "dc0", "lb dh_n": "dh_n", "lb dc_n": "dc_n", "lb mask": "mask", "lb dout": "dout",
    "lb dout dtype": "dout", "lb saved": "saved", "lb hs": "hs", "lb cs": "cs", "lb ms": "ms",
}


def checked_names() -> set:
    """The argument names binding.cpp's checks use: the first string literal of each
    FRNN_REQUIRE and check helper call."""
    src = (ROOT / "csrc" / "binding.cpp").read_text()
    src = src[src.index("namespace {"):]  # after the macro's own definition
    calls = r"(?:FRNN_REQUIRE|check_full|check_shape|check_device|check|u8_ptr|state_ptr|dtype_code)"
    names = set(re.findall(calls + r'\((?:[^";]|\n)*?"([^"]+)"', src))
    return {n for n in names if re.fullmatch(r"[a-z_][a-z0-9_]*(, [a-z_]+)?", n)}


def run_cases(device: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, device], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["label"]] = row
    assert proc.returncode == 0, (
        f"the binding's error paths crashed (exit {proc.returncode}) after "
        f"{list(rows)[-1:] or 'no case'}:\n{proc.stderr[-3000:]}")
    return rows


def _env(emulate: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FUSED_RNN_CUDA_EMULATE", None)
    if emulate:
        env["FUSED_RNN_CUDA_EMULATE"] = "1"
    return env


def check_rows(rows: dict):
    assert set(rows) == set(NAMED), set(rows) ^ set(NAMED)
    for label, name in NAMED.items():
        row = rows[label]
        assert row["raised"] == "ArgumentError", (label, row)
        assert row["value"] and row["runtime"], (label, row)
        assert row["message"].startswith(name + ": "), (label, row["message"])


def test_every_check_is_exercised():
    """A new check in binding.cpp needs a case here (and the scan itself finds the checks)."""
    names = checked_names()
    assert {"gi", "w_hh", "weight_ih", "dh0", "m_zc, zc_p", "directions"} <= names, names
    assert names <= set(NAMED.values()), names - set(NAMED.values())


def test_binding_errors_emulated():
    check_rows(run_cases("cpu", _env(emulate=True)))


@pytest.mark.gpu
def test_binding_errors_gpu():
    check_rows(run_cases("cuda", _env(emulate=False)))
