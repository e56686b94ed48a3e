"""The Triton kernels on the CPU, in Triton's interpreter (TRITON_INTERPRET=1, set by conftest
when there is no GPU), against float64 torch and the reference backend, forward and backward,
with and without the regularisation step masks; and compiled for sm_90, which catches what the
interpreter lets through."""
import dataclasses
import os
import warnings
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import fused_rnn
from fused_rnn import backends, testing
from fused_rnn.testing import Case

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and not backends.triton_interpreted(),
    reason="needs CUDA or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# Dropout masks only match the CPU truth on the CPU.
GRID = testing.random_cases(48, seed=404, with_dropout=DEVICE == "cpu")
# Shapes that take several tiles: H=33 -> 2 hidden tiles, B=70 -> 2 batch tiles of 64.
TILED = [Case("LSTM", T=3, B=70, I=9, H=33, bidirectional=True, packed="unsorted", seed=1),
         Case("GRU", T=4, B=17, I=40, H=33, num_layers=2, seed=2),
         Case("RNN_TANH", T=3, B=70, I=5, H=48, packed="sorted", seed=3),
         Case("RNN_RELU", T=2, B=5, I=3, H=65, bidirectional=True, seed=4),
         Case("LSTM", T=4, B=18, I=6, H=40, proj_size=33, num_layers=2, bidirectional=True,
              packed="unsorted", seed=5)]


# Every case in fp32; in fp64 the multi-tile cases and, under the interpreter (which is slow:
# about half of this file's time went to the fp64 grid), the first 12 random ones (each cell
# three times). The fp64 runs check the same kernels as the fp32 ones with ACC = fp64; the
# fp64 path is also checked to 1e-10 by the comparisons with the reference backend below
# (multi-tile cases, step masks, LayerNorm cells).
FP64 = GRID[:12] + TILED if DEVICE == "cpu" else GRID + TILED
RUNS = [(c, torch.float32) for c in GRID + TILED] + [(c, torch.float64) for c in FP64]


def _record(monkeypatch, *names):
    """The launch functions of ops/triton/launch.py among `names` that a test's calls reach, in
    call order."""
    from fused_rnn.ops.triton import launch as triton_launch
    ran = []
    for name in names:
        original = getattr(triton_launch, name)
        monkeypatch.setattr(triton_launch, name, lambda *a, _n=name, _f=original, **k:
                            ran.append(_n) or _f(*a, **k))
    return ran


@pytest.mark.parametrize("case,dtype", RUNS,
                         ids=[f"{c.label()}-{'fp64' if d == torch.float64 else 'fp32'}"
                              for c, d in RUNS])
def test_triton_matches_torch(case, dtype):
    """The default variant: one program per batch tile where W_hh fits it, else per step."""
    res = testing.check(case, "triton", dtype, DEVICE)
    assert res.ok, res.failures()


# The per-step kernels where the default variant would run the tile kernels.
STEP_RUNS = [(c, torch.float32) for c in GRID[:16] + TILED] + [(c, torch.float64)
                                                                for c in GRID[:4]]


@pytest.mark.parametrize("case,dtype", STEP_RUNS,
                         ids=[f"{c.label()}-{'fp64' if d == torch.float64 else 'fp32'}"
                              for c, d in STEP_RUNS])
def test_step_variant_matches_torch(case, dtype, monkeypatch):
    from fused_rnn.ops.triton import launch as triton_launch
    ran = _record(monkeypatch, "_fwd_tile", "_bwd_tile")
    with triton_launch.variant("step"):
        res = testing.check(case, "triton", dtype, DEVICE)
    assert res.ok, res.failures()
    assert not ran


# One program per batch tile: cases the tile kernels take (no projection; padded H within
# plans.tile_plan's limits: 64 in fp64 for an LSTM, 32 in fp32 with IEEE dots, as the tests run),
# each run whole in the interpreter (nothing waits on another program).
TILE = [c for c in TILED + GRID if not c.proj_size and c.H <= 64]
TILE_RUNS = ([(c, torch.float64) for c in TILE[:12]]
             + [(c, torch.float32) for c in TILE if c.H <= 32][:12])


