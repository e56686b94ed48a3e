"""GPU parity of the CUDA C++ backend (skipped without CUDA or a buildable extension): for
each cell type, >= 200 random cases (layers, directions, batch_first, proj_size, packed,
unbatched, odd sizes, hx given or not) in fp32 (TF32 off), bf16 and fp16 pinned to the
persistent variant (which runs per step where the shape does not fit), and 50 per cell pinned to
the per-step variant, against float64 torch on the CPU; the bounds are cuDNN's own errors in the
same dtype, 2x its RMS error and 4x its max error, plus the atol (fused_rnn.testing), for
outputs, h_n, c_n and all gradients.

test_cuda_sanitizer_grid is the small grid that scripts/gpu_check.sh runs under
compute-sanitizer (memcheck, racecheck): every cell, both variants, packed and padded, with
and without the regularisation masks.

The cluster kernels (H = 64, 128, 256) and the multi-cluster kernels (H = 512 .. 1024, the
test_cuda_multicluster_* tests) each have per-plan parity tests, a training grid of 200 random
cases per cell and a sanitizer grid of their own; the multi-cluster plans also a smoke test
that runs each in a child process under a timeout, since a polling bug hangs them."""
import dataclasses
import math
import re
from typing import List, Optional, Tuple

import pytest
import torch

from fused_rnn import Regularization, testing
from fused_rnn.ops.cells import GATES
from fused_rnn.ops.cuda import extension
from fused_rnn.ops.cuda.plans import (CLUSTER_BATCH, PLAN_CLUSTER_UNIT, PLAN_EXCHANGE_UNIT,
                                      PLAN_MULTI_UNIT, plan_code, plan_name)
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


@dataclasses.dataclass(frozen=True)
class GridShapes:
    """The sizes a training grid draws from. budget: the most a case may cost its CPU truth
    (_truth_cost); a case over it loses its second layer, then its second direction, then
    steps (down to 2), then batch rows. None: no bound."""
    T: Tuple[int, ...]
    B: Tuple[int, ...]
    I: Tuple[int, ...]
    H: Tuple[int, ...]
    budget: Optional[float] = None


# The cluster kernels' sizes (H = 64, 128, 256): lengths, batch sizes around the 16-row tile.
CLUSTER_SHAPES = GridShapes(T=(1, 2, 7, 16, 40), B=(1, 5, 16, 17, 40), I=(8, 24, 64),
                            H=(64, 128, 256))


def _truth_cost(case: Case) -> int:
    """What a case costs testing.check on the CPU, in multiply-adds: T.B per weight for the
    float64 forward (the backward costs about twice as much again), plus about 100 per weight
    for making, copying, rounding and zeroing the modules (measured on a 2-core machine: an
    H = 1024 LSTM of two bidirectional layers, 34 M weights, takes 5.5 s at T.B = 15)."""
    D = 2 if case.bidirectional else 1
    weights = D * sum(GATES[case.cell] * case.H * ((case.I if layer == 0 else D * case.H) + case.H)
                      for layer in range(case.num_layers))
    return weights * (case.T * case.B + 100)


