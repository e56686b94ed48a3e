"""RNN regularisation options: their checks, their masks and the exact step semantics that the
reference (ops/naive.py) and the fused kernels (Triton, CUDA) all implement.

Masks are drawn here, from torch's default generator on the input's device, all of them before
the first layer runs and in a fixed order (layer, then direction, then x, w, h, g, c, zc, zh).
So a fixed seed gives every backend on the same device the same masks (the CPU's and a GPU's
generators differ). Batch rows are those of the padded layout, which keeps the caller's batch
order (fused_rnn/_packing.py), packed input included. Each is a uint8 tensor (1 keeps a unit, or
for zoneout, keeps the previous value); a dropout mask m acts as m / (1 - p).

One step at time t of a layer and direction, batch row b, hidden unit j (k: a unit of the state
h, which is the projection's output for an LSTM with proj_size). Where no mask is drawn its
factor is 1 (dropouts) or the constant weight zc_p / zh_p (zoneout: p in eval mode, 0 if off):

  h_in[b,k]  = h_{t-1}[b,k] · hm[b,k]        hm = h[b,k]·h_scale     variational (recurrent)
  gates      = x_t·W_ihᵀ + b_ih + h_in·W_hhᵀ + b_hh   (x_t already masked by x[b,:]·x_scale)
  LSTM:  g   = tanh(g_pre) · gm               gm = g[t,b,j]·g_scale   recurrent dropout
         cu  = cm · (f·c_{t-1} + i·g)          cm = c[b,j]·c_scale     rnndrop (c_scale = 1)
         c_t = wc·c_{t-1} + (1 - wc)·cu        wc = zc[t,b,j] or zc_p  zoneout (cell)
         h̃   = o·tanh(cu)   (then h̃ = h̃·W_hrᵀ with a projection)
  GRU:   n   = tanh(n_pre) · gm;  h̃ = n + z·(h_{t-1} - n)   (the unmasked h_{t-1})
  RNN:   h̃   = act(pre)
  all:   h_t = wh·h_{t-1} + (1 - wh)·h̃         wh = zh[t,b,k] or zh_p  zoneout (hidden)

The zoneout cell update follows Krueger et al. (2017), eq. for c_t and h_t: h̃ uses the updated
cell before zoneout. RNNDrop's mask is not rescaled by 1/(1-p): it holds for the whole sequence,
so a rescaled kept unit would grow as (f/(1-p))^t (with a forget gate near 1 and p = 0.5, inf
within 200 steps; Semeniuta et al. 2016, sec. 3): a kept unit runs exactly as in eval mode. weight_drop draws one (G·H, HK) mask per layer and direction and forward
call and uses W_hh·w·w_scale for every step and batch row. A step past a sequence's end (packed
input) keeps h and c unchanged whatever the masks say.

What the kernels save for the backward does not change: LSTM i, f, g_pre-activation tanh (before
gm), o; GRU r, z, tanh(n_pre) (before gm), h·W_hnᵀ + b_hn; RNN h̃ (before zoneout).
"""
import numbers
from dataclasses import dataclass, fields
from typing import List, NamedTuple, Optional

import torch
from torch import Tensor

# Option name -> the paper it follows (README's table repeats this).
PAPERS = {
    "variational_dropout": "Gal & Ghahramani 2016, A Theoretically Grounded Application of "
                           "Dropout in Recurrent Neural Networks",
    "weight_drop": "Wan et al. 2013, DropConnect, as AWD-LSTM applies it (Merity et al. 2017): "
                   "one mask per call, not per example",
    "recurrent_dropout": "Semeniuta et al. 2016, Recurrent Dropout without Memory Loss",
    "rnndrop": "Moon et al. 2015, RNNDROP",
    "zoneout": "Krueger et al. 2017, Zoneout",
}


