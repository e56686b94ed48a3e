"""The fused modules in a user's GPU stack: CUDA-graph capture of a training step,
bitwise-reproducible backward, T = 100,000, tensors over 2^31 elements, and running out of
memory. torch.compile is in test_compile.py, autocast in test_{triton,cuda}_gpu.py."""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fused_rnn
from fused_rnn import testing
from fused_rnn.ops.cuda import launch as cuda_launch
from fused_rnn.ops.triton import launch as triton_launch
from fused_rnn.testing import Case

pytestmark = pytest.mark.gpu
VARIANT = {"triton": triton_launch.variant, "cuda": cuda_launch.variant}
RUNS = [(b, v) for b in ("triton", "cuda") for v in ("step", "persistent")]
IDS = [f"{b}-{v}" for b, v in RUNS]


def _model(cell, backend):
    torch.manual_seed(0)
    rnn = getattr(fused_rnn, cell)(16, 32, num_layers=2, bidirectional=True, backend=backend)
    return nn.ModuleDict({"rnn": rnn, "head": nn.Linear(64, 5)}).cuda()


def _loss(model, x):
    y, _ = model["rnn"](x)
    return nn.functional.cross_entropy(model["head"](y).flatten(0, 1),
                                       torch.arange(y.shape[0] * y.shape[1], device=x.device) % 5)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("backend,variant", RUNS, ids=IDS)