def _within(case: Case, budget: float) -> Case:
    while _truth_cost(case) > budget:
        if case.num_layers > 1:
            case = dataclasses.replace(case, num_layers=1)
        elif case.bidirectional:
            case = dataclasses.replace(case, bidirectional=False)
        elif case.T > 2:
            case = dataclasses.replace(case, T=max(2, case.T // 2))
        elif case.B > 1:
            case = dataclasses.replace(case, B=case.B // 2)
        else:
            break
    return case


def _cluster_grid(cell: str, n: int, seed: int, shapes: GridShapes = CLUSTER_SHAPES):
    """n random cases the cluster kernels take (no projection) of the given sizes: lengths,
    layers, directions, batch sizes, given or absent states."""
    import random
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        packed = rng.choice(["", "", "sorted", "unsorted"])
        case = Case(cell, T=rng.choice(shapes.T), B=rng.choice(shapes.B), I=rng.choice(shapes.I),
                    H=rng.choice(shapes.H), num_layers=rng.randint(1, 2),
                    bidirectional=rng.random() < 0.5, batch_first=rng.random() < 0.3,
                    bias=rng.random() < 0.8, packed=packed, with_hx=rng.random() < 0.7,
                    seed=rng.randrange(2 ** 31))
        cases.append(case if shapes.budget is None else _within(case, shapes.budget))
    return cases


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.cluster
@pytest.mark.parametrize("cell", testing.CELLS)
def test_cuda_cluster_training_grid(cell, dtype):
    """100 random cases per cell and dtype (200 per cell over fp16 and bf16) on the default
    cluster plans both ways, under the parity rule: every output and gradient."""
    cases = _cluster_grid(cell, 100, seed=4242 + testing.CELLS.index(cell))
    _check_cluster_grid(cases, dtype, f"{cell} {dtype}")


def _check_cluster_grid(cases, dtype, label: str, tf32: Optional[bool] = None):
    """Every case on the cluster kernels both ways under the parity rule (tf32: torch's cuDNN
    TF32 flag for the calls, None: as set), one failure line per failing case."""
    import contextlib

    from fused_rnn.ops.cuda import launch as cuda_launch
    def flags():  # a fresh context per case (flags() is a one-use generator context)
        return (contextlib.nullcontext() if tf32 is None else
                torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32))
    failures, worst = [], 0.0
    for case in cases:
        cuda_launch.last_used.update(fwd=None, bwd=None)
        with flags(), cuda_launch.variant("cluster"):
            res = testing.check(case, "cuda", dtype, "cuda")
        assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == \
            ("cluster", "cluster"), (case.label(), cuda_launch.last_used)
        worst = max(worst, res.worst_ratio)
        if not res.ok:
            failures.append(f"{case.label()}: {'; '.join(res.failures())}")
    print(f"{label} cluster: {len(cases)} cases, worst error/bound {worst:.3f}")
    assert not failures, f"{len(failures)} of {len(cases)} fail:\n" + "\n".join(failures[:20])


# fp32 on the cluster kernels (csrc/mma.cuh): H where each cell has a forward and a backward
# plan for the product (plans.h's kMaxF32WeightRegs; tests/test_sass.py checks what is
# compiled): with TF32 allowed (torch's default) and not.
F32_CLUSTER_H = {True: {"LSTM": (64, 128), "GRU": (64, 128, 256), "RNN_TANH": (64, 128, 256),
                        "RNN_RELU": (64, 128, 256)},
                 False: {"LSTM": (64,), "GRU": (64, 128), "RNN_TANH": (64, 128, 256),
                         "RNN_RELU": (64, 128, 256)}}


@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "ieee"])
@pytest.mark.cluster
@pytest.mark.parametrize("cell", testing.CELLS)
def test_cuda_cluster_fp32_training_grid(cell, tf32):
    """100 random fp32 cases per cell and TF32 setting (200 per cell) on the default cluster
    plans both ways, under the parity rule against cuDNN in the same setting (torch's flag for
    RNNs: cuDNN's TF32 error with it on, its IEEE fp32 error with it off)."""
    shapes = dataclasses.replace(CLUSTER_SHAPES, H=F32_CLUSTER_H[tf32][cell])
    cases = _cluster_grid(cell, 100, seed=5252 + testing.CELLS.index(cell) + 10 * tf32,
                          shapes=shapes)
    _check_cluster_grid(cases, torch.float32, f"{cell} fp32 tf32={tf32}", tf32=tf32)


@pytest.mark.cluster
@pytest.mark.parametrize("cell,H,tf32,bwd", [("LSTM", 256, True, "cluster"),
                                             ("GRU", 256, False, "cluster"),
                                             ("LSTM", 128, False, "persistent")])
