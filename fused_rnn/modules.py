"""Drop-in subclasses of nn.LSTM/GRU/RNN and their cells.

They add the `backend` choice and the regularisation options (ops/regularize.py); constructor
arguments, parameter names, shapes, initialisation and state_dict are nn.LSTM's own
(super().__init__ does all of it), and forward hands the parameters to fused_rnn.functional,
which checks the arguments and picks the backend.
"""
import torch.nn as nn
from torch import Tensor

from . import backends
from . import functional as F
from .ops.cells import CELLS
from .ops.regularize import Regularization, check_cell_options, check_options

_REG_DOC = """
    Regularisation, each a probability, 0.0 (off) by default, active in training mode only
    (in eval mode each is a no-op, except zoneout, which then uses its expectation):
      variational_dropout: one mask per sequence on each layer's input and on h_{t-1} (Gal &
        Ghahramani 2016).
      weight_drop: DropConnect on W_hh, one mask per forward call (Wan et al. 2013; AWD-LSTM).
      recurrent_dropout: dropout of the candidate (LSTM g, GRU n) before it enters the state
        (Semeniuta et al. 2016). Not for RNN.
      rnndrop: one 0/1 mask per sequence on the LSTM cell update, not rescaled (Moon et al.
        2015). LSTM only.
      zoneout: per unit and step, keep the previous value instead of the update (Krueger et
        al. 2017); sets zoneout_cell (LSTM) and zoneout_hidden unless they are given.
    layer_norm=True (LSTM, GRU): a LayerNorm cell (Ba et al. 2016) with its own gains and
      biases (parameters layer_norm_{ih,hh,c}_{weight,bias}_l<k>); runs on backend "triton"
      (not with proj_size; "auto" takes it on CUDA) or "reference".
    The masks come from torch's default generator, so a fixed seed gives every backend on the
    same device the same ones; backend="cudnn" takes none of these options.
"""


def _regularization(mode: str, variational_dropout=0.0, weight_drop=0.0, recurrent_dropout=0.0,
                    rnndrop=0.0, zoneout=0.0, zoneout_cell=None,
                    zoneout_hidden=None) -> Regularization:
    """The options checked for `mode`; zoneout fills in zoneout_cell (LSTM) and zoneout_hidden
    where they are None."""
    if zoneout_cell is None:
        zoneout_cell = zoneout if mode == "LSTM" else 0.0
    if zoneout_hidden is None:
        zoneout_hidden = zoneout
    return check_options(mode, Regularization(variational_dropout, weight_drop,
                                              recurrent_dropout, rnndrop, zoneout_cell,
                                              zoneout_hidden))


def _mode_of(module) -> str:
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return "LSTM"
    if isinstance(module, (nn.GRU, nn.GRUCell)):
        return "GRU"
    if isinstance(module, nn.RNNBase):  # nn.RNN keeps the mode its constructor chose
        return module.mode
    return "RNN_TANH" if module.nonlinearity == "tanh" else "RNN_RELU"