@dataclass(frozen=True)
class Regularization:
    """Regularisation options of an RNN (each a probability; 0.0 is off), active in training
    mode; in eval mode each is a no-op except zoneout, which uses its expectation."""
    variational_dropout: float = 0.0
    weight_drop: float = 0.0
    recurrent_dropout: float = 0.0
    rnndrop: float = 0.0
    zoneout_cell: float = 0.0
    zoneout_hidden: float = 0.0

    @property
    def any(self) -> bool:
        # The fields are the instance's __dict__ (a dataclass without slots): read on every
        # layer call, so not through dataclasses.fields (about 3 us a call).
        return any(self.__dict__.values())


def check_options(mode: str, options: Optional[Regularization]) -> Regularization:
    """The options with each probability checked: dropouts in [0, 1), zoneout in [0, 1]; rnndrop
    and zoneout_cell need an LSTM (a cell state), recurrent_dropout a gated candidate (LSTM's
    g, GRU's n)."""
    if options is None:
        return Regularization()
    if not isinstance(options, Regularization):
        raise TypeError(f"regularization: expected a fused_rnn.Regularization, got "
                        f"{type(options).__name__}")
    for f in fields(options):
        p = getattr(options, f.name)
        top = 1 if f.name.startswith("zoneout") else 1 - 1e-12
        bound = "[0, 1]" if top == 1 else "[0, 1)"
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise ValueError(f"{f.name}: expected a float probability in {bound}, got "
                             f"{type(p).__name__} {p!r}")
        if not 0 <= p <= top:
            raise ValueError(f"{f.name}: expected a probability in {bound}, got {p!r}")
    if mode != "LSTM":
        for name in ("rnndrop", "zoneout_cell"):
            if getattr(options, name):
                raise ValueError(f"{name}: applies to an LSTM's cell state; {mode} has none "
                                 f"(got {name}={getattr(options, name)})")
    if mode.startswith("RNN") and options.recurrent_dropout:
        raise ValueError(f"recurrent_dropout: drops a gated candidate (LSTM's g, GRU's n); "
                         f"{mode} has none (got {options.recurrent_dropout})")
    return options


class StepMasks(NamedTuple):
    """What a layer's recurrence applies at each step (see the module docstring). Tensors are
    uint8 and contiguous, or None; shapes for gi (T, B, G·H) and a state width HK."""
    h: Optional[Tensor] = None    # (B, HK) variational dropout of h_{t-1} into W_hh
    g: Optional[Tensor] = None    # (T, B, H) recurrent dropout of the candidate
    c: Optional[Tensor] = None    # (B, H) rnndrop of the cell update (LSTM)
    zc: Optional[Tensor] = None   # (T, B, H) zoneout of the cell (1: keep c_{t-1}) (LSTM)
    zh: Optional[Tensor] = None   # (T, B, HK) zoneout of the hidden state (1: keep h_{t-1})
    h_scale: float = 1.0
    g_scale: float = 1.0
    c_scale: float = 1.0
    zc_p: float = 0.0             # keep-previous weight where zc is None (eval: p; off: 0)
    zh_p: float = 0.0

    @property
    def active(self) -> bool:
        return any(m is not None for m in self[:5]) or bool(self.zc_p or self.zh_p)

    def scales(self) -> List[float]:
        return [self.h_scale, self.g_scale, self.c_scale, self.zc_p, self.zh_p]

    @classmethod
    def of(cls, tensors, scales) -> "StepMasks":
        """Rebuilt from (tensors[:5], scales()) as the custom ops pass them."""
        return cls(*tensors, *scales)

    def factor(self, name: str, dtype: torch.dtype, t: Optional[int] = None):
        """The multiplier of one mask in dtype (dropouts: m·scale; zoneout: the keep weight):
        a tensor, or a float where the mask is None."""
        m = getattr(self, name)
        if m is None:
            return {"h": 1.0, "g": 1.0, "c": 1.0, "zc": self.zc_p, "zh": self.zh_p}[name]
        m = m if t is None else m[t]
        scale = {"h": self.h_scale, "g": self.g_scale, "c": self.c_scale}.get(name, 1.0)
        return m.to(dtype) * scale


