"""GPU parity of the CUDA C++ backend (skipped without CUDA or a buildable extension): for
each cell type, >= 200 random cases (layers, directions, batch_first, proj_size, packed,
unbatched, odd sizes, hx given or not) in fp32 (TF32 off), bf16 and fp16 pinned to the
persistent variant (which runs per step where the shape does not fit), and 50 per cell pinned to
the per-step variant, against float64 torch on the CPU; the bounds are cuDNN's own errors in the
same dtype, 2x its RMS error and 4x its max error, plus the atol (fused_rnn.testing), for
outputs, h_n, c_n and all gradients.

test_cuda_sanitizer_grid is the small grid that scripts/gpu_check.sh runs under
compute-sanitizer (memcheck, racecheck): every cell, both variants, packed and padded, with
and without the regularisation masks."""
import pytest
import torch

from fused_rnn import Regularization, testing
from fused_rnn.ops.cuda import extension
from fused_rnn.testing import Case

pytestmark = pytest.mark.gpu
CASES_PER_CELL = {"persistent": 200, "step": 50}


@pytest.fixture(autouse=True)
def _buildable():
    reason = extension.why_not_buildable()
    if reason is not None:
        pytest.skip(f"CUDA extension: {reason}")


def _cases(cell, n):
    # No dropout: on the GPU its masks cannot match the CPU truth's.
    grid = testing.random_cases(n * len(testing.CELLS), seed=9100, with_dropout=False)
    return [c for c in grid if c.cell == cell]