class _Backend:
    """The `backend` keyword and attribute: a checked backend name (see fused_rnn.backends).
    Every other constructor argument goes to the torch.nn class unchanged."""

    def __init__(self, *args, backend: str = "auto", variational_dropout: float = 0.0,
                 weight_drop: float = 0.0, recurrent_dropout: float = 0.0, rnndrop: float = 0.0,
                 zoneout: float = 0.0, zoneout_cell=None, zoneout_hidden=None,
                 layer_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.regularization = _regularization(
            _mode_of(self), variational_dropout, weight_drop, recurrent_dropout, rnndrop,
            zoneout, zoneout_cell, zoneout_hidden)
        if not isinstance(layer_norm, bool):
            raise ValueError(f"layer_norm: expected a bool, got {layer_norm!r}")
        if layer_norm and _mode_of(self) not in ("LSTM", "GRU"):
            raise ValueError(f"layer_norm: LayerNorm cells are LSTM and GRU (Ba et al. 2016), "
                             f"got {type(self).__name__}")
        self._layer_norm_names = []
        if layer_norm:
            self._add_layer_norm()

    @property
    def layer_norm(self) -> bool:
        """Whether this is a LayerNorm LSTM/GRU (its gains and biases are parameters)."""
        return bool(self.__dict__.get("_layer_norm_names"))

    def _add_layer_norm(self):
        """Per layer and direction: LayerNorm gains (ones) and biases (zeros) of the input and
        recurrent gate pre-activations (G·H each) and, for LSTM, of the cell (H)."""
        w = self.weight_ih_l0 if isinstance(self, nn.RNNBase) else self.weight_ih
        names = self.__dict__.setdefault("_layer_norm_names", [])  # absent after convert()
        parts = ("ih", "hh", "c") if _mode_of(self) == "LSTM" else ("ih", "hh")
        if isinstance(self, nn.RNNBase):
            D = 2 if self.bidirectional else 1
            tags = [f"_l{k // D}" + ("_reverse" if k % D else "")
                    for k in range(self.num_layers * D)]
        else:
            tags = [""]
        for tag in tags:
            for part in parts:
                n = w.shape[0] if part != "c" else self.hidden_size
                for kind in ("weight", "bias"):
                    name = f"layer_norm_{part}_{kind}{tag}"
                    self.register_parameter(name, nn.Parameter(w.new_empty(n)))
                    names.append(name)
        self._reset_layer_norm()

    def _reset_layer_norm(self):
        for name in self.__dict__.get("_layer_norm_names", []):
            nn.init.ones_(getattr(self, name)) if "weight" in name else \
                nn.init.zeros_(getattr(self, name))

    def reset_parameters(self):
        super().reset_parameters()
        self._reset_layer_norm()  # nn.RNNBase's reset draws every parameter uniformly

    def _layer_norm_weights(self):
        names = self.__dict__.get("_layer_norm_names")
        return [getattr(self, name) for name in names] if names else None

    @property
    def regularization(self) -> Regularization:
        """The regularisation options (a frozen fused_rnn.Regularization); assign a new one to
        change them."""
        return self.__dict__.get("_regularization") or Regularization()

    @regularization.setter
    def regularization(self, reg: Regularization):
        reg = check_options(_mode_of(self), reg)
        if isinstance(self, nn.RNNCellBase):
            check_cell_options(reg)
        self.__dict__["_regularization"] = reg

    @property
    def backend(self) -> str:
        return self.__dict__.get("_backend", "auto")

    @backend.setter
    def backend(self, name: str):
        self.__dict__["_backend"] = backends.check_name(name)

    def extra_repr(self) -> str:
        reg = "".join(f", {k}={v}" for k, v in vars(self.regularization).items() if v)
        ln = ", layer_norm=True" if self.layer_norm else ""
        return f"{super().extra_repr()}, backend={self.backend!r}{reg}{ln}"


class _FusedRNNBase(_Backend):
    def forward(self, input, hx=None):
        """As nn.LSTM/GRU/RNN.forward: returns (output, (h_n, c_n)) for LSTM, else (output, h_n)."""
        weights = _rnn_weights(self)
        mode = self.mode
        if (type(input) in F._FAST_INPUTS and mode in CELLS and not self.regularization.any
                and not self.__dict__.get("_layer_norm_names")):
            # A plain call: functional's fast path, without the keyword plumbing below (on a
            # 2-core CPU each Python layer between here and the binding costs 1-3 us).
            fast = F._fast_stack(mode, input, weights, hx, self.bias, self.num_layers,
                                 self.batch_first, self.dropout, self.training,
                                 self.bidirectional, self.proj_size, self.backend)
            if fast is not None:
                out, h_n, c_n = fast
                return (out, (h_n, c_n)) if mode == "LSTM" else (out, h_n)
        kw = dict(bias=self.bias, num_layers=self.num_layers, batch_first=self.batch_first,
                  dropout=float(self.dropout), training=self.training,
                  bidirectional=self.bidirectional, backend=self.backend,
                  regularization=self.regularization)
        if self.mode == "LSTM":
            return F.lstm(input, weights, hx, proj_size=self.proj_size,
                          layer_norm=self._layer_norm_weights(), **kw)
        if self.mode == "GRU":
            return F.gru(input, weights, hx, layer_norm=self._layer_norm_weights(), **kw)
        # As nn.RNN: forward follows `mode`, which __init__ set from nonlinearity; assigning
        # nonlinearity afterwards changes neither (torch 2.13).
        if self.mode not in _RNN_NONLINEARITY:
            raise ValueError(f"mode: expected 'RNN_TANH' or 'RNN_RELU' for RNN, got {self.mode!r}")
        return F.rnn(input, weights, hx, nonlinearity=_RNN_NONLINEARITY[self.mode], **kw)


_RNN_NONLINEARITY = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}


class LSTM(_FusedRNNBase, nn.LSTM):
    """nn.LSTM with fused_rnn backends. Same arguments as nn.LSTM, plus backend="auto" and
    the regularisation options below.
    """
    __doc__ = (__doc__ or "") + _REG_DOC  # (no docstrings under python -OO)


