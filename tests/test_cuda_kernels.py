"""The CUDA C++ kernels (csrc/) through backend="cuda", forward and backward, both variants,
against float64 torch and the reference backend. On a machine without a GPU they run emulated
(FUSED_RNN_CUDA_EMULATE=1: the same kernel sources built as host C++, one std::thread per CUDA
thread, an emulated device of 3 SMs and 48 KiB of shared memory, so tiny shapes already split
over several blocks and batch chunks); on a GPU, for real. The GPU-only grid (fp16/bf16, >= 200
cases per cell) is tests/test_cuda_gpu.py."""
import copy

import pytest
import torch
import torch.nn as nn

import fused_rnn
from fused_rnn import testing
from fused_rnn.ops.cuda import extension
from fused_rnn.testing import Case

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _emulate_without_gpu(monkeypatch):
    if DEVICE == "cpu":
        monkeypatch.setenv("FUSED_RNN_CUDA_EMULATE", "1")
    elif extension.why_not_buildable() is not None:
        pytest.skip(f"CUDA extension: {extension.why_not_buildable()}")


def _cuda_launch():
    from fused_rnn.ops.cuda import launch as cuda_launch
    return cuda_launch


GRID = testing.random_cases(40, seed=505, with_dropout=DEVICE == "cpu")
# Several blocks and batch chunks even on the emulated device (3 SMs -> H/3 units per block,
# batch chunks of 3 rows); H=40 fp64 LSTM persistent needs 4 x 14 rows x 41 x 8 B of shared
# memory: over the emulated 48 KiB, so it runs per step even when asked for persistent.
TILED = [Case("LSTM", T=3, B=7, I=9, H=33, bidirectional=True, packed="unsorted", seed=1),
         Case("GRU", T=4, B=5, I=40, H=34, num_layers=2, seed=2),
         Case("RNN_TANH", T=3, B=8, I=5, H=48, packed="sorted", seed=3),
         Case("RNN_RELU", T=2, B=5, I=3, H=65, bidirectional=True, seed=4),
         Case("LSTM", T=4, B=7, I=6, H=40, proj_size=33, num_layers=2, bidirectional=True,
              packed="unsorted", seed=5),
         Case("LSTM", T=5, B=4, I=6, H=20, num_layers=2, seed=6)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", GRID + TILED, ids=[c.label() for c in GRID + TILED])
def test_cuda_matches_torch(case, dtype):
    res = testing.check(case, "cuda", dtype, DEVICE)
    assert res.ok, res.failures()


@pytest.mark.parametrize("variant", ["persistent", "step"])
@pytest.mark.parametrize("case", TILED, ids=[c.label() for c in TILED])
def test_cuda_variants_match_reference_backend(case, variant):
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None)
    with cuda_launch.variant(variant):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    # The persistent kernels take everything here but projections and, emulated, the
    # H=40 LSTM (over 48 KiB of shared memory).
    fits = not case.proj_size and (DEVICE == "cuda" or case.H * 4 * 8 * 4 // 3 < 44 * 1024)
    expected = "persistent" if variant == "persistent" and fits else "step"
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == (expected, expected), \
        cuda_launch.last_used


# The cluster forward (csrc/rnn_fwd_cluster.cu) for each plan it has for H, against the reference
# backend. Emulated: fp32/fp64 through the same fragment indexing as the GPU's fp16/bf16 tensor
# cores (csrc/mma.cuh); on the GPU these H have no fp32 plan, so tests/test_cuda_gpu.py
# checks the cluster kernels there (fp16, bf16). Batch tiles of 16 (B=20: a full one and a
# partial one), both directions, unsorted lengths, no bias, two layers.
CLUSTER_PLANS = {32: ("2x1", "2x2", "2x1a", "2x2a"), 64: ("4x2", "4x4", "4x4a")}
CLUSTER = [Case("LSTM", T=5, B=20, I=7, H=32, bidirectional=True, packed="unsorted", seed=11),
           Case("GRU", T=4, B=3, I=5, H=32, num_layers=2, seed=12),
           Case("RNN_TANH", T=4, B=17, I=6, H=32, packed="sorted", seed=13),
           Case("RNN_RELU", T=3, B=5, I=4, H=32, bidirectional=True, seed=14),
           Case("LSTM", T=4, B=9, I=5, H=64, bias=False, seed=15),
           Case("GRU", T=3, B=18, I=3, H=64, bidirectional=True, packed="unsorted", seed=16)]
CLUSTER_RUNS = [(c, plan) for c in CLUSTER for plan in CLUSTER_PLANS[c.H]]


@pytest.mark.skipif(DEVICE == "cuda", reason="GPU: tests/test_cuda_gpu.py (fp16/bf16)")
@pytest.mark.parametrize("case,plan", CLUSTER_RUNS,
                         ids=[f"{c.label()}-{p}" for c, p in CLUSTER_RUNS])
def test_cuda_cluster_forward_matches_reference_backend(case, plan):
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert cuda_launch.last_used == {"fwd": "cluster", "bwd": "cluster", "plan": plan,
                                     "bwd_plan": CLUSTER_BWD_PLANS[case.H][0]}


# The cluster backward (csrc/rnn_bwd_cluster.cu) for each backward plan it has for H (CS blocks
# per cluster x NW warps; "1x2": one block, no cluster exchange), on the same cases, against the
# reference backend: outputs and every gradient (dx, dh0, dc0, the weights') in fp64. T = 1 (no
# recurrent term) and every batch size below and above a tile of 16 are among them.
CLUSTER_BWD_PLANS = {32: ("2x2a", "2x2", "2x1", "1x2"), 64: ("4x2a", "4x4", "4x2")}
CLUSTER_BWD = CLUSTER + [Case("LSTM", T=1, B=5, I=3, H=32, seed=17),
                         Case("GRU", T=1, B=16, I=3, H=64, bidirectional=True, seed=18),
                         Case("RNN_RELU", T=6, B=33, I=4, H=64, packed="unsorted", seed=19),
                         Case("LSTM", T=7, B=2, I=4, H=32, with_hx=False, seed=20)]
CLUSTER_BWD_RUNS = [(c, plan) for c in CLUSTER_BWD for plan in CLUSTER_BWD_PLANS[c.H]]


@pytest.mark.skipif(DEVICE == "cuda", reason="GPU: tests/test_cuda_gpu.py (fp16/bf16)")
@pytest.mark.parametrize("case,plan", CLUSTER_BWD_RUNS,
                         ids=[f"{c.label()}-{p}" for c, p in CLUSTER_BWD_RUNS])
def test_cuda_cluster_backward_matches_reference_backend(case, plan):
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan(plan):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert (cuda_launch.last_used["bwd"], cuda_launch.last_used["bwd_plan"]) == ("cluster", plan)


# fp32 on the cluster kernels' tensor cores (csrc/mma.cuh), forward and backward, each emulated
# plan once (cells, packing and batch tiles cycling): with torch's TF32 flag for RNNs off, the
# IEEE-accurate Tf32x3 product under the project's fp32 rule against torch's own fp32; with it
# on, the Tf32 product under the same rule against the reference backend computing its
# recurrent product on tf32 operands (testing.check_tf32: on the CPU torch has no TF32 twin).
# The emulation rounds operands to tf32 bit for bit and runs each m16n8k8 lane by lane.
F32_RUNS = [(CLUSTER[0], "2x1", "2x2a"), (CLUSTER[1], "2x2", "2x2"), (CLUSTER[2], "2x1a", "2x1"),
            (CLUSTER[3], "2x2a", "1x2"), (CLUSTER[4], "4x2", "4x2a"), (CLUSTER[5], "4x4", "4x4"),
            (CLUSTER_BWD[8], "4x4a", "4x2")]


@pytest.mark.skipif(DEVICE == "cuda", reason="GPU: tests/test_cuda_gpu.py (fp32 there)")
@pytest.mark.parametrize("tf32", [False, True], ids=["ieee", "tf32"])
@pytest.mark.parametrize("case,plan,bwd_plan", F32_RUNS,
                         ids=[f"{c.label()}-{f}-{b}" for c, f, b in F32_RUNS])
def test_cuda_cluster_fp32_products_meet_the_parity_rule(case, plan, bwd_plan, tf32):
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with torch.backends.cudnn.flags(allow_tf32=tf32), cuda_launch.variant("cluster"), \
            cuda_launch.cluster_plan(plan), cuda_launch.cluster_bwd_plan(bwd_plan):
        result = (testing.check_tf32(case, "cuda", DEVICE) if tf32 else
                  testing.check(case, "cuda", torch.float32, DEVICE))
    assert result.ok, result.failures()
    assert cuda_launch.last_used == {"fwd": "cluster", "bwd": "cluster", "plan": plan,
                                     "bwd_plan": bwd_plan}


@pytest.mark.skipif(DEVICE == "cuda", reason="emulated plans")
def test_cuda_cluster_fp32_follows_torchs_tf32_flag_per_call():
    """One module, the flag switched between calls: each call takes the product the flag says.
    Tf32 rounds W_hh and h to 11 significant bits, so its outputs move off the IEEE run's by far
    more than the IEEE run's own error; switching back gives the IEEE run's bits again."""
    cuda_launch = _cuda_launch()
    case = CLUSTER[0]
    module = fused_rnn.convert(testing.torch_module(case), "cuda")
    truth = testing.run(testing.torch_module(case), case, torch.float64)
    runs = {}
    for tf32 in (False, True, False):
        with torch.backends.cudnn.flags(allow_tf32=tf32), cuda_launch.variant("cluster"):
            runs.setdefault(tf32, []).append(testing.run(module, case, torch.float32, DEVICE))
        assert cuda_launch.last_used["fwd"] == "cluster"
    ieee, again, tf = runs[False][0], runs[False][1], runs[True][0]
    for name in ieee:
        assert torch.equal(ieee[name], again[name]), name
    err = (ieee["output"].double() - truth["output"]).abs().max().item()
    moved = (tf["output"].double() - ieee["output"].double()).abs().max().item()
    assert err < 1e-5 and moved > 30 * err, (err, moved)


@pytest.mark.skipif(DEVICE == "cuda", reason="emulated plans")
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_cuda_cluster_backward_per_direction_entry(cell):
    """The per-direction entry (the custom ops of ops/cuda/launch.py, binding.cpp rnn_bwd) runs
    the cluster backward too: one layer function call per direction, packed lengths, given
    dh_n/dc_n, against autograd through ops/naive.py in fp64."""
    from fused_rnn.ops import recurrence
    from fused_rnn.ops.cells import GATES
    from fused_rnn.ops.naive import layer_naive
    cuda_launch = _cuda_launch()
    gen = torch.Generator().manual_seed(77)
    T, B, H, G = 5, 7, 32, GATES[cell]

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(DEVICE)
    inputs = [rand(T, B, G * H), rand(B, H), rand(B, H) if cell == "LSTM" else None,
              rand(G * H, H, scale=0.3), rand(G * H), None]
    lengths = torch.tensor([5, 2, 4, 1, 5, 3, 5])
    mask = (torch.arange(T)[:, None] < lengths[None]).unsqueeze(-1).to(DEVICE)
    for reverse in (False, True):
        cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
        with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan("2x1"):
            ours = _masked_layer_run(cuda_launch.layer_cuda, cell, inputs, mask, reverse,
                                     recurrence.NO_MASKS, torch.float64, 5)
        assert cuda_launch.last_used == {"fwd": "cluster", "bwd": "cluster", "plan": "2x1",
                                         "bwd_plan": "2x1"}, cuda_launch.last_used
        truth = _masked_layer_run(layer_naive, cell, inputs, mask, reverse, recurrence.NO_MASKS,
                                  torch.float64, 5)
        errs = [(a - b).abs().max().item() for a, b in zip(ours, truth)]
        assert max(errs) <= 1e-10, (reverse, errs)


@pytest.mark.skipif(DEVICE == "cuda", reason="emulated plans")
@pytest.mark.parametrize("plan", ["2x2", "2x2a"])
def test_cuda_cluster_backward_is_bitwise_reproducible(plan):
    """The reduce-scatter sums each unit's partials in rank order: two runs give the same bits.
    A regression guard: a sum in arrival order (atomics, or a slot per arrival) would vary with
    the order in which the emulated blocks' threads run, which differs from run to run."""
    cuda_launch = _cuda_launch()
    case = CLUSTER[0]
    runs = []
    for _ in range(2):
        with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan(plan):
            runs.append(testing.run(fused_rnn.convert(testing.torch_module(case), "cuda"), case,
                                    torch.float32, DEVICE))
        assert cuda_launch.last_used["bwd_plan"] == plan
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


@pytest.mark.skipif(DEVICE == "cuda", reason="GPU: tests/test_cuda_gpu.py (fp16/bf16)")
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_cuda_cluster_inference_writes_outputs_and_final_state(cell):
    """Without a gradient to come (torch.no_grad) the cluster forward writes out every step but
    the states only at the last one (FwdParams.store_saved): output, h_n and c_n still equal the
    reference backend's, packed (the final state of a short sequence is kept, not recomputed)
    and in both directions."""
    cuda_launch = _cuda_launch()
    torch.manual_seed(3)
    ref = nn.LSTM(6, 32, bidirectional=True) if cell == "LSTM" else nn.GRU(6, 32,
                                                                          bidirectional=True)
    ref = ref.double()
    x = torch.randn(5, 20, 6, dtype=torch.float64)
    lengths = torch.randint(1, 6, (20,))
    lengths[0] = 5
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    runs = {}
    for backend in ("reference", "cuda"):
        module = fused_rnn.convert(copy.deepcopy(ref), backend)
        with torch.no_grad(), cuda_launch.variant("cluster"):
            out, state = module(packed)
        runs[backend] = [nn.utils.rnn.pad_packed_sequence(out)[0]] + list(
            state if cell == "LSTM" else (state,))
    assert cuda_launch.last_used["fwd"] == "cluster"
    for got, want in zip(runs["cuda"], runs["reference"]):
        assert (got - want).abs().max().item() <= 1e-10


@pytest.mark.skipif(DEVICE == "cuda", reason="emulated plans")
@pytest.mark.parametrize("why,case,expected", [
    ("H without a plan", Case("LSTM", T=3, B=4, I=5, H=48, seed=21), ("persistent", None)),
    ("projection", Case("LSTM", T=3, B=4, I=5, H=32, proj_size=16, seed=22), ("step", None)),
    ("masks", Case("GRU", T=3, B=4, I=5, H=32, reg=fused_rnn.Regularization(
        variational_dropout=0.3), seed=23), ("persistent", None)),
    ("plan missing for H: default", Case("GRU", T=3, B=4, I=5, H=32, seed=24), ("cluster", "2x1")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_cuda_cluster_falls_back(why, case, expected):
    """What the cluster kernels cannot take runs as persistent (or per step), with the same
    results, the backward as the forward; an asked plan that H lacks runs H's default plan."""
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_plan("4x2"), \
            cuda_launch.cluster_bwd_plan("4x4"):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["plan"]) == expected
    bwd = ("cluster", "2x2a") if expected[0] == "cluster" else (expected[0], None)
    assert (cuda_launch.last_used["bwd"], cuda_launch.last_used["bwd_plan"]) == bwd


# The multi-cluster kernels (csrc/rnn_fwd_multicluster.cu, rnn_bwd_multicluster.cu: several
# clusters per batch tile, h_t or dgates exchanged through L2 flag words polled across clusters),
# each emulated plan ("<NC>x<CS>x<KS>"; CS = 1: every block polls for itself, no st.async;
# "b2": two batch tiles per block)
# against the reference backend in fp64: every cell, packed and reverse, h0/c0 given or not,
# batches below, at and above a tile of 16, T = 1, each plan with every element type's word.
MULTI_PLANS = {96: ("3x2x2",), 64: ("2x2x2", "4x1x2", "2x1x1", "2x2x2b2")}
MULTI_BWD_PLANS = {64: ("2x2x2", "2x1x1", "2x2x4"), 32: ("2x1x2",)}
MULTI = [Case("LSTM", T=5, B=20, I=7, H=96, bidirectional=True, packed="unsorted", seed=31),
         Case("GRU", T=4, B=3, I=5, H=96, num_layers=2, seed=32),
         Case("RNN_TANH", T=3, B=17, I=6, H=96, packed="sorted", seed=33),
         Case("RNN_RELU", T=3, B=5, I=4, H=96, bidirectional=True, with_hx=False, seed=34),
         Case("LSTM", T=4, B=9, I=5, H=64, bias=False, seed=35),
         Case("GRU", T=3, B=18, I=3, H=64, bidirectional=True, packed="unsorted", seed=36),
         Case("RNN_TANH", T=1, B=7, I=3, H=64, seed=37),
         Case("LSTM", T=3, B=16, I=4, H=32, bidirectional=True, seed=38),
         Case("GRU", T=4, B=33, I=4, H=32, packed="unsorted", with_hx=False, seed=39)]
MULTI_RUNS = [(c, p) for c in MULTI for p in MULTI_PLANS.get(c.H, ())]
MULTI_BWD_RUNS = [(c, p) for c in MULTI for p in MULTI_BWD_PLANS.get(c.H, ())]


@pytest.mark.skipif(DEVICE == "cuda", reason="GPU: tests/test_cuda_gpu.py (fp16/bf16)")
@pytest.mark.parametrize("case,plan", MULTI_RUNS, ids=[f"{c.label()}-{p}" for c, p in MULTI_RUNS])
def test_cuda_multicluster_forward_matches_reference_backend(case, plan):
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["plan"]) == ("cluster", plan)


@pytest.mark.skipif(DEVICE == "cuda", reason="GPU: tests/test_cuda_gpu.py (fp16/bf16)")
@pytest.mark.parametrize("case,plan", MULTI_BWD_RUNS,
                         ids=[f"{c.label()}-{p}" for c, p in MULTI_BWD_RUNS])
def test_cuda_multicluster_backward_matches_reference_backend(case, plan):
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan(plan):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert (cuda_launch.last_used["bwd"], cuda_launch.last_used["bwd_plan"]) == ("cluster", plan)


@pytest.mark.skipif(DEVICE == "cuda", reason="emulated plans")
def test_cuda_multicluster_is_bitwise_reproducible_and_the_default_of_its_h():
    """Every sum of the multi-cluster kernels is made in one thread in a fixed order, whatever
    order the polled words arrive in: two runs give the same bits. H = 96 has no single-cluster
    plan: the multi-cluster forward is its default."""
    cuda_launch = _cuda_launch()
    case = Case("LSTM", T=3, B=5, I=4, H=96, seed=40)
    runs = []
    for _ in range(2):
        cuda_launch.last_used.update(plan=None)
        with cuda_launch.variant("cluster"):
            runs.append(testing.run(fused_rnn.convert(testing.torch_module(case), "cuda"), case,
                                    torch.float64, DEVICE))
        assert cuda_launch.last_used["plan"] == MULTI_PLANS[96][0]
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


@pytest.mark.skipif(DEVICE == "cuda", reason="emulated plans")
@pytest.mark.parametrize("why,case,expected", [
    # 3 clusters of 2 per tile, 13 tiles: 39 clusters, over the 32 of two blocks that the
    # emulated device holds at once (platform.cuh, kClusterSMs): not all could poll each other.
    ("tiles beyond the device", Case("LSTM", T=2, B=200, I=3, H=96, seed=41), "step"),
    ("masks", Case("GRU", T=3, B=4, I=5, H=96, reg=fused_rnn.Regularization(
        variational_dropout=0.3), seed=42), "step"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_cuda_multicluster_falls_back(why, case, expected):
    """What the multi-cluster forward cannot take runs as the other variants would: here per
    step (H = 96 in fp64 is over the emulated 48 KiB for the persistent kernel)."""
    cuda_launch = _cuda_launch()
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with cuda_launch.variant("cluster"):
        diffs = testing.compare_backends(case, "cuda", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["plan"]) == (expected, None)


def test_cluster_plan_names_are_checked():
    for bad in ("16x3", "16x4b", "x4", "16"):
        with pytest.raises(ValueError, match=rf"cluster plan: expected '<CS>x<KS>'.*got '{bad}'"):
            with _cuda_launch().cluster_plan(bad):
                pass
    for bad in ("16x3", "17x4", "16x16", "8x8b"):
        with pytest.raises(ValueError,
                           match=rf"cluster backward plan: expected '<CS>x<NW>'.*got '{bad}'"):
            with _cuda_launch().cluster_bwd_plan(bad):
                pass
    for bad in ("1x8x8", "67x8x8", "6x17x8", "6x8x3", "6x8x8a", "6xx8", "6x8x8b1", "6x8x8b10"):
        with pytest.raises(ValueError, match="plan: expected '<"):
            with _cuda_launch().cluster_plan(bad):
                pass
    from fused_rnn.ops.cuda import plans
    for name in ("16x4", "2x1a", "8x2", "6x8x8", "66x1x16", "8x8x8b4"):
        assert plans.plan_name(plans.plan_code(name)) == name
    assert plans.plan_code("6x8x8", backward=True) == plans.plan_code("6x8x8") == 610808


# Regularisation masks of a step (ops/regularize.py, StepMasks): each kind alone, all at once,
# and eval mode (zoneout by its constant weights, no masks), for the layers they apply to.
MASK_KINDS = {"LSTM": ("h", "g", "c", "zc", "zh", "all", "eval"),
              "GRU": ("h", "g", "zh", "all", "eval"),
              "RNN_TANH": ("h", "zh", "all", "eval"), "RNN_RELU": ("h", "zh", "all", "eval")}
MASKED = [(cell, proj, kind) for cell, kinds in MASK_KINDS.items()
          for proj in ((False, True) if cell == "LSTM" else (False,)) for kind in kinds]


def _step_masks(kind, cell, T, B, H, HK, gen):
    from fused_rnn.ops.regularize import StepMasks

    def u8(shape, p):
        return torch.empty(shape, dtype=torch.uint8).bernoulli_(p, generator=gen).to(DEVICE)
    if kind == "eval":
        return StepMasks(zh_p=0.25, zc_p=0.35 if cell == "LSTM" else 0.0)
    kw = {}
    if kind in ("h", "all"):
        kw.update(h=u8((B, HK), 0.7), h_scale=1 / 0.7)
    if kind in ("g", "all") and cell in ("LSTM", "GRU"):
        kw.update(g=u8((T, B, H), 0.6), g_scale=1 / 0.6)
    if kind in ("c", "all") and cell == "LSTM":
        kw.update(c=u8((B, H), 0.8), c_scale=1 / 0.8)
    if kind in ("zc", "all") and cell == "LSTM":
        kw.update(zc=u8((T, B, H), 0.3))
    if kind in ("zh", "all"):
        kw.update(zh=u8((T, B, HK), 0.4))
    return StepMasks(**kw)


def _masked_layer_run(layer, cell, inputs, mask, reverse, masks, dtype, gen_seed):
    """Outputs and gradients (of gi, h0, c0, w_hh, b_hh, w_hr: `inputs`, None where absent) of
    one call of a layer function (ops/naive.py's signature) in dtype, as float64."""
    leaves = [None if t is None else t.to(dtype).requires_grad_() for t in inputs]
    out, h_n, c_n = layer(cell, *leaves, mask, reverse, masks=masks)
    outs = [out, h_n] + ([c_n] if c_n is not None else [])
    g = torch.Generator().manual_seed(gen_seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum()
               for o in outs)
    grads = torch.autograd.grad(loss, [t for t in leaves if t is not None])
    return [t.detach().double() for t in outs + list(grads)]


@pytest.mark.parametrize("variant", ["persistent", "step"])
@pytest.mark.parametrize("cell,proj,kind", MASKED,
                         ids=[f"{c}{'-proj' if p else ''}-{k}" for c, p, k in MASKED])
def test_cuda_step_masks_match_reference(cell, proj, kind, variant):
    """The kernels apply the regularisation masks of ops/regularize.py exactly as the reference
    layer does: outputs and every gradient (autograd through ops/naive.py is the truth), both
    directions, packed (unsorted lengths, one of them full), in fp64 to <= 1e-10. fp32 and the
    parity rule: tests/test_regularization.py, through the modules."""
    dtype = torch.float64
    from fused_rnn.ops.cells import GATES
    from fused_rnn.ops.naive import layer_naive
    cuda_launch = _cuda_launch()
    seed = 1000 + MASKED.index((cell, proj, kind))
    gen = torch.Generator().manual_seed(seed)
    T, B, H = 5, 7, 8  # emulated: 3 blocks of units, 3 batch chunks
    HK = 5 if proj else H
    G = GATES[cell]

    def rand(*shape, scale=1.0):  # rounded to dtype, so the float64 truth sees the same values
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(
            DEVICE, torch.float64)
    inputs = [rand(T, B, G * H), rand(B, HK), rand(B, H) if cell == "LSTM" else None,
              rand(G * H, HK, scale=0.4), rand(G * H), rand(HK, H, scale=0.5) if proj else None]
    lengths = torch.tensor([5, 2, 4, 1, 5, 3, 5])
    mask = (torch.arange(T)[:, None] < lengths[None]).unsqueeze(-1).to(DEVICE)
    masks = _step_masks(kind, cell, T, B, H, HK, gen)
    expected = "persistent" if variant == "persistent" and not proj else "step"
    for reverse in (False, True):
        cuda_launch.last_used.update(fwd=None, bwd=None)
        with cuda_launch.variant(variant):
            ours = _masked_layer_run(cuda_launch.layer_cuda, cell, inputs, mask, reverse, masks,
                                     dtype, seed)
        assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == (expected, expected), \
        cuda_launch.last_used
        truth = _masked_layer_run(layer_naive, cell, inputs, mask, reverse, masks,
                                  torch.float64, seed)
        errs = [(a - b).abs().max().item() for a, b in zip(ours, truth)]
        assert max(errs) <= 1e-10, (reverse, errs)


@pytest.mark.parametrize("cell,base", [("LSTMCell", nn.LSTMCell), ("GRUCell", nn.GRUCell),
                                       ("RNNCell", nn.RNNCell)])
def test_cuda_cells(cell, base):
    assert testing.compare_cells(base, "cuda", DEVICE, hidden_size=13) <= 1e-10


def test_cuda_empty_batch():
    m = fused_rnn.LSTM(3, 4, backend="cuda", dtype=torch.float64, device=DEVICE)
    x = torch.randn(5, 0, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out, (h, c) = m(x)
    assert out.shape == (5, 0, 4) and h.shape == c.shape == (1, 0, 4)
    out.sum().backward()


def test_cuda_backward_is_bitwise_reproducible():
    """Every output element has one owner thread and a fixed summation order (csrc/gemm.cuh)."""
    case = TILED[1]
    first = testing.run(fused_rnn.convert(testing.torch_module(case), "cuda"), case,
                        torch.float32, DEVICE)
    second = testing.run(fused_rnn.convert(testing.torch_module(case), "cuda"), case,
                         torch.float32, DEVICE)
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU-only behaviour")
def test_emulated_dtype_and_no_emulation_errors(monkeypatch):
    m = fused_rnn.LSTM(3, 4, backend="cuda").to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="emulated kernels run float32 and float64 only"):
        m(torch.randn(2, 1, 3, dtype=torch.bfloat16))
    monkeypatch.delenv("FUSED_RNN_CUDA_EMULATE")
    with pytest.raises(RuntimeError, match=r"CUDA tensors \(or on the CPU under "
                                           r"FUSED_RNN_CUDA_EMULATE=1\), and the input is on cpu"):
        fused_rnn.LSTM(3, 4, backend="cuda")(torch.randn(2, 1, 3))


def test_variant_names_are_checked():
    with pytest.raises(ValueError, match="variant: expected one of"):
        with _cuda_launch().variant("fast"):
            pass


def test_bench_cuda_providers_pin_the_variant():
    from fused_rnn.bench import suite as S
    cuda_launch = _cuda_launch()
    for provider, expected in (("cuda_step", "step"), ("cuda_persistent", "persistent")):
        fn, _ = S.build(provider, "GRU", (3, 2, 4, 8), "fp32", torch.device(DEVICE))
        fn(torch.randn(3, 2, 4, device=DEVICE, requires_grad=True)).sum().backward()
        assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == (expected, expected)


def _twin(cls=nn.LSTM, **kw):
    torch.manual_seed(3)
    ref = cls(4, 5, dtype=torch.float64, device=DEVICE, **kw)
    ours = copy.deepcopy(ref)
    return ref, fused_rnn.convert(ours, "cuda")


def test_whole_layer_path_takes_what_nn_lstm_takes():
    """The whole-layer path (ops/cuda/stack.py) on calls its fast entry refuses or that reach
    its backward unusually: an expanded (learned) h0, a non-contiguous weight, torch.func's
    functional_call, a gradient of h_n only (an expand), retain_graph twice, and a CPU autocast
    region around forward and backward. Each against nn.LSTM in float64."""
    ref, ours = _twin(num_layers=2, bidirectional=True)
    x = torch.randn(3, 2, 4, dtype=torch.float64, device=DEVICE)
    h0 = torch.randn(1, 1, 5, dtype=torch.float64, device=DEVICE).expand(4, 2, 5)
    c0 = torch.randn(4, 2, 5, dtype=torch.float64, device=DEVICE)
    for m in (ref, ours):
        m.weight_hh_l1.data = m.weight_hh_l1.data.t().contiguous().t()  # non-contiguous
        assert not m.weight_hh_l1.is_contiguous()
    want, got = ref(x, (h0, c0)), ours(x, (h0, c0))
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1][1], want[1][1], rtol=0, atol=1e-12)
    # functional_call: the weights passed in, not the module's own
    zeros = {k: torch.zeros_like(v) for k, v in ours.named_parameters()}
    out = torch.func.functional_call(ours, zeros, (x,))[0]
    assert torch.equal(out, torch.zeros_like(out))
    # a gradient of h_n alone (sum's backward hands over an expand), twice with retain_graph
    grads = []
    for m in (ref, ours):
        h_n = m(x)[1][0]
        loss = h_n.sum()
        loss.backward(retain_graph=True)
        first = m.weight_ih_l0.grad.clone()
        loss.backward()
        torch.testing.assert_close(m.weight_ih_l0.grad, 2 * first, rtol=0, atol=1e-12)
        grads.append(first)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-12)
    if DEVICE == "cpu":  # an autocast region on the CPU leaves the fused backends' dtypes alone
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ours(x)[0]
            out.sum().backward()
        torch.testing.assert_close(out, ref(x)[0], rtol=0, atol=1e-12)


def test_whole_layer_path_packed_and_double_backward():
    """Packed input built by hand with int32 indices (torch's RNNs take them), and the double
    backward refusal when only h0 and c0 need a gradient."""
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
    ref, ours = _twin(bidirectional=True)
    x = torch.randn(4, 3, 4, dtype=torch.float64, device=DEVICE)
    seq = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False)
    seq = PackedSequence(seq.data, seq.batch_sizes, seq.sorted_indices.int(),
                         seq.unsorted_indices.int())
    torch.testing.assert_close(ours(seq)[0].data, ref(seq)[0].data, rtol=0, atol=1e-12)
    # an expanded h0 with packed input: the full path's whole-layer run (its own layout)
    h_e = torch.randn(1, 1, 5, dtype=torch.float64, device=DEVICE).expand(2, 3, 5)
    c_e = torch.randn(2, 3, 5, dtype=torch.float64, device=DEVICE)
    torch.testing.assert_close(ours(seq, (h_e, c_e))[0].data, ref(seq, (h_e, c_e))[0].data,
                               rtol=0, atol=1e-12)
    h0 = torch.randn(2, 3, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    c0 = torch.randn(2, 3, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    for p in ours.parameters():
        p.requires_grad_(False)
    out = ours(x, (h0, c0))[0]
    (g,) = torch.autograd.grad(out.sum(), h0, create_graph=True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        g.sum().backward()


def test_whole_layer_path_refuses_what_nn_lstm_refuses():
    _, ours = _twin()
    x = torch.randn(3, 2, 4, dtype=torch.float64, device=DEVICE)
    h = torch.zeros(1, 2, 5, dtype=torch.float64, device=DEVICE)
    with pytest.raises((TypeError, RuntimeError)):
        ours(x, (h, None))
    weights = list(ours._flat_weights)
    with pytest.raises(ValueError, match="weights: expected 4 tensors"):
        fused_rnn.functional.lstm(x, weights + weights[:1], backend="cuda")