@pytest.mark.parametrize("case,dtype", TILE_RUNS,
                         ids=[f"{c.label()}-{'fp64' if d == torch.float64 else 'fp32'}"
                              for c, d in TILE_RUNS])
def test_tile_matches_torch(case, dtype, monkeypatch):
    ran = _record(monkeypatch, "_fwd_tile", "_bwd_tile")
    res = testing.check(case, "triton", dtype, DEVICE)
    assert res.ok, res.failures()
    assert {"_fwd_tile", "_bwd_tile"} <= set(ran), ran


@pytest.mark.parametrize("case", TILE[:6], ids=[c.label() for c in TILE[:6]])
def test_tile_matches_reference_backend(case, monkeypatch):
    ran = _record(monkeypatch, "_fwd_tile", "_bwd_tile")
    diffs = testing.compare_backends(case, "triton", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs
    assert {"_fwd_tile", "_bwd_tile"} <= set(ran), ran


def test_tile_plan_limits():
    from fused_rnn.ops.triton import plans
    plan = plans.tile_plan
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    assert plan(33, 128, 4, bf16)["grid"] == (3,)  # batch tiles of 16 rows
    assert plan(4, 128, 4, bf16)["num_warps"] == 16 and plan(4, 128, 3, fp16)["num_warps"] == 16
    assert plan(4, 64, 3, bf16)["num_warps"] == 8 and plan(4, 32, 4, bf16)["num_warps"] == 4
    assert plan(4, 129, 4, bf16) is None  # padded to 256: 512 KiB of W_hh
    assert plan(4, 256, 1, bf16) is not None and plan(4, 256, 3, bf16) is None
    assert plan(4, 64, 4, bf16, True) is not None and plan(4, 65, 1, bf16, True) is None
    assert plan(4, 64, 4, torch.float64) is not None and plan(4, 65, 4, torch.float64) is None
    assert plan(4, 64, 4, bf16, ln=True) is not None and plan(4, 65, 3, bf16, ln=True) is None
    assert plan(4, 16, 4, bf16, True, ln=True) is None  # LayerNorm with step masks: per step
    assert plan(4, 16, 3, fp32, ln=True) is None
    cpu, f64 = torch.device("cpu"), torch.float64  # fp64 masks and LN: the interpreter only
    assert plan(4, 16, 4, f64, True) is None and plan(4, 16, 4, f64, ln=True) is None
    assert plan(4, 16, 4, f64, True, device=cpu) and plan(4, 16, 4, f64, ln=True, device=cpu)
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert plan(4, 64, 4, fp32) is not None and plan(4, 65, 4, fp32) is None
        torch.backends.cudnn.allow_tf32 = False  # IEEE dots: W_hh in registers
        assert plan(4, 32, 4, fp32) is not None and plan(4, 33, 1, fp32) is None
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.parametrize("case", TILED, ids=[c.label() for c in TILED])
def test_triton_matches_reference_backend(case):
    diffs = testing.compare_backends(case, "triton", "reference", torch.float64, DEVICE)
    assert max(diffs.values()) <= 1e-10, diffs


def test_grid_covers_cells_and_options():
    cells = {c.cell for c in GRID}
    assert cells == set(testing.CELLS)
    assert {c.packed for c in GRID} == {"", "sorted", "unsorted"}
    assert any(c.bidirectional for c in GRID) and any(c.num_layers == 3 for c in GRID)
    assert any(c.unbatched for c in GRID) and (DEVICE != "cpu" or any(c.dropout for c in GRID))
    assert any(c.proj_size for c in GRID)


@pytest.mark.parametrize("cell,base", [("LSTMCell", nn.LSTMCell), ("GRUCell", nn.GRUCell),
                                       ("RNNCell", nn.RNNCell)])
def test_triton_cells(cell, base):
    assert testing.compare_cells(base, "triton", DEVICE, hidden_size=33) <= 1e-10


@pytest.mark.parametrize("cls,layer_norm", [(fused_rnn.GRU, False), (fused_rnn.GRU, True),
                                            (fused_rnn.LSTM, True)])
def test_triton_empty_batch(cls, layer_norm):
    m = cls(3, 4, backend="triton", dtype=torch.float64, device=DEVICE, layer_norm=layer_norm)
    x = torch.randn(5, 0, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out, state = m(x)
    h = state[0] if cls is fused_rnn.LSTM else state
    assert out.shape == (5, 0, 4) and h.shape == (1, 0, 4)
    out.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_interpreter_dtype_and_no_interpreter_errors(monkeypatch):
    m = fused_rnn.LSTM(3, 4, backend="triton").to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="float32 and float64 only .*torch.bfloat16"):
        m(torch.randn(2, 1, 3, dtype=torch.bfloat16))
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="CUDA tensors \\(or on the CPU under "
                                           "TRITON_INTERPRET=1\\), and the input is on cpu"):
        fused_rnn.LSTM(3, 4, backend="triton")(torch.randn(2, 1, 3))


