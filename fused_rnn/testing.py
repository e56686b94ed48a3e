"""Parity harness shared by `fused-rnn parity` and the test suite.

The rule (as flash-attention states it): on the same inputs, compare each backend and torch's
own implementation in the same dtype against a float64 ground truth computed by torch on the CPU;
the backend's max abs error may be at most 2x torch's plus a tiny atol. Inputs and weights are
rounded to the tested dtype first, so the truth is exact for the values each run sees. Checked:
the output, h_n, c_n and the gradients of the input, h_0, c_0 and every parameter, through a
loss with random (never all-ones) cotangents. In float64 on the CPU, torch is the truth itself,
so the bound is the atol alone: 1e-10.

Cases with regularisation options (Case.reg) or a LayerNorm cell (Case.layer_norm) have no
torch counterpart: there the truth is our reference backend in float64 and "torch's error" is
the reference backend's in the tested dtype, all on the tested device, with the masks drawn
alike for every run (the same seed).
"""
import contextlib
import copy
import dataclasses
import random
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from .modules import convert
from .ops.regularize import Regularization

# The "tiny atol" of the rule, per dtype. Half types only run on the GPU.
ATOL = {torch.float64: 1e-10, torch.float32: 1e-6, torch.bfloat16: 1e-3, torch.float16: 1e-3}
CELLS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


@dataclass(frozen=True)
class Case:
    """One configuration. packed: "" (padded tensor), "sorted" or "unsorted" lengths.
    dropout > 0 runs in training mode, with the RNG seeded alike for every run."""
    cell: str
    T: int
    B: int
    I: int
    H: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj_size: int = 0
    packed: str = ""
    unbatched: bool = False
    with_hx: bool = True
    dropout: float = 0.0
    seed: int = 0
    reg: Optional[Regularization] = None  # regularisation options (training mode)
    train: bool = True  # with reg: training (masks drawn) or eval mode
    layer_norm: bool = False  # a LayerNorm cell (LSTM, GRU), with random gains and biases

    @property
    def training(self) -> bool:
        return self.dropout > 0 or (self.reg is not None and self.train)

    def label(self) -> str:
        d = dataclasses.asdict(self)
        base = f"{self.cell} T{self.T} B{self.B} I{self.I} H{self.H} L{self.num_layers}"
        flags = [k for k in ("bidirectional", "batch_first", "unbatched") if d[k]]
        flags += [] if self.bias else ["no-bias"]
        flags += [f"proj{self.proj_size}"] if self.proj_size else []
        flags += [f"packed-{self.packed}"] if self.packed else []
        flags += [] if self.with_hx else ["hx=None"]
        flags += [f"dropout{self.dropout}"] if self.dropout else []
        if self.reg is not None:
            flags += [f"{k}{v}" for k, v in vars(self.reg).items() if v]
            flags += [] if self.train else ["eval"]
        flags += ["layer_norm"] if self.layer_norm else []
        return " ".join([base] + flags)


def random_cases(n: int, seed: int = 0, with_dropout: bool = True) -> List[Case]:
    """n random cases, cycling through the cell types; small sizes so the CPU runs them fast.
    with_dropout=False for runs off the CPU: there the dropout masks cannot match the CPU truth's
    (CUDA's generator, and cuDNN's own dropout state)."""
    rng = random.Random(seed)
    cases = []
    for k in range(n):
        cell = CELLS[k % len(CELLS)]
        unbatched = rng.random() < 0.15
        packed = "" if unbatched else rng.choice(["", "", "sorted", "unsorted"])
        num_layers = rng.randint(1, 3)
        H = rng.choice([1, 3, 5, 8, 13, 16])
        cases.append(Case(
            cell=cell, T=rng.choice([1, 2, 5, 9]), B=1 if unbatched else rng.choice([1, 2, 4, 7]),
            I=rng.choice([1, 4, 6, 11]), H=H, num_layers=num_layers,
            bidirectional=rng.random() < 0.5, batch_first=rng.random() < 0.3,
            bias=rng.random() < 0.8,
            proj_size=rng.randint(1, H - 1) if cell == "LSTM" and H > 1 and rng.random() < 0.4
            else 0,
            packed=packed, unbatched=unbatched, with_hx=rng.random() < 0.7,
            # Dropout only where torch draws its masks as we do: padded input, > 1 layer.
            dropout=0.3 if (with_dropout and num_layers > 1 and not packed
                            and rng.random() < 0.3) else 0.0,
            seed=rng.randrange(2 ** 31)))
    return cases