class GRU(_FusedRNNBase, nn.GRU):
    """nn.GRU with fused_rnn backends. Same arguments as nn.GRU, plus backend="auto" and
    the regularisation options below.
    """
    __doc__ = (__doc__ or "") + _REG_DOC  # (no docstrings under python -OO)


class RNN(_FusedRNNBase, nn.RNN):
    """nn.RNN with fused_rnn backends. Same arguments as nn.RNN, plus backend="auto" and
    the regularisation options below.
    """
    __doc__ = (__doc__ or "") + _REG_DOC  # (no docstrings under python -OO)


class _FusedCellBase(_Backend):
    def forward(self, input, hx=None):
        """As nn.LSTMCell/GRUCell/RNNCell.forward: (h', c') for LSTMCell, else h'."""
        reg = self.regularization
        # Only the regularisation options differ between train and eval (as torch's cells,
        # whose forward never reads self.training): without them, the mode is not looked at.
        training = self.training if reg.any else False
        if isinstance(self, nn.LSTMCell):
            mode = "LSTM"
        elif isinstance(self, nn.GRUCell):
            mode = "GRU"
        else:  # as nn.RNNCell, read on every call
            mode = F._rnn_mode(self.nonlinearity)
        if type(input) is Tensor and not reg.any and not self.__dict__.get("_layer_norm_names"):
            # A plain step: functional's fast path directly (see _FusedRNNBase.forward).
            fast = F._fast_cell(mode, input, hx, *_cell_weights(self), self.backend)
            if fast is not None:
                return fast if mode == "LSTM" else fast[0]
        h, c = F._cell(mode, input, hx, self.weight_ih, self.weight_hh, self.bias_ih,
                       self.bias_hh, self.backend, training, reg,
                       self._layer_norm_weights() if mode in ("LSTM", "GRU") else None,
                       labels=_CELL_PARAMS)
        return (h, c) if mode == "LSTM" else h


_CELL_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _rnn_weights(module) -> list:
    """The flat weights (nn.LSTM._flat_weights order) as they are now: from the parameter
    table (nn.Module's attribute lookup costs 1.4 us a name on a 2-core CPU; _flat_weights
    itself may be stale under torch.func.functional_call, which is why nn.LSTM.forward refreshes
    it by name). A weight moved out of the table (a parametrization, weight_norm) is looked up
    as an attribute, as nn.LSTM does."""
    p = module._parameters
    try:
        return [p[name] for name in module._flat_weights_names]
    except KeyError:
        return [getattr(module, name) for name in module._flat_weights_names]


def _cell_weights(module):
    """weight_ih, weight_hh, bias_ih, bias_hh (None without bias). From the parameter table
    where they are there: nn.Module's attribute lookup costs 1.4 us a name on a 2-core CPU,
    more than a quarter of a decode step's host time. A weight moved out of the table (a
    parametrization, weight_norm) is looked up as an attribute, as nn.LSTMCell does."""
    p = module._parameters
    try:
        return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
    except KeyError:
        return tuple(getattr(module, name) for name in _CELL_PARAMS)


class LSTMCell(_FusedCellBase, nn.LSTMCell):
    """nn.LSTMCell with fused_rnn backends, plus backend="auto" and recurrent_dropout, zoneout,
    zoneout_cell, zoneout_hidden (masks drawn per call; see fused_rnn.LSTM)."""


class GRUCell(_FusedCellBase, nn.GRUCell):
    """nn.GRUCell with fused_rnn backends, plus backend="auto" and recurrent_dropout, zoneout
    (zoneout_hidden), masks drawn per call."""


class RNNCell(_FusedCellBase, nn.RNNCell):
    """nn.RNNCell with fused_rnn backends, plus backend="auto" and zoneout (zoneout_hidden),
    masks drawn per call."""


_FUSED = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN,
          nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell}


def convert(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Turn every nn.LSTM/GRU/RNN and cell in `model` (the model itself included) into its
    fused_rnn counterpart, in place, and set `backend` on all fused modules. Returns `model`.

    Each module keeps its identity (its class is switched), so parameters, buffers, hooks,
    device, dtype and train/eval mode are untouched and an optimizer built before convert()
    keeps working. Subclasses of nn.LSTM other than ours are left alone: they may override
    forward.
    """
    backends.check_name(backend)
    for module in model.modules():
        fused = _FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
        if isinstance(module, _Backend):
            module.backend = backend
    return model