def test_cuda_cluster_fp32_without_a_forward_plan_falls_back(cell, H, tf32, bwd):
    """Where an fp32 product has no forward plan for H (plans.h's register budget), the forward
    runs persistent and the backward on its own cluster plan where it has one (docs/cuda.md's
    table), under the parity rule against cuDNN in the same setting."""
    from fused_rnn.ops.cuda import launch as cuda_launch
    case = Case(cell, T=6, B=17, I=16, H=H, packed="unsorted", seed=77)
    cuda_launch.last_used.update(fwd=None, bwd=None)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32), cuda_launch.variant("cluster"):
        res = testing.check(case, "cuda", torch.float32, "cuda")
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == ("persistent", bwd)
    assert res.ok, res.failures()


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
             # Shapes the cluster forward takes (bf16; fp32 as Tf32x3 where it has a plan: the
             # tests run with TF32 off, tests/conftest.py).
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


# fp32 on the cluster kernels under compute-sanitizer: the IEEE-accurate product and tf32, the
# default plans both ways. (case, TF32 allowed)
CLUSTER_SANITIZER_F32 = [(_sanitizer_case("LSTM", 64, 6), False),
                         (_sanitizer_case("GRU", 128, 7), True),
                         (_sanitizer_case("RNN_TANH", 256, 8), False)]


@pytest.mark.sanitizer
@pytest.mark.cluster
@pytest.mark.parametrize("case,tf32", CLUSTER_SANITIZER_F32,
                         ids=[f"{c.label()}-{'tf32' if t else 'ieee'}"
                              for c, t in CLUSTER_SANITIZER_F32])
def test_cuda_cluster_fp32_sanitizer_grid(case, tf32):
    from fused_rnn.ops.cuda import launch as cuda_launch
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32), cuda_launch.variant("cluster"):
        res = testing.check(case, "cuda", torch.float32, "cuda")
    assert (cuda_launch.last_used["fwd"], cuda_launch.last_used["bwd"]) == ("cluster", "cluster")
    assert res.ok, res.failures()


# ---- The multi-cluster kernels (csrc/rnn_fwd_multicluster.cu, csrc/rnn_bwd_multicluster.cu):
# H = 512 .. 1024 over NC clusters of CS blocks, each block taking BT batch tiles, the clusters
# exchanging state through L2 by polling flag words. A wrong flag or step tag hangs the kernel
# rather than failing, so each plan runs first in a subprocess under a timeout
# (test_cuda_multicluster_smoke). Every test here has "multicluster" in its name:
# scripts/gpu_check.sh's stages multi, multi-grid and sanitize-multi select them by it, and its
# cluster and sanitizer stages leave them out.
_MULTI_MACROS = {"fwd": "FRNN_MULTI_PLANS", "bwd": "FRNN_MULTI_BWD_PLANS"}
# csrc/plans.h without its comments (they quote names and numbers too).
_PLANS_H = re.sub(r"//[^\n]*", "", (extension.CSRC / "plans.h").read_text())


def _multi_plans(kind: str) -> List[Tuple[int, str]]:
    """(H, name) of every multi-cluster plan of the GPU build (the #else branch of the macro's
    X(H, NC, CS, KS, BT) in csrc/plans.h), in the order tried when none is asked; none where
    plans.h has no such macro. Read from the header rather than asked of the binding so that
    the test list is built without a GPU; test_cuda_multicluster_plans_are_the_compiled_ones
    checks that the binding compiled the same."""
    macro = _MULTI_MACROS[kind]
    start = _PLANS_H.find(f"#define {macro}(")
    if start < 0:
        return []
    branches = _PLANS_H[start:].split("#else", 1)
    if len(branches) < 2:
        raise ValueError(f"csrc/plans.h: {macro} is read from the #else (GPU) branch of its "
                         f"#ifdef FRNN_EMULATE, and there is none")
    gpu = branches[1].split("#endif", 1)[0]
    plans = []
    for args in re.findall(r"X\(([\d,\s]+)\)", gpu):
        H, nc, cs, ks, bt = (list(map(int, args.split(","))) + [1])[:5]  # BT = 1 if absent
        # multi_plan_code (plans.h); plans.py names the code.
        code = nc * PLAN_MULTI_UNIT + bt * PLAN_EXCHANGE_UNIT + cs * PLAN_CLUSTER_UNIT + ks
        plans.append((H, plan_name(code)))
    return plans