def torch_module(case: Case) -> nn.RNNBase:
    """torch's own module for the case, float64, initialised from the case's seed."""
    torch.manual_seed(case.seed)
    kw = dict(num_layers=case.num_layers, bias=case.bias, batch_first=case.batch_first,
              dropout=case.dropout, bidirectional=case.bidirectional, dtype=torch.float64)
    if case.cell == "LSTM":
        return nn.LSTM(case.I, case.H, proj_size=case.proj_size, **kw)
    if case.cell == "GRU":
        return nn.GRU(case.I, case.H, **kw)
    return nn.RNN(case.I, case.H, nonlinearity=case.cell[4:].lower(), **kw)


def _inputs(case: Case, dtype):
    """Float64 input, lengths and states, rounded to dtype (so every run sees the same values)."""
    g = torch.Generator().manual_seed(case.seed + 1)
    D = 2 if case.bidirectional else 1
    H_out = case.proj_size or case.H

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).double()

    x = rand(case.B, case.T, case.I) if case.batch_first else rand(case.T, case.B, case.I)
    if case.unbatched:
        x = x[:, 0] if not case.batch_first else x[0]
    lengths = None
    if case.packed:
        lengths = torch.randint(1, case.T + 1, (case.B,), generator=g)
        lengths[torch.randint(0, case.B, (1,), generator=g)] = case.T
        if case.packed == "sorted":
            lengths = lengths.sort(descending=True).values
    states = []
    if case.with_hx:
        batch = () if case.unbatched else (case.B,)
        states.append(rand(case.num_layers * D, *batch, H_out))
        if case.cell == "LSTM":
            states.append(rand(case.num_layers * D, *batch, case.H))
    return x, lengths, states


def run(module: nn.Module, case: Case, dtype, device="cpu") -> Dict[str, torch.Tensor]:
    """Forward and backward of `module` on the case's inputs in `dtype` on `device`.
    Returns every checked tensor, as float64 on the CPU."""
    module = copy.deepcopy(module).to(device=device, dtype=dtype).train(case.training)
    native = contextlib.nullcontext()
    if not case.training and torch.device(device).type == "cuda" \
            and isinstance(module, nn.RNNBase) and not hasattr(module, "backend"):
        # cuDNN saves nothing for a backward in eval mode ("cudnn RNN backward can only be
        # called in training mode"). Without dropout, train mode is the same computation;
        # with it, torch's native CUDA kernels run eval mode with a backward.
        if module.dropout == 0:
            module.train()
        else:
            native = torch.backends.cudnn.flags(enabled=False)
    x, lengths, states = _inputs(case, dtype)
    x = x.to(device=device, dtype=dtype).requires_grad_()
    states = [s.to(device=device, dtype=dtype).requires_grad_() for s in states]
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=case.batch_first,
                                   enforce_sorted=case.packed == "sorted")
    hx = None if not states else (tuple(states) if case.cell == "LSTM" else states[0])
    torch.manual_seed(case.seed + 2)  # the dropout and regularisation masks
    with native:
        out, state = module(inp, hx)
    h_n, c_n = state if case.cell == "LSTM" else (state, None)
    result = {"output": out.data if isinstance(out, PackedSequence) else out, "h_n": h_n}
    if c_n is not None:
        result["c_n"] = c_n
    g = torch.Generator().manual_seed(case.seed + 3)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t)).sum()
               for t in result.values())
    params = dict(module.named_parameters())
    wrt = {"grad_input": x, **{f"grad_{n}": s for n, s in zip(("h_0", "c_0"), states)},
           **{f"grad_{n}": p for n, p in params.items()}}
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    for name, grad in zip(wrt, grads):
        t = wrt[name]
        result[name] = grad if grad is not None else torch.zeros_like(t)
    return {k: v.detach().to("cpu", torch.float64) for k, v in result.items()}


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return (a - b).abs().max().item()


@dataclass
class Result:
    case: Case
    backend: str
    dtype: torch.dtype
    errors: Dict[str, float]       # backend's max abs error against the float64 truth
    torch_errors: Dict[str, float]  # torch's own, same dtype and device

    def bound(self, name: str) -> float:
        return 2 * self.torch_errors[name] + ATOL[self.dtype]

    @property
    def worst_ratio(self) -> float:
        """max over tensors of error / bound; the case passes when it is <= 1 (NaN fails)."""
        ratios = [self.errors[k] / self.bound(k) for k in self.errors]
        return float("nan") if any(r != r for r in ratios) else max(ratios)

    @property
    def ok(self) -> bool:
        return self.worst_ratio <= 1.0

    def failures(self) -> List[str]:
        return [f"{k}: err {self.errors[k]:.3g} > bound {self.bound(k):.3g}"
                for k in self.errors if not self.errors[k] <= self.bound(k)]