@pytest.mark.parametrize("variant", ["persistent", "step"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("cell", testing.CELLS)
@pytest.mark.grid
def test_cuda_gpu_parity_grid(cell, dtype, variant):
    from fused_rnn.ops.cuda import launch as cuda_launch
    cases = _cases(cell, CASES_PER_CELL[variant])
    assert len(cases) >= CASES_PER_CELL[variant]
    failures, worst, ran = [], 0.0, set()
    for case in cases:
        with cuda_launch.variant(variant):
            res = testing.check(case, "cuda", dtype, "cuda")
        ran.add(cuda_launch.last_used["fwd"])
        worst = max(worst, res.worst_ratio)
        if not res.ok:
            failures.append(f"{case.label()}: {'; '.join(res.failures())}")
    print(f"{cell} {dtype} {variant}: {len(cases)} cases, worst error/bound {worst:.3f}, "
          f"variants run {sorted(ran)}")
    assert not failures, f"{len(failures)} of {len(cases)} fail:\n" + "\n".join(failures[:20])
    assert variant in ran


# The cluster forward (csrc/rnn_fwd_cluster.cu) on the tensor cores, every plan compiled for the
# GPU: batch tiles of 16 (B=37: two full and a partial one; B=1), both directions, unsorted
# lengths, two layers, no bias. The backward runs its default cluster plan.
CLUSTER_PLANS = {64: ("4x4", "4x2", "2x4", "4x4a"), 128: ("8x4", "8x2", "4x4", "8x4a"),
                 256: ("16x4", "8x4", "16x4a", "8x4a")}
CLUSTER_RUNS = [(cell, H, plan) for cell in testing.CELLS for H, plans in CLUSTER_PLANS.items()
                for plan in plans]


def _cluster_cases(cell, H):
    return [Case(cell, T=9, B=37, I=24, H=H, bidirectional=True, packed="unsorted", seed=H + 1),
            Case(cell, T=33, B=1, I=H, H=H, num_layers=2, seed=H + 2),
            Case(cell, T=6, B=16, I=8, H=H, bias=False, packed="sorted", seed=H + 3)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.cluster
@pytest.mark.parametrize("cell,H,plan", CLUSTER_RUNS,
                         ids=[f"{c}-H{h}-{p}" for c, h, p in CLUSTER_RUNS])
def test_cuda_cluster_parity(cell, H, plan, dtype):
    from fused_rnn.ops.cuda import launch as cuda_launch
    for case in _cluster_cases(cell, H):
        cuda_launch.last_used.update(fwd=None, plan=None)
        with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan):
            res = testing.check(case, "cuda", dtype, "cuda")
        assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["plan"]) == ("cluster", plan)
        assert res.ok, f"{case.label()}: {res.failures()}"


# The cluster backward (csrc/rnn_bwd_cluster.cu), every plan compiled for the GPU ("<CS>x<NW>",
# "a": the asynchronous exchange), on the same cases.
CLUSTER_BWD_PLANS = {64: ("2x4a", "2x4", "4x4a", "4x4"), 128: ("2x8a", "2x8", "8x4a", "8x4", "4x8"),
                     256: ("16x4a", "8x8a", "16x4", "8x8", "16x8")}
CLUSTER_BWD_RUNS = [(cell, H, plan) for cell in testing.CELLS
                    for H, plans in CLUSTER_BWD_PLANS.items() for plan in plans]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.cluster
@pytest.mark.parametrize("cell,H,plan", CLUSTER_BWD_RUNS,
                         ids=[f"{c}-H{h}-{p}" for c, h, p in CLUSTER_BWD_RUNS])
def test_cuda_cluster_backward_parity(cell, H, plan, dtype):
    from fused_rnn.ops.cuda import launch as cuda_launch
    for case in _cluster_cases(cell, H):
        cuda_launch.last_used.update(bwd=None, bwd_plan=None)
        with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan(plan):
            res = testing.check(case, "cuda", dtype, "cuda")
        assert (cuda_launch.last_used["bwd"], cuda_launch.last_used["bwd_plan"]) == \
            ("cluster", plan)
        assert res.ok, f"{case.label()}: {res.failures()}"


def _cluster_grid(cell: str, n: int, seed: int):
    """n random cases the cluster kernels take (H = 64, 128, 256; no projection): lengths,
    layers, directions, batch sizes around the 16-row tile, given or absent states."""
    import random
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        packed = rng.choice(["", "", "sorted", "unsorted"])
        cases.append(Case(cell, T=rng.choice([1, 2, 7, 16, 40]), B=rng.choice([1, 5, 16, 17, 40]),
                          I=rng.choice([8, 24, 64]), H=rng.choice([64, 128, 256]),
                          num_layers=rng.randint(1, 2), bidirectional=rng.random() < 0.5,
                          batch_first=rng.random() < 0.3, bias=rng.random() < 0.8,
                          packed=packed, with_hx=rng.random() < 0.7,
                          seed=rng.randrange(2 ** 31)))
    return cases


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.cluster
@pytest.mark.parametrize("cell", testing.CELLS)
def test_cuda_cluster_training_grid(cell, dtype):
    """100 random cases per cell and dtype (200 per cell over fp16 and bf16) on the default
    cluster plans both ways, under the parity rule: every output and gradient."""
    from fused_rnn.ops.cuda import launch as cuda_launch
    cases = _cluster_grid(cell, 100, seed=4242 + testing.CELLS.index(cell))
    failures, worst = [], 0.0
    for case in cases:
        cuda_launch.last_used.update(fwd=None, bwd=None)
        with cuda_launch.variant("cluster"):
            res = testing.check(case, "cuda", dtype, "cuda")
        assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == \
            ("cluster", "cluster"), (case.label(), cuda_launch.last_used)
        worst = max(worst, res.worst_ratio)
        if not res.ok:
            failures.append(f"{case.label()}: {'; '.join(res.failures())}")
    print(f"{cell} {dtype} cluster: {len(cases)} cases, worst error/bound {worst:.3f}")
    assert not failures, f"{len(failures)} of {len(cases)} fail:\n" + "\n".join(failures[:20])


@pytest.mark.cluster
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_cuda_cluster_inference_matches_training_forward(cell):
    """Under no_grad the cluster forward skips the stores only the backward reads; output, h_n
    and c_n are the same bits as in a forward that keeps them (packed, bidirectional, bf16)."""
    import copy

    import fused_rnn
    from fused_rnn.ops.cuda import launch as cuda_launch
    torch.manual_seed(5)
    ref = getattr(torch.nn, cell)(24, 128, bidirectional=True, device="cuda",
                                  dtype=torch.bfloat16)
    module = fused_rnn.convert(copy.deepcopy(ref), "cuda")
    x = torch.randn(40, 37, 24, device="cuda", dtype=torch.bfloat16)
    lengths = torch.randint(1, 41, (37,))
    lengths[3] = 40
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    runs = []
    for grad in (True, False):
        with torch.set_grad_enabled(grad), cuda_launch.variant("cluster"):
            out, state = module(packed)
        assert cuda_launch.last_used["fwd"] == "cluster"
        runs.append([out.data] + list(state if cell == "LSTM" else (state,)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


SANITIZER = [Case("LSTM", T=5, B=37, I=9, H=70, packed="unsorted", bidirectional=True, seed=1),
             Case("GRU", T=4, B=5, I=16, H=33, num_layers=2, seed=2),
             Case("RNN_TANH", T=3, B=40, I=5, H=129, packed="sorted", seed=3),
             Case("RNN_RELU", T=3, B=3, I=3, H=8, seed=4),
             Case("LSTM", T=4, B=9, I=6, H=40, proj_size=17, packed="unsorted", seed=5),
             # The regularisation masks (ops/regularize.py) in every kernel that reads them.
             Case("LSTM", T=5, B=37, I=9, H=70, packed="unsorted",
                  reg=Regularization(0.2, 0.3, 0.25, 0.2, 0.3, 0.35), seed=6),
             Case("GRU", T=4, B=5, I=16, H=33, num_layers=2, bidirectional=True,
                  reg=Regularization(0.2, 0.3, 0.25, 0.0, 0.0, 0.3), seed=7),
             Case("LSTM", T=4, B=9, I=6, H=40, proj_size=17,
                  reg=Regularization(variational_dropout=0.3, zoneout_hidden=0.4), seed=8),
             # Shapes the cluster forward takes (bf16; fp32 falls back to persistent).
             Case("LSTM", T=5, B=37, I=9, H=128, packed="unsorted", bidirectional=True, seed=9),
             Case("GRU", T=4, B=5, I=16, H=64, num_layers=2, seed=10),
             # and the cluster backward's 16-block asynchronous default
             Case("RNN_TANH", T=4, B=20, I=8, H=256, packed="unsorted", seed=11)]


@pytest.mark.parametrize("variant", ["persistent", "step", "cluster"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", SANITIZER, ids=[c.label() for c in SANITIZER])
@pytest.mark.sanitizer
def test_cuda_sanitizer_grid(case, dtype, variant):
    from fused_rnn.ops.cuda import launch as cuda_launch
    with cuda_launch.variant(variant):
        res = testing.check(case, "cuda", dtype, "cuda")
    assert res.ok, res.failures()


# The cluster kernels alone under compute-sanitizer (scripts/gpu_check.sh, sanitize-cluster):
# the default plans both ways (forward barrier, backward asynchronous), and the other exchange
# of each (forward asynchronous, backward barrier); a partial batch tile, packed, both
# directions. (case, forward plan, backward plan); None: H's default.
def _sanitizer_case(cell, H, seed):
    return Case(cell, T=3, B=17, I=8, H=H, packed="unsorted", bidirectional=True, seed=seed)


CLUSTER_SANITIZER = [(_sanitizer_case("LSTM", 64, 1), None, None),
                     (_sanitizer_case("LSTM", 128, 2), None, None),
                     (_sanitizer_case("LSTM", 256, 3), None, None),
                     (_sanitizer_case("LSTM", 256, 4), "16x4a", "16x4"),
                     (_sanitizer_case("GRU", 64, 5), "4x4a", "2x4")]


@pytest.mark.sanitizer
@pytest.mark.cluster
@pytest.mark.parametrize("case,plan,bwd_plan", CLUSTER_SANITIZER,
                         ids=[f"{c.label()}-{p}-{b}" for c, p, b in CLUSTER_SANITIZER])
def test_cuda_cluster_sanitizer_grid(case, plan, bwd_plan):
    from fused_rnn.ops.cuda import launch as cuda_launch
    with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan), \
            cuda_launch.cluster_bwd_plan(bwd_plan):
        res = testing.check(case, "cuda", torch.bfloat16, "cuda")
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == ("cluster", "cluster")
    if bwd_plan is not None:
        assert cuda_launch.last_used["bwd_plan"] == bwd_plan
    assert res.ok, res.failures()


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_cuda_autocast_matches_torch_dtype(cell):
    """Under CUDA autocast (bf16) nn.LSTM runs cuDNN in float16 and nn.LSTMCell runs in
    bfloat16; the CUDA backend runs its kernels in the same dtype, with float32 gradients."""
    got, expected, ours = testing.autocast_run("cuda", cell)
    assert expected.dtype == (torch.bfloat16 if cell.endswith("Cell") else torch.float16)
    assert got.dtype == expected.dtype
    assert (got.float() - expected.float()).abs().max().item() < 0.05
    got.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


def test_cuda_large_hidden_runs_per_step_and_matches():
    """H=2048 fp32: W_hh (32 MB) cannot stay on chip over 132 SMs, so "persistent" falls back
    to the per-step kernels; the result still matches cuDNN within the parity bound."""
    from fused_rnn.ops.cuda import launch as cuda_launch
    case = Case("LSTM", T=3, B=4, I=32, H=2048, seed=7)
    res = testing.check(case, "cuda", torch.float32, "cuda")
    assert res.ok, res.failures()
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == ("step", "step")
