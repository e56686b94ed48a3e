"""The measured plan table (fused_rnn/ops/cuda/tuned.py, written by `fused-rnn bench --tune`):
the CUDA backend takes each call's plan from the table of its GPU (the emulated build's here),
by kind, cell, dtype and H, from the entry of the nearest batch size, where no plan is asked for;
an asked plan comes first and an H the table lacks runs its default. And the tuner writes a
table of plans that ran, each the fastest it timed."""
import json

import pytest
import torch

import fused_rnn
from fused_rnn.ops.cuda import extension, tuned
from fused_rnn.ops.cuda.plans import PLAN_MULTI_UNIT

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the emulated build's table")


@pytest.fixture(autouse=True)
def _table_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSED_RNN_CUDA_EMULATE", "1")
    monkeypatch.setenv("FUSED_RNN_TUNED_DIR", str(tmp_path))
    tuned.clear()
    yield
    tuned.clear()


def _write(entries):
    path = tuned.table_path(tuned.EMULATED)
    path.write_text(json.dumps({"gpu": tuned.EMULATED, "entries": entries}))
    tuned.clear()


def _train_step(H, B, **plans):
    from fused_rnn.ops.cuda import launch
    torch.manual_seed(0)
    m = fused_rnn.LSTM(5, H, backend="cuda")
    launch.last_used.update(plan=None, bwd_plan=None)
    with launch.variant("cluster"), launch.cluster_plan(plans.get("fwd")), \
            launch.cluster_bwd_plan(plans.get("bwd")):
        m(torch.randn(3, B, 5))[0].sum().backward()
    return launch.last_used["plan"], launch.last_used["bwd_plan"]


def test_calls_take_the_nearest_batch_entry_and_asked_plans_first():
    e = dict(cell="LSTM", dtype="fp32", H=32)
    _write([dict(e, kind="fwd", B=1, plan="2x2"), dict(e, kind="fwd", B=16, plan="2x1a"),
            dict(e, kind="bwd", B=1, plan="1x2"), dict(e, kind="bwd", B=16, plan="2x1")])
    # log2 distances: B=3 is nearer 1, B=12 nearer 16, B=4 ties (the smaller bucket wins).
    assert _train_step(32, 3) == ("2x2", "1x2")
    assert _train_step(32, 12) == ("2x1a", "2x1")
    assert _train_step(32, 4) == ("2x2", "1x2")
    assert _train_step(32, 3, fwd="2x1", bwd="2x2") == ("2x1", "2x2")
    # H = 64 is not in the table: its defaults (csrc/plans.h, the first of each H).
    assert _train_step(64, 3) == ("4x2", "4x2a")


def test_no_table_runs_the_defaults():
    assert not tuned.table_path(tuned.EMULATED).exists()
    assert _train_step(32, 3) == ("2x1", "2x2a")


def test_tuner_writes_the_fastest_plan_that_ran():
    from fused_rnn.bench import tune
    table = tune.tune(torch.device("cpu"), cells=("LSTM",), dtypes=("fp32",), b_buckets=(2,),
                      T=2, hs=(32,), log=lambda line: None)
    path = tune.write(table)
    assert path == tuned.table_path(tuned.EMULATED) and json.loads(path.read_text()) == table
    compiled = extension.load().cluster_plans()
    assert {(e["kind"], e["H"], e["B"]) for e in table["entries"]} == {("fwd", 32, 2),
                                                                       ("bwd", 32, 2)}
    for e in table["entries"]:
        timed = e["us_per_step"]
        # every plan of H that takes fp32 ran (the emulated device fits them all; the
        # multi-cluster plans take fp16/bf16 and fp64 only), the fastest is the entry's
        assert len(timed) == sum(1 for k, H, code in compiled if (k, H) == (e["kind"], 32)
                                 and code < PLAN_MULTI_UNIT), timed
        assert e["plan"] == min(timed, key=timed.get)
    assert _train_step(32, 2) == tuple(e["plan"] for e in table["entries"])


def _auto_entries(kind, H, picks):
    return [dict(kind=kind, cell="LSTM", dtype="fp64", H=H, B=B, plan=p) for B, p in picks]