def check(case: Case, backend: str, dtype=torch.float64, device="cpu") -> Result:
    """Run the case through fused_rnn with `backend` and through torch, both in dtype on device,
    and measure both against the float64 CPU truth."""
    ref = torch_module(case)
    rounded = copy.deepcopy(ref).to(dtype).double()
    if case.reg is not None or case.layer_norm:
        base = convert(copy.deepcopy(rounded), backend="reference")
        if case.layer_norm:
            _add_layer_norm(base, case.seed, dtype)

        def fused(name):
            module = copy.deepcopy(base)
            module.backend = name
            if case.reg is not None:
                module.regularization = case.reg
            return module
        truth = run(fused("reference"), case, torch.float64, device)
        theirs = run(fused("reference"), case, dtype, device)
        ours = run(fused(backend), case, dtype, device)
        return _result(case, backend, dtype, ours, truth, theirs)
    if case.dropout and torch.device(device).type != "cpu":
        raise ValueError(f"case: dropout in training draws different masks on {device} than in "
                         f"the CPU truth; use random_cases(with_dropout=False) there")
    truth = run(rounded, case, torch.float64, "cpu")
    ours = run(convert(copy.deepcopy(rounded), backend=backend), case, dtype, device)
    theirs = run(rounded, case, dtype, device)
    return _result(case, backend, dtype, ours, truth, theirs)


def _add_layer_norm(module, seed: int, dtype):
    """Makes a fused module a LayerNorm cell with random gains (about 1) and biases (about 0),
    rounded to dtype: at their initial 1 and 0 a wrong γ or β would go unnoticed."""
    module._add_layer_norm()
    g = torch.Generator().manual_seed(seed + 4)
    with torch.no_grad():
        for name in module._layer_norm_names:
            p = module.get_parameter(name)
            r = torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5
            p.copy_((r + 1.0 if "weight" in name else r).to(dtype).double())


def _result(case, backend, dtype, ours, truth, theirs) -> Result:
    if set(ours) != set(truth):
        raise AssertionError(f"{backend} returned {sorted(ours)}, torch {sorted(truth)}")
    return Result(case, backend, dtype, {k: _max_err(ours[k], truth[k]) for k in truth},
                  {k: _max_err(theirs[k], truth[k]) for k in truth})


def compare_backends(case: Case, a: str, b: str, dtype=torch.float64, device="cpu"
                     ) -> Dict[str, float]:
    """Max abs difference of every checked tensor between backends a and b on the same inputs."""
    ref = torch_module(case)
    modules = [convert(copy.deepcopy(ref), backend=name) for name in (a, b)]
    if case.reg is not None:
        for module in modules:
            module.regularization = case.reg
    ra, rb = (run(module, case, dtype, device) for module in modules)
    return {k: _max_err(ra[k], rb[k]) for k in ra}


def compare_cells(base, backend: str, device="cpu", input_size: int = 6,
                  hidden_size: int = 13) -> float:
    """Max abs difference, over the outputs and the gradients of the input, the state and every
    parameter, between torch's cell `base` (nn.LSTMCell/GRUCell/RNNCell) and a copy converted to
    `backend`, in float64 on the same inputs."""
    ref = base(input_size, hidden_size, dtype=torch.float64, device=device)
    ours = convert(copy.deepcopy(ref), backend)
    results = []
    for module in (ours, ref):
        x = torch.randn(5, input_size, dtype=torch.float64, device=device,
                        generator=torch.Generator(device).manual_seed(1)).requires_grad_()
        hx = torch.randn(5, hidden_size, dtype=torch.float64, device=device,
                         generator=torch.Generator(device).manual_seed(2)).requires_grad_()
        state = (hx, hx.flip(0) * 0.5) if isinstance(ref, nn.LSTMCell) else hx
        out = module(x, state)
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=device)
                    .view_as(o)).sum() for o in outs)
        grads = torch.autograd.grad(loss, [x, hx] + list(module.parameters()))
        results.append([t.detach() for t in outs + tuple(grads)])
    return max(_max_err(u, v) for u, v in zip(*results))


def autocast_run(backend: str, cell: str):
    """A 2-layer nn.<cell> (64 -> 128), or an nn.<cell> for "LSTMCell"/"GRUCell", and a copy
    converted to `backend`, run on the same input under torch.autocast("cuda",
    dtype=torch.bfloat16). Returns (ours, expected, our module). torch runs its layers through
    cuDNN in float16 there (its autocast wrapper casts to half whatever dtype autocast names),
    and its cells in bfloat16; the fused modules follow it (functional._autocast_dtype)."""
    torch.manual_seed(0)
    is_cell = cell.endswith("Cell")
    ref = getattr(nn, cell)(64, 128, **({} if is_cell else {"num_layers": 2})).cuda()
    ours = convert(copy.deepcopy(ref), backend)
    x = torch.randn(*((4,) if is_cell else (20, 4)), 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected = ref(x)
        got = ours(x)
    if isinstance(expected, tuple):  # (output, state) of a layer, (h, c) of an LSTMCell
        expected, got = expected[0], got[0]
    return got, expected, ours
