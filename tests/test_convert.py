"""fused_rnn.convert(): in place, weights/device/dtype/mode kept, state_dict round trip."""
import copy

import pytest
import torch
import torch.nn as nn

import fused_rnn


class TextGenerator(nn.Module):
    """The classic word/char model: Embedding -> LSTM -> LSTM -> Linear."""

    def __init__(self, vocab=50, emb=16, hidden=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.lstm1 = nn.LSTM(emb, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True, dropout=0.0)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        x, _ = self.lstm1(self.embed(tokens))
        x, (h, c) = self.lstm2(x)
        return self.head(x), h, c


def test_text_generator_same_outputs_and_state_dict_round_trip():
    torch.manual_seed(0)
    model = TextGenerator().double()
    tokens = torch.randint(0, 50, (4, 12))
    before = model(tokens)
    plain = copy.deepcopy(model)
    params_before = {n: p for n, p in model.named_parameters()}
    assert fused_rnn.convert(model, backend="reference") is model
    assert type(model.lstm1) is fused_rnn.LSTM and type(model.lstm2) is fused_rnn.LSTM
    assert model.lstm1.backend == "reference"
    after = model(tokens)
    for a, b in zip(before, after):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-10
    # The very same Parameter objects: an optimizer built before convert() keeps working.
    for n, p in model.named_parameters():
        assert p is params_before[n]
    plain.load_state_dict(model.state_dict(), strict=True)
    for a, b in zip(plain(tokens), after):
        assert (a - b).abs().max().item() <= 1e-10
    # Training through the converted model updates the weights.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(tokens)[0].sum().backward()
    w = model.lstm1.weight_hh_l0.detach().clone()
    opt.step()
    assert not torch.equal(w, model.lstm1.weight_hh_l0)


def test_convert_keeps_mode_dtype_and_converts_cells_and_root():
    model = nn.Sequential(nn.GRU(3, 4), nn.RNN(3, 4, nonlinearity="relu"), nn.LSTMCell(3, 4),
                          nn.GRUCell(3, 4), nn.RNNCell(3, 4)).to(torch.float64).eval()
    fused_rnn.convert(model, backend="cudnn")
    kinds = [fused_rnn.GRU, fused_rnn.RNN, fused_rnn.LSTMCell, fused_rnn.GRUCell,
             fused_rnn.RNNCell]
    for m, kind in zip(model, kinds):
        assert type(m) is kind and m.backend == "cudnn" and not m.training
        assert next(m.parameters()).dtype == torch.float64
    assert model[1].nonlinearity == "relu"
    root = fused_rnn.convert(nn.LSTM(2, 3))
    assert type(root) is fused_rnn.LSTM and root.backend == "auto"


def test_convert_shared_module_and_reconvert():
    shared = nn.LSTM(3, 4)
    model = nn.ModuleDict({"a": shared, "b": shared})
    fused_rnn.convert(model, backend="reference")
    assert model["a"] is model["b"] and type(shared) is fused_rnn.LSTM
    fused_rnn.convert(model, backend="cudnn")
    assert shared.backend == "cudnn"


def test_convert_leaves_user_subclasses_alone():
    class MyLSTM(nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x * 2, hx)

    m = nn.Sequential(MyLSTM(3, 4))
    fused_rnn.convert(m)
    assert type(m[0]) is MyLSTM


def test_convert_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        fused_rnn.convert(nn.LSTM(2, 3), backend="triton2")


def test_hooks_survive_convert():
    m = nn.LSTM(2, 3)
    calls = []
    m.register_forward_hook(lambda mod, inp, out: calls.append(type(mod)))
    fused_rnn.convert(m, backend="reference")
    m(torch.randn(4, 1, 2))
    assert calls == [fused_rnn.LSTM]