def test_auto_entries_name_a_backend_by_exact_h_and_nearest_batch():
    cpu = torch.device("cpu")
    _write(_auto_entries("auto_fwd", 16, [(2, "triton_step"), (20, "cuda")])
           + _auto_entries("auto_train", 16, [(2, "triton")]))
    pick = tuned.backend_for
    assert pick(cpu, "LSTM", torch.float64, 16, 1, False) == "triton_step"
    assert pick(cpu, "LSTM", torch.float64, 16, 30, False) == "cuda"
    assert pick(cpu, "LSTM", torch.float64, 16, 30, True) == "triton"
    assert pick(cpu, "LSTM", torch.float64, 17, 2, False) is None  # no entry for H = 17
    assert pick(cpu, "GRU", torch.float64, 16, 2, False) is None
    _write(_auto_entries("auto_fwd", 16, [(2, "triton_tiles")]))
    with pytest.raises(ValueError, match="expected a provider of .* got 'triton_tiles'"):
        pick(cpu, "LSTM", torch.float64, 16, 2, False)


@pytest.mark.parametrize("provider", ["triton", "triton_step"])
def test_auto_runs_the_backend_and_variant_the_table_chose(provider, monkeypatch):
    """backend="auto" (where the table is consulted: CUDA tensors; here the CPU, let in) runs
    the table's choice for the call: the Triton tile kernels for "triton", its per-step ones
    for "triton_step", with the reference's results (fp64, 1e-10)."""
    from fused_rnn import backends, functional
    from fused_rnn.ops.triton import launch as triton_launch
    if backends.why_not("triton", torch.device("cpu"), torch.float64) is not None:
        pytest.skip("needs TRITON_INTERPRET=1")
    monkeypatch.setattr(functional, "_tunable", lambda device: True)
    _write(_auto_entries("auto_train", 16, [(3, provider)]))
    ran = []
    for name in ("_fwd_tile", "_rnn_fwd"):
        original = getattr(triton_launch, name)
        monkeypatch.setattr(triton_launch, name, lambda *a, _n=name, _f=original, **k:
                            ran.append(_n) or _f(*a, **k))
    results = {}
    for backend in ("auto", "reference"):
        torch.manual_seed(0)
        m = fused_rnn.LSTM(5, 16, backend=backend, dtype=torch.float64)
        x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
        out, (h, c) = m(x)
        (out.sum() + h.sum() + c.sum()).backward()
        results[backend] = [out, h, c, x.grad] + [p.grad for p in m.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(*results.values())) <= 1e-10
    tile = {"_fwd_tile"} if provider == "triton" else set()
    assert set(ran) == {"_rnn_fwd"} | tile, ran


def test_backend_tuner_writes_the_fastest_provider_that_ran():
    from fused_rnn import backends
    from fused_rnn.bench import tune
    if backends.why_not("triton", torch.device("cpu"), torch.float32) is not None:
        pytest.skip("needs TRITON_INTERPRET=1")
    cpu = torch.device("cpu")
    entries = tune.tune_backends(cpu, ["LSTM"], ["fp32"], b_buckets=(2,), T=2, hs=(16,),
                                 providers=("triton", "triton_step"), log=lambda line: None)
    assert [e["kind"] for e in entries] == list(tuned.AUTO_KINDS)
    for e in entries:
        assert set(e["us_per_step"]) == {"triton", "triton_step"}
        assert e["plan"] == min(e["us_per_step"], key=e["us_per_step"].get)
    _write([dict(kind="fwd", cell="LSTM", dtype="fp32", H=64, B=2, plan="4x4")])
    tune.write(tune.merge(tune.existing(cpu), entries, tuned.AUTO_KINDS))
    written = json.loads(tuned.table_path(tuned.EMULATED).read_text())["entries"]
    assert [e["kind"] for e in written] == ["fwd", "auto_fwd", "auto_train"]
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False  # the suite's "fp32": TF32 off
        assert tuned.backend_for(cpu, "LSTM", torch.float32, 16, 2, True) == entries[1]["plan"]
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
