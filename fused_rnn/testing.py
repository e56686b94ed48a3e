"""Parity harness shared by `fused-rnn parity` and the test suite.

The rule: on the same inputs, compare each backend and torch's own implementation in the same
dtype against a float64 ground truth computed by torch on the CPU. For every checked tensor,
  accuracy: RMS error <= 2 x torch's RMS error + atol   (RMS_FACTOR)
  outliers: max abs error <= 4 x torch's max abs error + atol   (MAX_FACTOR)
The RMS is a statistic of all the tensor's elements, so it does not hinge on one element's
rounding the way the max alone did (a 2x bound on the max failed on some CPUs and not others);
the looser max bound still catches a few wrong elements. atol = ATOL[dtype] x max(1, RMS of the
float64 truth) outside float64: rounding errors are relative, and gradients summed over T·B
rows reach RMS 45 in the CLI's random cases, where a fixed 1e-6 is below one float32 ulp
(measured: scripts/parity_distribution.py). In float64 on the CPU,
torch is the truth itself, so the bound is the atol alone: 1e-10, not scaled. The bf16/fp16
atol (1e-3) is a placeholder until it is measured from cuDNN's error distribution on a GPU
(docs/testing.md, "The parity rule").

Inputs and weights are rounded to the tested dtype first, so the truth is exact for the values
each run sees. Checked: the output, h_n, c_n and the gradients of the input, h_0, c_0 and
every parameter, through a loss with random (never all-ones) cotangents.

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
from .ops.cells import CELLS
from .ops.regularize import Regularization

# The rule's factors: RMS error <= RMS_FACTOR x torch's + atol (accuracy), max error <=
# MAX_FACTOR x torch's + atol (outliers).
RMS_FACTOR = 2.0
MAX_FACTOR = 4.0
# The atol of the rule, per dtype. Half types only run on the GPU (not yet measured there).
ATOL = {torch.float64: 1e-10, torch.float32: 1e-6, torch.bfloat16: 1e-3, torch.float16: 1e-3}
# dtypes whose atol scales with the float64 truth's RMS, atol x max(1, rms(truth)).
ATOL_SCALED = frozenset({torch.float32, torch.bfloat16, torch.float16})


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


def _rms_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return _rms(a - b)


def _rms(a: torch.Tensor) -> float:
    """Root mean square of the elements (0 for an empty tensor; NaN if any element is NaN)."""
    if a.numel() == 0:
        return 0.0
    return a.double().square().mean().sqrt().item()


def atol(dtype: torch.dtype, truth_rms: float = 0.0) -> float:
    """The atol of the rule for a tensor whose float64 truth has RMS `truth_rms`:
    ATOL[dtype], times max(1, truth_rms) outside float64 (see ATOL_SCALED)."""
    scale = max(1.0, truth_rms) if dtype in ATOL_SCALED else 1.0
    return ATOL[dtype] * scale


@dataclass
class Result:
    """One case's errors against the float64 truth, per checked tensor, and the rule's verdict.

    errors / torch_errors: max abs errors of the backend / of torch (or of the reference, for
    cases torch has no twin of), same dtype and device; rms_errors / torch_rms_errors: their
    root-mean-square errors; truth_rms: the RMS of the float64 truth, which scales the atol.
    A tensor passes when both rms_ratio and max_ratio are <= 1 (NaN fails)."""
    case: Case
    backend: str
    dtype: torch.dtype
    errors: Dict[str, float]       # backend's max abs error against the float64 truth
    torch_errors: Dict[str, float]  # torch's own, same dtype and device
    rms_errors: Dict[str, float]
    torch_rms_errors: Dict[str, float]
    truth_rms: Dict[str, float]

    def atol(self, name: str) -> float:
        return atol(self.dtype, self.truth_rms.get(name, 0.0))

    def rms_bound(self, name: str) -> float:
        """RMS_FACTOR x torch's RMS error + atol."""
        return RMS_FACTOR * self.torch_rms_errors[name] + self.atol(name)

    def max_bound(self, name: str) -> float:
        """MAX_FACTOR x torch's max error + atol."""
        return MAX_FACTOR * self.torch_errors[name] + self.atol(name)

    def rms_ratio(self, name: str) -> float:
        return self.rms_errors[name] / self.rms_bound(name)

    def max_ratio(self, name: str) -> float:
        return self.errors[name] / self.max_bound(name)

    def ratios(self) -> Dict[str, Dict[str, float]]:
        """{tensor: {"rms": rms_ratio, "max": max_ratio}}."""
        return {k: {"rms": self.rms_ratio(k), "max": self.max_ratio(k)} for k in self.errors}

    def worst(self):
        """(ratio, tensor, statistic) of the largest ratio; NaN first: NaN fails."""
        items = [(r, k, stat) for k, rs in self.ratios().items() for stat, r in rs.items()]
        nan = [item for item in items if item[0] != item[0]]
        return nan[0] if nan else max(items, default=(0.0, "", ""))

    @property
    def worst_ratio(self) -> float:
        """max over tensors of both ratios, error / bound; the case passes when it is <= 1
        (NaN fails)."""
        return self.worst()[0]

    @property
    def ok(self) -> bool:
        return self.worst_ratio <= 1.0

    def failures(self) -> List[str]:
        """One line per failed statistic, e.g. "h_n: err (rms) 3e-05 > bound 2.1e-05 = 2 x
        torch's 1e-05 + atol 1e-06"."""
        out = []
        for k in self.errors:
            a = self.atol(k)
            if not self.rms_ratio(k) <= 1.0:
                out.append(f"{k}: err (rms) {self.rms_errors[k]:.3g} > bound "
                           f"{self.rms_bound(k):.3g} = {RMS_FACTOR:g} x torch's "
                           f"{self.torch_rms_errors[k]:.3g} + atol {a:.3g}")
            if not self.max_ratio(k) <= 1.0:
                out.append(f"{k}: err (max) {self.errors[k]:.3g} > bound "
                           f"{self.max_bound(k):.3g} = {MAX_FACTOR:g} x torch's "
                           f"{self.torch_errors[k]:.3g} + atol {a:.3g}")
        return out