@pytest.mark.nvcc
@pytest.mark.slow
def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "fused_rnn.ops.triton.compile_check", "--arch", "90"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "kernel variants for sm_90; 0 of the fp32/tf32/bf16/fp16 ones use local memory" \
        in res.stdout


# The persistent kernels take padded H <= 64 for fp32 with IEEE dots (ops/triton/plans.py's limits).
PERSISTENT = [c for c in TILED + GRID if not c.proj_size and c.H <= 64][:12]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", PERSISTENT, ids=[c.label() for c in PERSISTENT])
def test_persistent_matches_torch(case, dtype, monkeypatch):
    from fused_rnn.ops.triton import launch as triton_launch
    launches = _record(monkeypatch, "_fwd_persistent", "_bwd_persistent")
    with triton_launch.variant("persistent"):
        res = testing.check(case, "triton", dtype, DEVICE)
    assert res.ok, res.failures()
    assert {"_fwd_persistent", "_bwd_persistent"} <= set(launches), launches


def test_persistent_falls_back_per_step_with_projection(monkeypatch):
    from fused_rnn.ops.triton import launch as triton_launch
    for name in ("_fwd_persistent", "_bwd_persistent"):
        monkeypatch.setattr(triton_launch, name,
                            lambda *a, **k: pytest.fail("a projection cannot run persistent"))
    with triton_launch.variant("persistent"):
        assert testing.check(TILED[-1], "triton", torch.float64, DEVICE).ok
    with pytest.raises(ValueError, match="variant: expected one of"):
        with triton_launch.variant("fast"):
            pass


def test_persistent_plan_limits():
    from fused_rnn.ops.triton import plans
    plan = plans.persistent_plan
    cpu = torch.device("cpu")
    assert plan(4, 64, 4, torch.float32, cpu)["BLOCK_H"] == 16
    assert plan(4, 65, 4, torch.float32, cpu) is None  # IEEE fp32: padded H <= 64
    assert plan(4, 256, 4, torch.float64, cpu) is not None
    assert plan(4, 257, 1, torch.float64, cpu) is None  # padded H <= 256
    assert plan(40, 33, 3, torch.float64, cpu)["grid"] == (3, 3)  # batch tiles of 16
    assert plan(4, 64, 4, torch.float32, cpu, True) is not None
    assert plan(4, 65, 4, torch.float64, cpu, True) is None  # step masks: padded H <= 64
    assert plan(16, 512, 4, torch.bfloat16, cpu)["BLOCK_H"] == 16  # 16 bits: to 512, tiles of 16
    assert plan(16, 512, 1, torch.bfloat16, cpu) is None and plan(4, 513, 3, torch.float16,
                                                                  cpu) is None


def test_bench_persistent_provider_runs_persistent_both_ways(monkeypatch):
    from fused_rnn.bench import suite as S
    ran = _record(monkeypatch, "_fwd_persistent", "_bwd_persistent")
    fn, _ = S.build("triton_persistent", "LSTM", (3, 2, 4, 8), "fp32", torch.device(DEVICE))
    fn(torch.randn(3, 2, 4, device=DEVICE, requires_grad=True)).sum().backward()
    assert ran == ["_fwd_persistent", "_bwd_persistent"]


