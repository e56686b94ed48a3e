"""The suite's providers under pytest-benchmark, on a small grid:

    pytest benchmarks/ --benchmark-columns=median,iqr --benchmark-sort=name

On CUDA: two latency-bound shapes in fp32 and bf16; on the CPU: the quick CPU shape in fp32.
Providers that cannot run here are skipped with the reason. `fused-rnn bench` is the full suite
(CUDA-event timing, stored results, plots); this file is for people who use pytest-benchmark.
"""
import pytest
import torch

from fused_rnn.bench import suite as S

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = S.GPU_QUICK[:2] if DEVICE.type == "cuda" else S.CPU_QUICK
DTYPES = ["fp32", "bf16"] if DEVICE.type == "cuda" else ["fp32"]


@pytest.mark.parametrize("mode", S.MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("provider", S.PROVIDERS)
def test_provider(benchmark, provider, cell, dtype, shape, mode):
    reason = S.why_not(provider, DEVICE, dtype)
    if reason is not None:
        pytest.skip(f"{provider}: {reason}")
    with S.tf32(S.DTYPES[dtype][1]):
        call = S.calls(provider, cell, shape, dtype, DEVICE)[0][mode]
        if DEVICE.type == "cuda":
            run = call

            def call():  # pytest-benchmark reads a host clock: wait for the GPU
                run()
                torch.cuda.synchronize()
        call()  # warm-up
        benchmark(call)