def test_cuda_graph_captures_a_training_step(backend, variant, cell):
    """Forward, backward and an SGD step captured once, replayed on new data: the same
    parameters as the eager steps on that data (no host sync or allocation breaks capture)."""
    with VARIANT[backend](variant):
        eager, graphed = _model(cell, backend), _model(cell, backend)
        data = [torch.randn(12, 4, 16, device="cuda") for _ in range(4)]
        opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
        opt_g = torch.optim.SGD(graphed.parameters(), lr=0.1)
        static_x = data[0].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (compiles the kernels), as torch's docs do
            for _ in range(2):
                opt_g.zero_grad(set_to_none=True)
                _loss(graphed, static_x).backward()
        torch.cuda.current_stream().wait_stream(side)  # the warm-up took no optimizer step
        graph = torch.cuda.CUDAGraph()
        opt_g.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = _loss(graphed, static_x)
            static_loss.backward()
            opt_g.step()
        # Capture ran nothing; replay once per batch and compare with eager steps.
        for x in data:
            static_x.copy_(x)
            graph.replay()
            opt_e.zero_grad(set_to_none=True)
            loss = _loss(eager, x)
            loss.backward()
            opt_e.step()
            torch.testing.assert_close(static_loss, loss, rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(eager.named_parameters(), graphed.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


_DETERMINISM = textwrap.dedent("""
    import sys, torch, fused_rnn
    from fused_rnn import testing
    from fused_rnn.ops.cuda import launch as cuda_launch
from fused_rnn.ops.triton import launch as triton_launch
    torch.use_deterministic_algorithms(sys.argv[1] == "1")
    backend, variant = sys.argv[2], sys.argv[3]
    use = {"triton": triton_launch.variant, "cuda": cuda_launch.variant}[backend]
    case = testing.Case("LSTM", T=64, B=24, I=40, H=96, num_layers=2, bidirectional=True,
                        packed="unsorted", dropout=0.3, seed=5)
    runs = []
    for _ in range(3):
        module = fused_rnn.convert(testing.torch_module(case), backend)
        with use(variant):
            runs.append(testing.run(module, case, torch.bfloat16, "cuda"))
    differ = sorted(k for k in runs[0] if any(not torch.equal(runs[0][k], r[k]) for r in runs))
    print("DIFFER", ",".join(differ))
""")


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "default"])
@pytest.mark.parametrize("backend,variant", RUNS, ids=IDS)
def test_backward_is_bitwise_reproducible(backend, variant, deterministic):
    """Three runs of forward and backward (2 layers, bidirectional, packed, dropout between
    layers, bf16) give the same bits in every output and gradient. Our kernels use no atomics in
    sums; with use_deterministic_algorithms(True) torch's own ops (cuBLAS for the input
    projection and the weight gradients, index_put for packing) are pinned too, which needs
    CUBLAS_WORKSPACE_CONFIG set before CUDA starts, hence a fresh process."""
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    res = subprocess.run([sys.executable, "-c", _DETERMINISM, str(int(deterministic)), backend,
                          variant], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    differ = res.stdout.split("DIFFER")[-1].strip()
    assert differ == "", f"these tensors differ between runs: {differ}"


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("backend,variant", RUNS, ids=IDS)
@pytest.mark.big
def test_hundred_thousand_steps(backend, variant, cell):
    """T = 100,000: outputs, final states and every gradient within the parity bounds (2x
    cuDNN's RMS error and 4x its max error against the float64 truth, same dtype, plus the
    atol)."""
    case = Case(cell, T=100_000, B=3, I=5, H=24, seed=11)
    with VARIANT[backend](variant):
        res = testing.check(case, backend, torch.float32, "cuda")
    assert res.ok, res.failures()


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.big
def test_tensors_over_2_31_elements(backend):
    """The input gates (T, B, 4H) of this layer hold 2^31 + 2^24 elements: the batch rows at
    the end of the batch sit past 2^31 in every per-step tensor that spans the batch. Those rows
    (forward and backward) must match the same rows run as a batch of their own, which the
    parity grid checks; with 32-bit offsets they would read and write elsewhere. Not bitwise:
    the tile shapes and cuBLAS's kernels depend on B, so sums run in another order (a few bf16
    ulps); misplaced rows would be off by O(1)."""
    T, B, I, H = 129, 1 << 16, 4, 64
    assert T * B * 4 * H > 2 ** 31
    torch.manual_seed(3)
    lstm = fused_rnn.LSTM(I, H, backend=backend, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(T, B, I, device="cuda", dtype=torch.bfloat16)
    rows = torch.arange(B - 5, B, device="cuda")
    r = torch.randn(T, len(rows), H, device="cuda", dtype=torch.bfloat16)

    def run(inp):
        inp = inp.clone().requires_grad_()
        out, (h, c) = lstm(inp)
        grads = torch.autograd.grad((out[:, -len(rows):] * r).sum(),
                                    [inp] + list(lstm.parameters()))
        return (out[:, -len(rows):], h[:, -len(rows):], c[:, -len(rows):], grads[0][:, -5:],
                tuple(grads[1:]))

    big = run(x)
    small = run(x[:, rows])
    for a, b in zip(big[:4] + big[4], small[:4] + small[4]):  # the weight grads: the same
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)  # sums, plus exact zeros


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.big
def test_out_of_memory_raises_torch_error(backend):
    """T=1024 B=1024 H=4096 bf16: the input gates (34 GB) fit on an 80 GB GPU, the layer's own
    buffers after them (float32 saved gates, 69 GB) do not. torch.OutOfMemoryError, then the GPU
    still works."""
    lstm = fused_rnn.LSTM(8, 4096, backend=backend, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1024, 1024, 8, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(torch.OutOfMemoryError):
        lstm(x)
    torch.cuda.empty_cache()
    out, _ = lstm(x[:3, :2])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["triton", "cuda", "cudnn"])
def test_autocast_state_and_stacked_layers(backend):
    """Truncated BPTT under autocast: the state comes back in float16 and goes in again beside
    a float32 input, and one layer's float16 output feeds a float32 layer. nn.LSTM accepts
    both (cuDNN's autocast casts everything), so the fused modules must too."""
    torch.manual_seed(0)
    ref = [nn.LSTM(8, 16).cuda(), nn.GRU(16, 16).cuda()]
    ours = [fused_rnn.convert(copy.deepcopy(m), backend) for m in ref]
    chunks = [torch.randn(5, 3, 8, device="cuda") for _ in range(3)]
    results = []
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for first, second in (ref, ours):
            state, outs = None, []
            for x in chunks:
                y, state = first(x, state)
                z, _ = second(y)
                outs.append(z)
            results.append(outs)
    for expected, got in zip(*results):
        assert got.dtype == expected.dtype
        assert (got.float() - expected.float()).abs().max().item() < 0.05