MULTI_RUNS = [(kind, H, plan) for kind in ("fwd", "bwd") for H, plan in _multi_plans(kind)]
MULTI_H = {kind: {H for H, _ in _multi_plans(kind)} for kind in ("fwd", "bwd")}
# last_used's keys of each kind: the variant that ran and its cluster plan.
_LAST_USED_KEYS = {"fwd": ("fwd", "plan"), "bwd": ("bwd", "bwd_plan")}


def _plans_h_constant(name: str) -> int:
    """A constant of plans.h, such as "constexpr size_t kMaxBlockSmem = 227 * 1024;"."""
    found = re.search(rf"constexpr \w+ {name} = ([\d *]+);", _PLANS_H)
    if found is None:
        raise ValueError(f"csrc/plans.h: no constant {name} (tests/test_cuda_gpu.py reads it)")
    return math.prod(map(int, found.group(1).split("*")))


_MAX_BLOCK_SMEM = _plans_h_constant("kMaxBlockSmem")


def _plan_shape(plan: str) -> Tuple[int, int, int, int]:
    """(NC, CS, KS, BT) of a plan name "<NC>x<CS>x<KS>[b<BT>]"."""
    nc, cs, ks, bt = re.fullmatch(r"(\d+)x(\d+)x(\d+)(?:b(\d+))?", plan).groups()
    return int(nc), int(cs), int(ks), int(bt or 1)


def _is_multi(plan: Optional[str]) -> bool:
    return plan is not None and plan.count("x") == 2


