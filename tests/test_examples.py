"""The example training scripts (examples/), run in-process on the CPU at small sizes: they
train (the loss drops), every backend sees the same weights and batches, --json holds what it
documents, and bad backend names or unavailable backends are handled."""
import importlib.util
import json
import math
import pathlib

import pytest

from fused_rnn import backends

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
# Small sizes and a higher lr, so that 30 steps take the loss well down. Over seeds 0-7 both
# scripts dropped by 1.17 or more (mean of the first 3 steps to mean of the last 5).
ARGS = {
    "char_lm": "--batch 8 --bptt 32 --hidden 32 --embed 16 --lr 1e-2 --val-chars 2000",
    "seq2seq": "--batch 16 --hidden 32 --embed 16 --lr 1e-2",
}
COMMON = "--device cpu --log-every 10"
MIN_DROP = 0.6


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(name, extra):
    return _load(name).main(f"{ARGS[name]} {COMMON} {extra}".split())


@pytest.fixture(scope="module", params=sorted(ARGS))
def trained(request, tmp_path_factory):
    """(script name, main's results, the --json contents) of 30 steps of reference and cudnn."""
    path = tmp_path_factory.mktemp(request.param) / "out.json"
    results = _main(request.param, f"--steps 30 --backend reference cudnn --json {path}")
    return request.param, results, json.loads(path.read_text())


def test_training_lowers_the_loss(trained):
    name, results, _ = trained
    assert sorted(results) == ["cudnn", "reference"]
    for r in results.values():
        losses = r["losses"]
        assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
        first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
        assert last < first - MIN_DROP, (name, first, last)


def test_backends_see_the_same_weights_and_batches(trained):
    """Re-seeded per backend: the reference and torch's own LSTM give the same curve."""
    _, results, _ = trained
    for a, b in zip(results["reference"]["losses"][:10], results["cudnn"]["losses"][:10]):
        assert a == pytest.approx(b, rel=1e-4)


def test_json_holds_the_documented_keys(trained):
    name, results, doc = trained
    assert {"config", "device", "torch", "backends", "skipped"} <= set(doc)
    assert doc["config"]["backend"] == ["reference", "cudnn"] and doc["config"]["steps"] == 30
    metric = "val_loss" if name == "char_lm" else "accuracy"
    for backend, r in doc["backends"].items():
        assert {"losses", "final_loss", "sec_per_step", "peak_memory_bytes", metric} <= set(r)
        assert r["losses"] == results[backend]["losses"]
        assert r["final_loss"] == pytest.approx(sum(r["losses"][-10:]) / 10)
        assert math.isfinite(r[metric]) and r["sec_per_step"] > 0


@pytest.mark.parametrize("name", sorted(ARGS))
def test_unknown_backend_is_refused(name, capsys):
    with pytest.raises(SystemExit) as e:
        _main(name, "--steps 1 --backend reference nope")
    assert e.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(ARGS))
def test_unavailable_backend_is_skipped(name, capsys, monkeypatch):
    monkeypatch.delenv("FUSED_RNN_CUDA_EMULATE", raising=False)
    results = _main(name, "--steps 2 --backend cuda reference")
    assert list(results) == ["reference"]
    assert "--- cuda: skipped (it runs on CUDA tensors" in capsys.readouterr().out


@pytest.mark.skipif(not backends.triton_interpreted() or backends.why_not("triton", None),
                    reason="needs triton under TRITON_INTERPRET=1 (tests/conftest.py, no GPU)")
@pytest.mark.parametrize("name", sorted(ARGS))
def test_triton_interpreted_matches_reference(name):
    """A few steps of the Triton kernels under Triton's CPU interpreter, at tiny sizes."""
    tiny = {"char_lm": "--bptt 4 --batch 4 --val-chars 32",
            "seq2seq": "--batch 4 --held-out 8"}[name]
    results = _main(name, f"--steps 2 --hidden 8 --embed 8 {tiny} --backend reference triton")
    for a, b in zip(results["reference"]["losses"], results["triton"]["losses"]):
        assert a == pytest.approx(b, rel=1e-4)
