"""Character-level language model: Embedding -> multi-layer fused_rnn.LSTM -> Linear, trained
with truncated BPTT on the Python documentation's prose (pydoc_data.topics, shipped with
Python: ~465 KB, no download; the last 5% held out), once per backend from the same seed.
Reports the training loss (cross-entropy per character, in nats) and the held-out loss.

    python examples/char_lm.py                  # small on a CPU, full on a GPU
    python examples/char_lm.py --backend cudnn triton cuda --steps 300 --json lm.json
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _harness, also under importlib
import _harness  # noqa: E402

import fused_rnn  # noqa: E402


def corpus():
    """The topics' texts joined in sorted-key order, as a str."""
    from pydoc_data.topics import topics
    return "".join(topics[k] for k in sorted(topics))


class CharLM(nn.Module):
    def __init__(self, vocab, embed, hidden, layers, backend):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = fused_rnn.LSTM(embed, hidden, layers, batch_first=True, backend=backend)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        y, state = self.lstm(self.embed(x), state)
        return self.out(y), state


def streams(data: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut a 1-D sequence into `batch` contiguous rows (B, L), dropping the remainder."""
    L = data.numel() // batch
    return data[:batch * L].view(batch, L)


# Size-dependent defaults. full: the README's H100 runs (tens of seconds a step on a CPU).
# small: a 2-layer LSTM of 128 for the CPU; 300 steps take the loss from ~4.6 to ~1.7.
SIZES = {
    "full": dict(batch=64, bptt=128, embed=128, hidden=512, layers=2, lr=2e-3),
    "small": dict(batch=32, bptt=64, embed=32, hidden=128, layers=2, lr=5e-3),
}


def build_parser():
    p = _harness.parser(__doc__, SIZES, metric="held-out loss (val loss)",
                        json_fields="val_loss (held-out cross-entropy per character)",
                        prints_before=", the corpus, vocabulary, stream and validation sizes")
    _harness.sized(p, SIZES, "--bptt", int, "characters per step and stream")
    _harness.sized(p, SIZES, "--embed", int, "character embedding size")
    _harness.sized(p, SIZES, "--layers", int, "stacked LSTM layers")
    p.add_argument("--val-chars", type=int, default=0,
                   help="score only the first N held-out characters (0: all of them)")
    return p


def main(argv):
    p = build_parser()
    args = _harness.parse(p, argv, SIZES)
    dev = args.device

    text = corpus()
    chars = sorted(set(text))  # vocabulary from the whole text, so validation has no unknowns
    lut = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lut[c] for c in text], dtype=torch.long)
    n_val = len(text) // 20  # the last 5%
    train, val = data[:-n_val], data[-n_val:]
    if args.val_chars:
        val = val[:args.val_chars]
    train = streams(train, args.batch).to(dev)
    chunks = (train.shape[1] - 1) // args.bptt  # whole chunks per epoch
    if chunks < 1:
        p.error(f"--bptt {args.bptt} is longer than a stream ({train.shape[1]} characters)")
    print(f"corpus {len(text)} characters, vocabulary {len(chars)}, {args.batch} streams of "
          f"{train.shape[1]}, {chunks} steps per epoch, validation {val.numel()} characters")

    def make(name):
        model = CharLM(len(chars), args.embed, args.hidden, args.layers, name).to(dev)
        state = [None]

        def loss_of_step(i):
            k = i % chunks
            if k == 0:
                state[0] = None  # a new epoch starts the streams over
            x = train[:, k * args.bptt:(k + 1) * args.bptt + 1]
            logits, st = model(x[:, :-1], state[0])
            # Truncated BPTT: the state goes on to the next chunk, the gradient does not.
            state[0] = tuple(s.detach() for s in st)
            return F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        return model, loss_of_step

    def evaluate(model):
        v = streams(val, min(args.batch, val.numel() - 1)).to(dev)
        total, count, state = 0.0, 0, None
        for k in range(0, v.shape[1] - 1, args.bptt):
            x = v[:, k:k + args.bptt + 1]
            logits, state = model(x[:, :-1], state)
            total += F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten(),
                                     reduction="sum").item()
            count += x[:, 1:].numel()
        return {"val_loss": total / count}

    return _harness.run(args, make, evaluate)


if __name__ == "__main__":
    main(sys.argv[1:])