def _multi_smem(kind: str, cell: str, H: int, plan: str) -> int:
    """Shared memory of a block of `plan` in fp16/bf16: MultiPlan::smem
    (rnn_fwd_multicluster.cu) and MultiBwdPlan::smem (rnn_bwd_multicluster.cu), copied. A plan
    over kMaxBlockSmem for a cell never runs for it (its launcher returns before launching):
    the LSTM's backward at H = 1024, whose dgates buffers take 262 KB."""
    nc, cs, ks, bt = _plan_shape(plan)
    NG, U = GATES[cell], H // (nc * cs)
    elem, acc, tiles = 2, 4, U // 16  # sizeof(T), sizeof(acc_t<T>), unit tiles per block
    if kind == "fwd":
        hbuf = 2 * bt * CLUSTER_BATCH * (H + 16 // elem) * elem
        red = (2 if bt > 1 else 1) * tiles * ks * NG * 256 * acc
        bias = -(-NG * U * acc // 16) * 16
        return hbuf + red + bias + 16
    dgates = 2 * CLUSTER_BATCH * (NG * H + 16 // elem) * elem
    return dgates + tiles * ks * 256 * acc + 16


def _ran(kind: str) -> str:
    from fused_rnn.ops.cuda import launch as cuda_launch
    variant, plan = (cuda_launch.last_used[k] for k in _LAST_USED_KEYS[kind])
    return f"{variant} {plan}" if plan else str(variant)


def _multi_plan_missed(kind: str, cell: str, H: int, plan: str, B: int) -> Optional[str]:
    """None where the last call of `kind` ran the multi-cluster `plan`; else why it could not,
    for the test to skip with once what ran instead passed the parity rule. It cannot where its
    block is over the shared memory limit for the cell (checked: it then must not run either),
    or where the batch needs more than one group of NC clusters (each block takes BT tiles of 16
    rows): every group's clusters must be resident at once, and the launcher falls back where
    the GPU cannot hold them (launch_cluster_tiles, csrc/dispatch.cuh). One group always fits:
    not running there fails, as a cluster plan that does not run fails
    test_cuda_cluster_parity."""
    from fused_rnn.ops.cuda import launch as cuda_launch
    ran = tuple(cuda_launch.last_used[k] for k in _LAST_USED_KEYS[kind]) == ("cluster", plan)
    smem = _multi_smem(kind, cell, H, plan)
    if smem > _MAX_BLOCK_SMEM:
        assert not ran, f"{kind} plan {plan} ran for {cell}, with {smem} bytes of shared memory"
        return (f"multi-cluster {kind} plan {plan} cannot run for {cell}: {smem} bytes of shared "
                f"memory per block, over the {_MAX_BLOCK_SMEM} a block may have")
    if ran:
        return None
    nc, cs, _, bt = _plan_shape(plan)
    groups = -(-B // (bt * CLUSTER_BATCH))
    what = f"multi-cluster {kind} plan {plan} did not run at B={B} (ran {_ran(kind)})"
    assert groups > 1, f"{what}: {nc} clusters of {cs} blocks, one group"
    sms = extension.load().device_info()["sms"]
    return (f"{what}: its {groups} groups of {nc} clusters of {cs} blocks ({groups * nc * cs} "
            f"blocks) must all be resident at once, and the launcher found that this GPU "
            f"({sms} SMs) does not hold them; what ran instead passed the parity rule")


def _multi_runs_for(kind: str, cell: str, H: int) -> bool:
    """Whether some multi-cluster plan of `kind` can run for the cell at H (one batch tile)."""
    return any(h == H and _multi_smem(kind, cell, H, plan) <= _MAX_BLOCK_SMEM
               for h, plan in _multi_plans(kind))


@pytest.mark.multicluster
def test_cuda_multicluster_plans_are_the_compiled_ones():
    """The binding's cluster_plans() lists, as its codes of PLAN_MULTI_UNIT and above, exactly
    the plans this file tests (read from plans.h), in the same order, and each name codes back
    to its code."""
    compiled = [(kind, int(H), int(code)) for kind, H, code in extension.load().cluster_plans()
                if int(code) >= PLAN_MULTI_UNIT]
    named = [(kind, H, plan_name(code)) for kind, H, code in compiled]
    assert sorted(named, key=lambda r: r[0]) == sorted(MULTI_RUNS, key=lambda r: r[0])
    for kind, H, code in compiled:
        assert plan_code(plan_name(code), backward=kind == "bwd") == code, (kind, H, code)


# One case per batch size: one row (two layers, 16 steps), one full tile (sorted lengths, no
# bias), a full and a partial tile (both directions, unsorted lengths), three tiles (batch
# first, no initial state).
MULTI_BATCHES = {1: dict(T=16, num_layers=2), 16: dict(T=8, bias=False, packed="sorted"),
                 17: dict(T=12, bidirectional=True, packed="unsorted"),
                 48: dict(T=8, batch_first=True, with_hx=False)}


def _multi_case(cell: str, H: int, B: int) -> Case:
    return Case(cell, B=B, I=32, H=H, seed=H + B, **MULTI_BATCHES[B])


def _multi_parity_runs(kind: str):
    return [(cell, H, plan, B) for cell in testing.CELLS for k, H, plan in MULTI_RUNS if k == kind
            for B in MULTI_BATCHES]


MULTI_FWD_RUNS, MULTI_BWD_RUNS = _multi_parity_runs("fwd"), _multi_parity_runs("bwd")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.multicluster
@pytest.mark.parametrize("cell,H,plan,B", MULTI_FWD_RUNS,
                         ids=[f"{c}-H{h}-{p}-B{b}" for c, h, p, b in MULTI_FWD_RUNS])
def test_cuda_multicluster_parity(cell, H, plan, B, dtype):
    """The multi-cluster forward, every plan compiled for the GPU, under the parity rule (every
    output and gradient; the backward runs H's default)."""
    from fused_rnn.ops.cuda import launch as cuda_launch
    case = _multi_case(cell, H, B)
    cuda_launch.last_used.update(fwd=None, plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan):
        res = testing.check(case, "cuda", dtype, "cuda")
    missed = _multi_plan_missed("fwd", cell, H, plan, B)
    assert res.ok, f"{case.label()}: {res.failures()}"
    if missed:
        pytest.skip(missed)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.multicluster
@pytest.mark.parametrize("cell,H,plan,B", MULTI_BWD_RUNS,
                         ids=[f"{c}-H{h}-{p}-B{b}" for c, h, p, b in MULTI_BWD_RUNS])
def test_cuda_multicluster_backward_parity(cell, H, plan, B, dtype):
    """The multi-cluster backward, every plan compiled for the GPU, on the same cases (the
    forward runs H's default)."""
    from fused_rnn.ops.cuda import launch as cuda_launch
    case = _multi_case(cell, H, B)
    cuda_launch.last_used.update(bwd=None, bwd_plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan(plan):
        res = testing.check(case, "cuda", dtype, "cuda")
    missed = _multi_plan_missed("bwd", cell, H, plan, B)
    assert res.ok, f"{case.label()}: {res.failures()}"
    if missed:
        pytest.skip(missed)


# The smoke run's child process: one plan, bf16, T = 64, at B = 16 (one tile: it must run)
# and B = 33 (three tiles, where they fit); a line before each launch says where it hangs, if
# it does, and one JSON line per batch size what ran.
_SMOKE_CHILD = r"""
import json, sys
import torch
import fused_rnn
from fused_rnn.ops.cuda import launch
kind, cell, H, plan = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
kw = dict(backend="cuda", device="cuda", dtype=torch.bfloat16)
if cell.startswith("RNN_"):
    m = fused_rnn.RNN(64, H, nonlinearity=cell[4:].lower(), **kw)
else:
    m = getattr(fused_rnn, cell)(64, H, **kw)
for B in (16, 33):
    x = torch.randn(64, B, 64, device="cuda", dtype=torch.bfloat16)
    with launch.variant("cluster"), launch.cluster_plan(plan if kind == "fwd" else None), \
            launch.cluster_bwd_plan(plan if kind == "bwd" else None):
        print(f"phase: forward, B={B}", flush=True)
        out, state = m(x)
        torch.cuda.synchronize()
        tensors = [out] + list(state if isinstance(state, tuple) else (state,))
        if kind == "bwd":
            print(f"phase: backward, B={B}", flush=True)
            sum(t.float().sum() for t in tensors).backward()
            torch.cuda.synchronize()
            tensors += [p.grad for p in m.parameters()]
            m.zero_grad(set_to_none=True)
    finite = all(bool(torch.isfinite(t).all()) for t in tensors)
    print("result " + json.dumps({"B": B, "last_used": launch.last_used, "finite": finite}),
          flush=True)
"""
# Seconds for all the children together, from their start: start-up (torch, CUDA, the cached
# extension; every child at once on the 16-core H200 machine) takes about 10-20 s, the runs
# themselves milliseconds.
SMOKE_TIMEOUT_S = 60


def _smoke_cell(kind: str, H: int, plan: str) -> str:
    """The cell a plan's smoke run takes: the LSTM (the most gates), else the first cell the
    plan runs for (the LSTM for a plan no cell can run: its smoke run then fails)."""
    return next((c for c in testing.CELLS if _multi_smem(kind, c, H, plan) <= _MAX_BLOCK_SMEM),
                "LSTM")


def _smoke_verdict(kind: str, H: int, plan: str, cell: str, proc, log) -> Tuple[str, Optional[str]]:
    """(what the plan's child did, the problem or None), once the child has exited."""
    import json
    output = log.read_text()
    if proc.returncode != 0:
        return "crashed", (f"multi-cluster plan {plan} ({kind}, H={H}, {cell}): exit "
                           f"{proc.returncode}\n{output[-2000:]}")
    rows = {row["B"]: row for row in (json.loads(line[len("result "):])
                                      for line in output.splitlines()
                                      if line.startswith("result "))}
    if sorted(rows) != [16, 33]:
        return "no result", f"multi-cluster plan {plan} ({kind}, H={H}): {output[-2000:]}"
    ran = {B: tuple(row["last_used"][k] for k in _LAST_USED_KEYS[kind])
           for B, row in rows.items()}
    what = f"B=16 ran {ran[16]}, B=33 ran {ran[33]}"
    if ran[16] != ("cluster", plan):
        return what, (f"multi-cluster plan {plan} ({kind}, H={H}) did not run at B=16 (one "
                      f"batch tile): ran {ran[16]}")
    if not all(row["finite"] for row in rows.values()):
        return what, f"multi-cluster plan {plan} ({kind}, H={H}): non-finite results, {what}"
    return what, None


@pytest.mark.multicluster
def test_cuda_multicluster_smoke(tmp_path):
    """Every multi-cluster plan once at T = 64, each in a child process of its own, all started
    at once under one timeout: a polling bug hangs the kernel, and must fail this test, naming
    each plan that hung, rather than hang the run (and when every plan hangs, as a bug they
    share would make them, the test still ends after one timeout)."""
    import os
    import subprocess
    import sys
    import time
    extension.load()  # built (if it must be) here, not against the children's timeout
    root = extension.CSRC.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FUSED_RNN_CUDA_EMULATE", None)
    start, children = time.monotonic(), []
    for kind, H, plan in MULTI_RUNS:
        cell = _smoke_cell(kind, H, plan)
        # Output to a file, not a pipe: a child that fills a pipe nobody reads yet would stall.
        log = tmp_path / f"{kind}-{plan}.txt"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-u", "-c", _SMOKE_CHILD, kind, cell,
                                     str(H), plan], stdout=out, stderr=subprocess.STDOUT,
                                    text=True, env=env, cwd=root)
        children.append((kind, H, plan, cell, proc, log))
    deadline, hung = start + SMOKE_TIMEOUT_S, set()
    for kind, H, plan, cell, proc, log in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            hung.add((kind, plan))
    # Reaped together, for at most 20 s: a child stuck in the driver may take a while to die,
    # and its output so far is in its file all the same.
    reap_by = time.monotonic() + 20
    for kind, H, plan, cell, proc, log in children:
        if (kind, plan) in hung:
            try:
                proc.wait(timeout=max(0.1, reap_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    lines, problems = [], []
    for kind, H, plan, cell, proc, log in children:
        if (kind, plan) in hung:
            phases = [line for line in log.read_text().splitlines()
                      if line.startswith("phase: ")]
            what, problem = "hung", (
                f"multi-cluster plan {plan} hung ({kind}, H={H}, {cell} bf16, T=64): no exit "
                f"{SMOKE_TIMEOUT_S} s after the start, killed; last "
                f"{phases[-1] if phases else 'phase: before the first launch'}")
        else:
            what, problem = _smoke_verdict(kind, H, plan, cell, proc, log)
        lines.append(f"{kind} H={H} {plan} ({cell}): {what}")
        if problem:
            problems.append(problem)
    print("\n".join(lines))
    assert not problems, f"{len(problems)} of {len(children)} plans:\n" + "\n".join(problems)


# Large H: the multi-cluster kernels' (512, 768, 1024) and 2048, which none takes (it runs
# persistent or per step: still checked), up to 256 batch rows (the larger batches take plans
# of several tiles per block, or fall back where no plan's clusters fit at once). The budget
# bounds the CPU truth, which dominates: on a 2-core machine the LSTM's 100 cases took 70 s
# (the other cells' under 30 s), so each of the 8 tests on its own pytest-xdist worker (2 of
# the H200 machine's 16 cores) should take about a minute or less.
MULTICLUSTER_SHAPES = GridShapes(T=(2, 3, 5, 8), B=(1, 5, 16, 17, 48, 100, 256), I=(16, 64),
                                 H=(512, 768, 1024, 2048), budget=7.5e8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.multicluster
@pytest.mark.parametrize("cell", testing.CELLS)
def test_cuda_multicluster_training_grid(cell, dtype):
    """100 random large-H cases per cell and dtype (200 per cell over fp16 and bf16) on the
    default plans both ways, under the parity rule: every output and gradient. Where H has a
    multi-cluster plan of a kind that the cell can run and the batch is one tile, that kind must
    have run one; elsewhere whatever ran is checked, and the tally of what ran is printed."""
    import collections

    from fused_rnn.ops.cuda import launch as cuda_launch
    cases = _cluster_grid(cell, 100, seed=5151 + testing.CELLS.index(cell),
                          shapes=MULTICLUSTER_SHAPES)
    failures, worst, ran = [], 0.0, collections.Counter()
    for case in cases:
        cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
        with cuda_launch.variant("cluster"):
            res = testing.check(case, "cuda", dtype, "cuda")
        ran[(case.H, _ran("fwd"), _ran("bwd"))] += 1
        for kind in ("fwd", "bwd"):
            plan = cuda_launch.last_used[_LAST_USED_KEYS[kind][1]]
            if case.B <= CLUSTER_BATCH and _multi_runs_for(kind, cell, case.H) \
                    and not _is_multi(plan):
                failures.append(f"{case.label()}: no multi-cluster {kind} plan ran ({_ran(kind)})")
        worst = max(worst, res.worst_ratio)
        if not res.ok:
            failures.append(f"{case.label()}: {'; '.join(res.failures())}")
    print(f"{cell} {dtype} multi-cluster: {len(cases)} cases, worst error/bound {worst:.3f}; "
          f"ran (H, forward, backward): " +
          ", ".join(f"{key} x{n}" for key, n in sorted(ran.items())))
    assert not failures, f"{len(failures)} of {len(cases)} fail:\n" + "\n".join(failures[:20])


# The multi-cluster kernels alone under compute-sanitizer (scripts/gpu_check.sh,
# sanitize-multi): each H's first plans both ways on one partial batch tile, and each kind's
# first plan of another layout (NC, CS or KS) than its H's first, and first plan of several
# tiles per block (on all its tiles, the last partial); packed, both directions. (case, forward
# plan, backward plan); None: H's first plan that fits.
def _multi_sanitizer_case(cell, H, seed, B=9):
    return Case(cell, T=3, B=B, I=8, H=H, packed="unsorted", bidirectional=True, seed=seed)


def _multi_sanitizer_runs():
    runs = [(_multi_sanitizer_case(testing.CELLS[i % len(testing.CELLS)], H, 21 + i), None, None)
            for i, H in enumerate(sorted(MULTI_H["fwd"] | MULTI_H["bwd"]))]
    for kind in ("fwd", "bwd"):
        entries = _multi_plans(kind)
        first = {}
        for H, plan in entries:
            first.setdefault(H, plan)
        other_layout = next(((H, p) for H, p in entries
                             if _plan_shape(p)[:3] != _plan_shape(first[H])[:3]), None)
        more_tiles = next(((H, p) for H, p in entries if _plan_shape(p)[3] > 1), None)
        for found in (other_layout, more_tiles):
            if found is None:
                continue
            H, plan = found
            B = CLUSTER_BATCH * _plan_shape(plan)[3] - 7
            cell = _smoke_cell(kind, H, plan)
            runs.append((_multi_sanitizer_case(cell, H, 31 + len(runs), B),
                         plan if kind == "fwd" else None, plan if kind == "bwd" else None))
    return runs


MULTI_SANITIZER = _multi_sanitizer_runs()


@pytest.mark.sanitizer
@pytest.mark.multicluster
@pytest.mark.parametrize("case,plan,bwd_plan", MULTI_SANITIZER,
                         ids=[f"{c.label()}-{p}-{b}" for c, p, b in MULTI_SANITIZER])
def test_cuda_multicluster_sanitizer_grid(case, plan, bwd_plan):
    from fused_rnn.ops.cuda import launch as cuda_launch
    cuda_launch.last_used.update(fwd=None, bwd=None, plan=None, bwd_plan=None)
    with cuda_launch.variant("cluster"), cuda_launch.cluster_plan(plan), \
            cuda_launch.cluster_bwd_plan(bwd_plan):
        res = testing.check(case, "cuda", torch.bfloat16, "cuda")
    for kind, asked in (("fwd", plan), ("bwd", bwd_plan)):
        if asked is not None:  # one group of its clusters: it runs
            missed = _multi_plan_missed(kind, case.cell, case.H, asked, case.B)
            assert missed is None, missed
        elif case.B <= CLUSTER_BATCH and _multi_runs_for(kind, case.cell, case.H):
            assert _is_multi(cuda_launch.last_used[_LAST_USED_KEYS[kind][1]]), (kind, _ran(kind))
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