# Step masks (ops/regularize.StepMasks) per kind, and the layers each is checked on: (cell,
# projection, packed, reverse, bias). rnndrop and zoneout of the cell need an LSTM, recurrent
# dropout a gated candidate.
MASK_KINDS = ("h", "g", "c", "zc", "zh", "eval", "all")
MASK_LAYERS = [("LSTM", False, True, True, True), ("LSTM", True, True, False, False),
               ("GRU", False, True, False, True), ("RNN_TANH", False, False, True, False),
               ("RNN_RELU", False, True, True, True)]


def _step_masks(kind: str, cell: str, T: int, B: int, H: int, HK: int):
    from fused_rnn.ops.regularize import StepMasks

    def keep(shape, p):
        return torch.empty(shape, dtype=torch.uint8, device=DEVICE).bernoulli_(p)

    lstm = cell == "LSTM"
    kw = {}
    if kind in ("h", "all"):
        kw.update(h=keep((B, HK), 0.7), h_scale=1 / 0.7)
    if kind in ("g", "all") and not cell.startswith("RNN"):
        kw.update(g=keep((T, B, H), 0.6), g_scale=1 / 0.6)
    if kind in ("c", "all") and lstm:
        kw.update(c=keep((B, H), 0.8), c_scale=1 / 0.8)
    if kind in ("zc", "all") and lstm:
        kw.update(zc=keep((T, B, H), 0.3))
    if kind in ("zh", "all"):
        kw.update(zh=keep((T, B, HK), 0.4))
    if kind == "eval":
        kw.update(zh_p=0.25, zc_p=0.35 if lstm else 0.0)
    return StepMasks(**kw)


def _layer_error(variant, leaves, *args, **kw) -> float:
    """Max abs difference of the outputs and the gradients of `leaves` between
    ops/naive.layer_naive and layer_triton (run as `variant`) on the same layer arguments."""
    from fused_rnn.ops.triton import launch as triton_launch
    from fused_rnn.ops.naive import layer_naive
    results = []
    for layer in (layer_naive, triton_launch.layer_triton):
        with triton_launch.variant(variant):
            out, h_n, c_n = layer(*args, **kw)
        outs = [out, h_n] + ([c_n] if c_n is not None else [])
        g = torch.Generator(device=DEVICE).manual_seed(3)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype, device=DEVICE)).sum()
                   for o in outs)
        results.append([o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves)))
    return max((a - b).abs().max().item() for a, b in zip(*results))


@pytest.mark.parametrize("variant", ["step", "persistent", "tile"])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_step_masks_match_reference(kind, variant, monkeypatch):
    """layer_triton with step masks against autograd through ops/naive.layer_naive, float64:
    outputs and every gradient."""
    from fused_rnn.ops.triton import launch as triton_launch
    from fused_rnn.ops.cells import GATES
    launches = _record(monkeypatch, "_fwd_persistent", "_bwd_persistent", "_fwd_tile",
                       "_bwd_tile")
    torch.manual_seed(MASK_KINDS.index(kind))
    dt, T, B, H = torch.float64, 5, 4, 7
    for cell, proj, packed, reverse, bias in MASK_LAYERS:
        if (kind in ("c", "zc") and cell != "LSTM") or (kind == "g" and cell.startswith("RNN")):
            continue
        HK, G = (4 if proj else H), GATES[cell]

        def leaf(*shape, scale=1.0):
            return (torch.randn(*shape, dtype=dt, device=DEVICE) * scale).requires_grad_()

        gi, h0, w_hh = leaf(T, B, G * H), leaf(B, HK), leaf(G * H, HK, scale=0.4)
        c0 = leaf(B, H) if cell == "LSTM" else None
        b_hh = leaf(G * H) if bias else None
        w_hr = leaf(HK, H, scale=0.5) if proj else None
        lengths = torch.tensor([5, 2, 4, 1], device=DEVICE)
        mask = ((torch.arange(T, device=DEVICE)[:, None] < lengths).unsqueeze(-1) if packed
                else None)
        masks = _step_masks(kind, cell, T, B, H, HK)
        leaves = [x for x in (gi, h0, c0, w_hh, b_hh, w_hr) if x is not None]
        err = _layer_error(variant, leaves, cell, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse,
                           masks=masks)
        assert err <= 1e-10, (cell, proj, packed, reverse, bias, err)
    if variant != "step":  # (a projection runs per step)
        assert {f"_fwd_{variant}", f"_bwd_{variant}"} <= set(launches), launches
    else:
        assert not launches, launches


