"""torch.compile with fused modules: one graph (fullgraph=True), forward and backward, results
equal to eager. On the CPU the reference and (interpreted) Triton backends, on the GPU the
Triton and CUDA backends under inductor. Dynamo refuses nn.LSTM subclasses unless allow_rnn is
on; fused_rnn.compile turns it on only while the compiled model runs (fused_rnn/_compile.py)."""
import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import fused_rnn
from fused_rnn import backends

CPU_BACKENDS = ["reference"] + (["triton"] if backends.triton_interpreted() else [])
needs_cuda = pytest.mark.gpu


class Tagger(nn.Module):
    """A 2-layer bidirectional fused layer and a linear head, as a user model holds one."""

    def __init__(self, cell, backend):
        super().__init__()
        self.rnn = getattr(fused_rnn, cell)(6, 8, num_layers=2, bidirectional=True,
                                            backend=backend)
        self.head = nn.Linear(16, 3)

    def forward(self, x, hx):
        y, state = self.rnn(x, hx)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(y).tanh().sum() + (h * h).sum()


class Stepper(nn.Module):
    """A fused cell stepped over the time axis in Python, as a decoder does."""

    def __init__(self, cell, backend):
        super().__init__()
        self.cell = getattr(fused_rnn, cell + "Cell")(6, 8, backend=backend)

    def forward(self, x, hx):
        state, total = hx, 0
        for x_t in x:
            state = self.cell(x_t, state)
            h = state[0] if isinstance(state, tuple) else state
            total = total + (h * torch.arange(8, dtype=h.dtype, device=h.device)).sum()
        return total


def _inputs(model, cell, dtype, device, layered):
    torch.manual_seed(1)
    x = torch.randn(5, 3, 6, dtype=dtype, device=device, requires_grad=True)
    shape = (4, 3, 8) if layered else (3, 8)
    hx = torch.randn(shape, dtype=dtype, device=device)
    if cell == "LSTM":
        hx = (hx, torch.randn(shape, dtype=dtype, device=device))
    return x, hx


def _loss_and_grads(fn, model, x, hx):
    loss = fn(x, hx)
    grads = torch.autograd.grad(loss, [x] + list(model.parameters()))
    return [loss] + list(grads)


def _compare(kind, cell, backend, dtype, device, compiler, tol):
    torch._dynamo.reset()
    model = (Tagger if kind == "layer" else Stepper)(cell, backend).to(device, dtype)
    x, hx = _inputs(model, cell, dtype, device, kind == "layer")
    eager = _loss_and_grads(model, model, x, hx)
    counter = CompileCounterWithBackend(compiler)
    compiled = fused_rnn.compile(model, fullgraph=True, backend=counter)
    got = _loss_and_grads(compiled, model, x, hx)
    got_again = _loss_and_grads(compiled, model, x, hx)  # a second call reuses the graph
    assert counter.frame_count == 1, "recompiled or split into several graphs"
    for a, b, c in zip(eager, got, got_again):
        assert torch.allclose(a, b, rtol=tol, atol=tol), (a - b).abs().max()
        assert torch.equal(b, c)
    assert torch._dynamo.config.allow_rnn is False  # left as it was


@pytest.mark.parametrize("kind", ["layer", "cell"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_compile_fullgraph_cpu(backend, cell, kind):
    _compare(kind, cell, backend, torch.float64, "cpu", "aot_eager", 1e-12)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["layer", "cell"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_compile_fullgraph_gpu(backend, cell, kind, dtype):
    # inductor may fuse the head and the loss differently from eager: a few ulps of dtype.
    _compare(kind, cell, backend, dtype, "cuda", "inductor",
             1e-5 if dtype == torch.float32 else 2e-2)


def test_compile_refuses_plain_torch_rnn():
    model = nn.Sequential(nn.Linear(3, 3), nn.GRU(3, 4))
    with pytest.raises(ValueError, match=r"model: .*1 is torch's own; call "
                                         r"fused_rnn.convert\(model\) first"):
        fused_rnn.compile(model)
    fused_rnn.convert(model, "reference")
    assert fused_rnn.compile(model) is not None


def test_torch_compile_needs_allow_rnn():
    """What users see with torch.compile itself (README, torch.compile): Dynamo's refusal,
    and the documented way round it."""
    torch._dynamo.reset()
    model = Tagger("GRU", "reference").double()
    x, hx = _inputs(model, "GRU", torch.float64, "cpu", True)
    with pytest.raises(Exception, match="Attempted to wrap RNN, GRU, or LSTM"):
        torch.compile(model, fullgraph=True, backend="eager")(x, hx)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        got = torch.compile(model, fullgraph=True, backend="eager")(x, hx)
    assert torch.allclose(got, model(x, hx), rtol=1e-12, atol=0)


def test_backend_checks_are_constants_for_dynamo():
    """backends marks its availability checks as torch.compiler.assume_constant_result does,
    without importing Dynamo; if torch changes how it marks them, this fails."""
    marked = torch.compiler.assume_constant_result(lambda: None)
    assert marked._dynamo_marked_constant is True
    assert backends.why_not._dynamo_marked_constant is True
    assert backends._cuda_extension_loads._dynamo_marked_constant is True