NO_MASKS = StepMasks()


class LayerMasks(NamedTuple):
    """Masks of one layer and direction: on its input (before the hoisted input GEMM), on W_hh,
    and those its recurrence applies per step."""
    x: Optional[Tensor] = None    # (B, I_layer) variational dropout of the layer input
    w: Optional[Tensor] = None    # (G·H, HK) weight_drop of W_hh
    x_scale: float = 1.0
    w_scale: float = 1.0
    step: StepMasks = NO_MASKS


def _keep(shape, p: float, device) -> Tensor:
    """A uint8 mask with P(1) = 1 - p, from torch's default generator for device."""
    return torch.empty(shape, dtype=torch.uint8, device=device).bernoulli_(1.0 - p)


def _zone(shape, p: float, device) -> Tensor:
    """A uint8 zoneout mask with P(1) = p (1: keep the previous value)."""
    return torch.empty(shape, dtype=torch.uint8, device=device).bernoulli_(p)


def draw(options: Regularization, *, training: bool, num_layers: int, num_directions: int,
         T: int, B: int, input_size: int, H: int, HK: int, gates: int, device) -> List[LayerMasks]:
    """The masks of every (layer, direction), in ops/stack.py's order. In eval mode (and for
    options that are off) nothing is drawn; zoneout then uses its expectation p."""
    o = options
    layers = []
    for layer in range(num_layers):
        I = input_size if layer == 0 else num_directions * HK
        for _ in range(num_directions):
            if not training:
                layers.append(LayerMasks(step=StepMasks(zc_p=o.zoneout_cell,
                                                        zh_p=o.zoneout_hidden)))
                continue
            vd, wd, rd, cd = (o.variational_dropout, o.weight_drop, o.recurrent_dropout,
                              o.rnndrop)
            x = _keep((B, I), vd, device) if vd else None
            w = _keep((gates * H, HK), wd, device) if wd else None
            h = _keep((B, HK), vd, device) if vd else None
            g = _keep((T, B, H), rd, device) if rd else None
            c = _keep((B, H), cd, device) if cd else None
            zc = _zone((T, B, H), o.zoneout_cell, device) if o.zoneout_cell else None
            zh = _zone((T, B, HK), o.zoneout_hidden, device) if o.zoneout_hidden else None
            layers.append(LayerMasks(
                x=x, w=w, x_scale=1 / (1 - vd), w_scale=1 / (1 - wd),
                step=StepMasks(h=h, g=g, c=c, zc=zc, zh=zh, h_scale=1 / (1 - vd),
                               g_scale=1 / (1 - rd), c_scale=1.0)))
    return layers


# What a single-step cell (LSTMCell, GRUCell) can take: the options with per-step masks.
CELL_OPTIONS = ("recurrent_dropout", "zoneout_cell", "zoneout_hidden")


def check_cell_options(options: Regularization) -> Regularization:
    """The per-sequence options (variational_dropout, rnndrop) and weight_drop need the
    sequence: a cell call cannot tell where one starts, so cells refuse them."""
    for name in ("variational_dropout", "weight_drop", "rnndrop"):
        if getattr(options, name):
            raise ValueError(f"{name}: needs a whole sequence (one mask per sequence or call); "
                             f"cells take only {', '.join(CELL_OPTIONS)}")
    return options


def draw_cell(options: Regularization, *, training: bool, B: int, H: int,
              device) -> StepMasks:
    """Masks of one cell call (T = 1): recurrent dropout and zoneout only (check_cell_options)."""
    check_cell_options(options)
    return draw(options, training=training, num_layers=1, num_directions=1, T=1, B=B,
                input_size=0, H=H, HK=H, gates=0, device=device)[0].step
