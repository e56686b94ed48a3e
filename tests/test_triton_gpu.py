"""GPU parity of the Triton backend (skipped without CUDA): for each cell type, >= 200 random
cases (layers, directions, batch_first, proj_size, packed, unbatched, odd sizes, hx given or not), each in
fp32 (TF32 off), bf16 and fp16, against float64 torch on the CPU. The bounds are cuDNN's own
errors in the same dtype, 2x its RMS error and 4x its max error, plus the atol
(fused_rnn.testing), for outputs, h_n, c_n and all gradients."""
import pytest
import torch

from fused_rnn import testing

pytestmark = pytest.mark.gpu
CASES_PER_CELL = 200


def _cases(cell):
    # No dropout: on the GPU its masks cannot match the CPU truth's.
    grid = testing.random_cases(CASES_PER_CELL * len(testing.CELLS), seed=9000,
                                with_dropout=False)
    return [c for c in grid if c.cell == cell]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("cell", testing.CELLS)
@pytest.mark.grid
def test_triton_gpu_parity_grid(cell, dtype):
    cases = _cases(cell)
    assert len(cases) >= CASES_PER_CELL
    failures, worst = [], 0.0
    for case in cases:
        res = testing.check(case, "triton", dtype, "cuda")
        worst = max(worst, res.worst_ratio)
        if not res.ok:
            failures.append(f"{case.label()}: {'; '.join(res.failures())}")
    print(f"{cell} {dtype}: {len(cases)} cases, worst error/bound {worst:.3f}")
    assert not failures, f"{len(failures)} of {len(cases)} fail:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_cuda_autocast_matches_torch_dtype(cell):
    """Under CUDA autocast (bf16) nn.LSTM runs cuDNN in float16 and nn.LSTMCell runs in
    bfloat16; the Triton backend runs its kernels in the same dtype, with float32 gradients."""
    got, expected, ours = testing.autocast_run("triton", cell)
    assert expected.dtype == (torch.bfloat16 if cell.endswith("Cell") else torch.float16)
    assert got.dtype == expected.dtype
    assert (got.float() - expected.float()).abs().max().item() < 0.05
    got.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


# (layers, bidirectional, h0 given expanded, graph entries): two layers share their entries
# (the same shapes); one layer in one direction gets autograd's stride-0 gradient of out.sum().
GRAPH_MODELS = [(2, True, False, 4), (1, False, True, 2)]


@pytest.mark.parametrize("model", GRAPH_MODELS, ids=["L2-bidirectional", "L1-expanded-h0"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_per_step_graphs_match_eager_launches(dtype, model, monkeypatch):
    """The per-step path (a projection) through CUDA graphs (ops/triton/graphs.py) gives what
    its eager launches give, bit for bit, forward and backward: on a key's first call (eager),
    its second (captured) and its third (replayed, new values copied in). One graph per
    direction and way of each distinct shape (as the CPU stand-in of test_triton.py counts)."""
    import fused_rnn
    from fused_rnn.ops.triton import graphs
    graphs.GRAPHS.clear()
    layers, bidirectional, given_h0, entries = model

    def run(seed):
        torch.manual_seed(seed)
        m = fused_rnn.LSTM(24, 40, proj_size=17, num_layers=layers, bidirectional=bidirectional,
                           backend="triton", device="cuda", dtype=dtype)
        x = torch.randn(9, 5, 24, device="cuda", dtype=dtype, requires_grad=True)
        hx = None
        if given_h0:
            hx = (torch.randn(1, 1, 17, device="cuda", dtype=dtype).expand(1, 5, 17),
                  torch.randn(1, 5, 40, device="cuda", dtype=dtype))
        out, (h, c) = m(x, hx)
        out.sum().backward() if given_h0 else (out.float().sum() + h.float().sum()
                                               + c.float().sum()).backward()
        return [out, h, c, x.grad] + [p.grad for p in m.parameters()]

    for seed in (0, 1, 2):
        monkeypatch.setenv("FUSED_RNN_TRITON_GRAPHS", "0")
        eager = run(seed)
        monkeypatch.setenv("FUSED_RNN_TRITON_GRAPHS", "1")
        graphed = run(seed)
        assert all(torch.equal(a, b) for a, b in zip(eager, graphed)), seed
    assert len(graphs.GRAPHS) == entries