def compare(ours: Dict[str, torch.Tensor], truth: Dict[str, torch.Tensor],
            theirs: Dict[str, torch.Tensor], dtype, case: Optional[Case] = None,
            backend: str = "") -> Result:
    """The rule applied to tensors already computed: `ours` and `theirs` (torch's, or the
    reference's, in dtype) against the float64 `truth`, keyed alike."""
    if set(ours) != set(truth) or set(theirs) != set(truth):
        raise AssertionError(f"{backend or 'ours'} returned {sorted(ours)}, torch "
                             f"{sorted(theirs)}, the truth {sorted(truth)}")
    t = {k: v.detach().to("cpu", torch.float64) for k, v in truth.items()}
    a = {k: ours[k].detach().to("cpu", torch.float64) for k in t}
    b = {k: theirs[k].detach().to("cpu", torch.float64) for k in t}
    return Result(case, backend, dtype,
                  errors={k: _max_err(a[k], t[k]) for k in t},
                  torch_errors={k: _max_err(b[k], t[k]) for k in t},
                  rms_errors={k: _rms_err(a[k], t[k]) for k in t},
                  torch_rms_errors={k: _rms_err(b[k], t[k]) for k in t},
                  truth_rms={k: _rms(t[k]) for k in t})


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


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """x rounded to tf32 (10-bit mantissa) as the tensor cores' cvt.rna.tf32.f32 does: to
    nearest, ties away from zero; Inf and NaN kept. In x's dtype (through float32)."""
    bits = x.float().view(torch.int32)
    finite = (bits & 0x7F800000) != 0x7F800000
    r = torch.where(finite, (bits + 0x1000) & -0x2000, bits)
    return r.view(torch.float32).to(x.dtype)


@contextlib.contextmanager
def tf32_products():
    """Within the block the reference backend computes its recurrent product h.W_hh^T on tf32
    operands (both rounded by tf32_round): the twin, on any device, of cuDNN's fp32 RNN with
    TF32 allowed, which torch has none of on the CPU. A twin of the forward: the gradient
    passes the rounding straight through, so its backward products take dgates unrounded
    (the cluster backward rounds them; the rule's factor 2 covers the difference measured)."""
    from .ops import cells
    plain = cells.recurrent_gates

    def rounded(h, w_hh, b_hh, ln=None):
        def r(x):
            return x + (tf32_round(x) - x).detach()
        return plain(r(h), r(w_hh), b_hh, ln)
    cells.recurrent_gates = rounded
    try:
        yield
    finally:
        cells.recurrent_gates = plain


def check_tf32(case: Case, backend: str, device="cpu") -> Result:
    """As check in float32 with torch's TF32 flag for RNNs on (the caller sets it), torch being
    the reference backend under tf32_products (tensor-core products in tf32)."""
    rounded = copy.deepcopy(torch_module(case)).float().double()
    truth = run(rounded, case, torch.float64, "cpu")
    ours = run(convert(copy.deepcopy(rounded), backend=backend), case, torch.float32, device)
    with tf32_products():
        theirs = run(convert(copy.deepcopy(rounded), backend="reference"), case, torch.float32,
                     device)
    return _result(case, backend, torch.float32, ours, truth, theirs)


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
    return compare(ours, truth, theirs, dtype, case, backend)


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
