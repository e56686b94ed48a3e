"""fused_rnn: fused LSTM/GRU/RNN kernels for PyTorch as drop-in torch.nn modules."""
__version__ = "0.1.0"

from . import functional
from ._compile import compile
from .checks import InputError
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, convert
from .ops.regularize import Regularization

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "compile",
           "functional", "Regularization", "InputError", "__version__"]