# LayerNorm cells (ops/triton/layer_norm.py) per step-mask kind, packed and reversed, with row kernels
# of 2 rows per program and 16-wide chunks so that each row takes several chunks (4·7 = 28 and 7
# units) and the last program a partial set of rows (B = 5).
@pytest.mark.parametrize("variant", ["step", "tile", "persistent"])
@pytest.mark.parametrize("kind", ("none",) + MASK_KINDS)
def test_layer_norm_matches_reference(kind, variant, monkeypatch):
    """layer_triton with LayerNorm weights against autograd through ops/naive.layer_naive,
    float64: outputs and every gradient, γ and β included. The tile kernels fuse the LN (no
    step masks); the rest runs per step (both asserted)."""
    from fused_rnn.ops.cells import GATES, LayerNormWeights
    from fused_rnn.ops.regularize import NO_MASKS
    from fused_rnn.ops.triton import plans
    monkeypatch.setattr(plans, "LN_ROWS", 2)
    monkeypatch.setattr(plans, "LN_BLOCK_N", 16)
    launches = _record(monkeypatch, "_fwd_persistent", "_bwd_persistent", "_ln_kernels",
                       "_fwd_tile", "_bwd_tile")
    torch.manual_seed(11 + len(kind))
    dt, T, B, H = torch.float64, 5, 5, 7
    for cell, packed, reverse, bias in [("LSTM", True, True, True), ("LSTM", False, False, False),
                                        ("GRU", True, False, True), ("GRU", False, True, False)]:
        if kind in ("c", "zc") and cell != "LSTM":
            continue
        G = GATES[cell]

        def leaf(*shape, scale=1.0, shift=0.0):
            return (torch.randn(*shape, dtype=dt, device=DEVICE) * scale + shift).requires_grad_()

        gi, h0, w_hh = leaf(T, B, G * H), leaf(B, H), leaf(G * H, H, scale=0.4)
        c0 = leaf(B, H) if cell == "LSTM" else None
        b_hh = leaf(G * H) if bias else None
        ln = [leaf(G * H, scale=0.5, shift=1.0), leaf(G * H, scale=0.5)]
        ln += [leaf(H, scale=0.5, shift=1.0), leaf(H, scale=0.5)] if cell == "LSTM" else []
        lengths = torch.tensor([5, 2, 4, 1, 3], device=DEVICE)
        mask = ((torch.arange(T, device=DEVICE)[:, None] < lengths).unsqueeze(-1) if packed
                else None)
        masks = NO_MASKS if kind == "none" else _step_masks(kind, cell, T, B, H, H)
        weights = LayerNormWeights(None, None, *ln)  # the input gates' LN is not the layer's
        leaves = [x for x in (gi, h0, c0, w_hh, b_hh, *ln) if x is not None]
        err = _layer_error(variant, leaves, cell, gi, h0, c0, w_hh, b_hh, None, mask,
                           reverse, masks=masks, ln=weights)
        assert err <= 1e-10, (cell, packed, reverse, bias, err)
    # (the tile kernels fuse LayerNorm cells without step masks only: plans.tile_plan)
    fused = variant == "tile" and kind == "none"
    expected = {"_fwd_tile", "_bwd_tile"} if fused else {"_ln_kernels"}
    assert launches and set(launches) == expected, launches


