"""The example training scripts (examples/), run in-process on the CPU at small sizes: they
train (the loss drops), every backend sees the same weights and batches, --json holds what it
documents (a superset of the recorded results' keys), bad backend names or unavailable backends
are handled, --help lists every option with its default, the size follows the device, and the
--dtype modes run what they say (bf16: a bfloat16 model; amp: refused on the CPU)."""
import importlib.util
import json
import math
import pathlib

import pytest
import torch

from fused_rnn import backends

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RECORDED = {"char_lm": ROOT / "benchmarks/results/char_lm_h100.json",
            "seq2seq": ROOT / "benchmarks/results/seq2seq_h100.json"}
# Small sizes and a higher lr, so that 30 steps take the loss well down. Over seeds 0-7 both
# scripts dropped by 1.17 or more (mean of the first 3 steps to mean of the last 5).
ARGS = {
    "char_lm": "--batch 8 --bptt 32 --hidden 32 --embed 16 --lr 1e-2 --val-chars 2000",
    "seq2seq": "--batch 16 --hidden 32 --embed 16 --lr 1e-2",
}
COMMON = "--device cpu --log-every 10"
MIN_DROP = 0.6
# A few steps at tiny sizes, for the runs that check types rather than learning.
TINY = {"char_lm": "--batch 4 --bptt 8 --hidden 16 --embed 8 --val-chars 64",
        "seq2seq": "--batch 4 --hidden 16 --embed 8 --held-out 8"}


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(name, extra, args=None):
    return _load(name).main(f"{ARGS[name] if args is None else args} {COMMON} {extra}".split())


def _tiny(name, extra):
    return _main(name, f"--steps 2 --log-every 1 {extra}", args=TINY[name])


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
    config = doc["config"]
    assert config["backend"] == ["reference", "cudnn"] and config["steps"] == 30
    assert config["dtype"] == "fp32-ieee" and config["tf32"] is False
    assert config["dtype_mode"] == _load(name)._harness.DTYPES["fp32-ieee"]
    assert config["size"] == "small" and "CPU" in config["size_reason"]
    metric = "val_loss" if name == "char_lm" else "accuracy"
    for backend, r in doc["backends"].items():
        assert {"losses", "final_loss", "sec_per_step", "peak_memory_bytes", metric} <= set(r)
        assert r["losses"] == results[backend]["losses"]
        assert r["final_loss"] == pytest.approx(sum(r["losses"][-10:]) / 10)
        assert math.isfinite(r[metric]) and r["sec_per_step"] > 0
        assert r["param_dtype"] == "float32" and set(r["layer_dtypes"].values()) == {"float32"}


def test_json_keeps_the_recorded_results_keys(trained):
    """Fields are added, never renamed: a recorded results file's keys are all still written."""
    name, _, doc = trained
    recorded = json.loads(RECORDED[name].read_text())
    assert set(recorded) <= set(doc)
    assert set(recorded["config"]) <= set(doc["config"])
    for r in recorded["backends"].values():
        assert set(r) <= set(doc["backends"]["reference"])


def _option_help(text):
    """{first option string: its help line(s) joined}, from --help printed wide."""
    blocks, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = line.strip()
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize("name", sorted(ARGS))
def test_help_lists_every_option_with_its_default(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping: each option's help on its own line
    module = _load(name)
    p = module.build_parser()
    text = p.format_help()
    blocks = _option_help(text)
    options = [a.option_strings[0] for a in p._actions if a.option_strings]
    assert sorted(blocks) == sorted(options)
    for option in options:
        if option != "-h":
            assert "(default: " in blocks[option] and "(default: None)" not in blocks[option], \
                blocks[option]
    for key in module.SIZES["full"]:  # the size-dependent ones give both sizes' defaults
        full, small = module.SIZES["full"][key], module.SIZES["small"][key]
        assert f"(default: {full} full, {small} small)" in blocks["--" + key.replace("_", "-")]
    flat = " ".join(text.split())
    assert " ".join(module.__doc__.split()) in flat  # the whole docstring, not its first line
    for mode, what in module._harness.DTYPES.items():
        assert f"{mode}: {what}" in blocks["--dtype"]
    assert "(default: fp32-ieee)" in blocks["--dtype"]
    assert "Prints: the chosen size and why" in flat and "Writes nothing unless asked" in flat
    assert ("val_loss" if name == "char_lm" else "accuracy (exact match)") in flat


@pytest.mark.parametrize("name", sorted(ARGS))
def test_size_follows_the_device(name, capsys):
    module = _load(name)
    sizes = module.SIZES

    def parse(argv):
        return module._harness.parse(module.build_parser(), argv.split(), sizes)

    def size_of(args):
        return {k: getattr(args, k) for k in sizes["full"]}
    args = parse("--device cpu")
    assert args.size == "small" and size_of(args) == sizes["small"] and args.threads == 1
    assert "size small (the default on a CPU device" in capsys.readouterr().out
    args = parse("--device cuda")  # a torch.device only: nothing runs
    assert args.size == "full" and size_of(args) == sizes["full"]
    args = parse("--device cpu --full --hidden 64")
    assert args.size == "full" and size_of(args) == dict(sizes["full"], hidden=64)
    assert "size full (--full given)" in capsys.readouterr().out.splitlines()[-2]
    assert parse("--device cuda --small").size == "small"
    with pytest.raises(SystemExit):
        parse("--small --full")


@pytest.mark.parametrize("name", sorted(ARGS))
def test_amp_is_refused_on_the_cpu(name, capsys):
    with pytest.raises(SystemExit) as e:
        _tiny(name, "--backend reference --dtype amp")
    assert e.value.code == 2
    assert "--dtype amp is CUDA autocast (float16) and needs a CUDA --device" \
        in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(ARGS))
def test_bf16_casts_the_model(name, tmp_path):
    """bf16 is a bfloat16 model, so the layers run in bfloat16 (not autocast's float16)."""
    path = tmp_path / "out.json"
    results = _tiny(name, f"--backend reference --dtype bf16 --json {path}")
    r = results["reference"]
    assert r["param_dtype"] == "bfloat16"
    want = {"LSTM"} if name == "char_lm" else {"LSTM", "LSTMCell"}
    assert r["layer_dtypes"] == {layer: "bfloat16" for layer in want}
    assert all(math.isfinite(x) for x in r["losses"])
    config = json.loads(path.read_text())["config"]
    assert config["dtype"] == "bf16" and config["dtype_mode"].startswith("the model cast to bf")


def test_fp32_sets_torch_default_tf32_and_restores_the_flags(tmp_path):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_num_threads())
    path = tmp_path / "out.json"
    _tiny("char_lm", f"--backend reference --dtype fp32 --json {path}")
    config = json.loads(path.read_text())["config"]
    assert (config["tf32_matmul"], config["tf32_cudnn"], config["tf32"]) == (False, True, True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_num_threads()) == before


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
