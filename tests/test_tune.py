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