def test_per_step_calls_replay_one_graph_per_shape(monkeypatch):
    """graphs.py's cache, on the CPU with a stand-in for CUDA graph capture whose replay runs the
    captured call again into the captured outputs (as a graph's replay rewrites its memory).
    Calls that run per step (here an LSTM with a projection) go through it both ways, captured
    on a key's second call; models of the same shapes with other values then reuse every entry
    (their values copied in) and still match torch; returned tensors are copies, not the
    entry's; stride-0 arguments (an expanded h0, the gradient of a sum) and inference mode
    work; a change of torch's TF32 flag is a new key; at most MAX_GRAPHS entries are kept; a
    capture that raises warns once and leaves its key eager; a call the tile kernels take
    captures nothing."""
    from fused_rnn.ops.triton import graphs
    from fused_rnn.ops.triton import launch as triton_launch
    captured = []

    def capture(call):
        outputs = call()
        captured.append(outputs)

        def replay():
            for o, new in zip(outputs, call()):
                o.copy_(new)
        return replay, outputs

    cache = graphs.Graphs(capture)
    monkeypatch.setattr(graphs, "GRAPHS", cache)
    monkeypatch.setattr(graphs, "enabled", lambda device: True)
    case = Case("LSTM", T=4, B=5, I=6, H=40, proj_size=33, num_layers=2, bidirectional=True,
                packed="unsorted", seed=5)
    for seed in (5, 6):  # the second call of each key captures it
        res = testing.check(dataclasses.replace(case, seed=seed), "triton", torch.float64,
                            DEVICE)
        assert res.ok, res.failures()
    first = len(captured)
    assert first >= 4 and len(cache) == first  # forward and backward, each direction
    res = testing.check(dataclasses.replace(case, seed=7), "triton", torch.float64, DEVICE)
    assert res.ok, res.failures()
    assert len(captured) == first
    static_ptrs = {t.data_ptr() for outs in captured for t in outs if t.numel()}

    def fwd(gi, h0, *, T=3):
        return triton_launch.rnn_fwd_triton("LSTM", gi[:T], h0, c0, w_hh, None, w_hr, None,
                                            False)
    gi = torch.randn(6, 2, 20, dtype=torch.float64)
    c0 = torch.randn(2, 5, dtype=torch.float64)
    w_hh, w_hr = torch.randn(20, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    h0 = torch.randn(1, 4, dtype=torch.float64).expand(2, 4)  # stride 0
    eager = triton_launch._rnn_fwd("LSTM", gi[:3], h0, c0, w_hh, None, w_hr, None, False,
                                   "tile", triton_launch.recurrence.NO_MASKS, None, True)
    for _ in range(3):  # eager, captured, replayed
        out = fwd(gi, h0)
        assert all(torch.equal(a, b) for a, b in zip(out, eager))
    assert all(t.data_ptr() not in static_ptrs for t in out if t.numel())
    n = len(captured)
    for mode in (torch.inference_mode, torch.no_grad):
        with mode():
            for _ in range(2):
                fwd(gi, h0)
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = not tf32
        for _ in range(2):
            fwd(gi, h0)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert len(captured) == n + 2  # inference mode and the other TF32 setting (no_grad: the same)
    monkeypatch.setattr(graphs, "MAX_GRAPHS", 2)
    for T in (4, 5, 6):
        for _ in range(2):
            fwd(gi, h0, T=T)
    assert len(cache) == 2
    def failing(call):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(cache, "_capture", failing)
    with pytest.warns(RuntimeWarning, match="could not be captured; this call's shape runs "
                                            "eagerly"):
        for _ in range(2):
            fwd(gi, h0, T=2)
    assert all(torch.equal(a, b) for a, b in zip(fwd(gi, h0, T=3), eager))  # other keys as before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fwd(gi, h0, T=2)  # (its key runs eagerly: no second attempt, no second warning)
    monkeypatch.setattr(cache, "_capture", capture)
    n = len(captured)
    for seed in (8, 9):
        assert testing.check(Case("GRU", T=3, B=4, I=5, H=16, seed=seed), "triton",
                             torch.float64, DEVICE).ok
    assert len(captured) == n
