"""Encoder-decoder with attention: integers written as digits ("4071") to English words ("four
thousand seventy one"), numbers drawn uniformly from 0..999999. The encoder is a bidirectional
fused_rnn.LSTM over packed, variable-length input; the decoder a fused_rnn.LSTMCell stepped one
token at a time (teacher forcing) with Luong attention. Trained once per backend from the same
seed; ends with greedy-decoding exact match on the held-out numbers (256 by default), and
four of them decoded.

    python examples/seq2seq.py                  # small on a CPU, full on a GPU
    python examples/seq2seq.py --backend cudnn triton cuda --steps 300 --json s2s.json
"""
import argparse
import os
import random
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _harness, also under importlib
import _harness  # noqa: E402

import fused_rnn  # noqa: E402

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
PAD, BOS, EOS = 0, 1, 2
TGT = ["<pad>", "<bos>", "<eos>"] + ONES + TENS + ["hundred", "thousand"]
TGT_ID = {w: i for i, w in enumerate(TGT)}
SRC_PAD = 0  # source tokens: 0 padding, 1 + digit
MAX_N = 999_999


def words(n: int) -> list:
    """English words of 0 <= n <= 999999, without "and" or hyphens."""
    if n >= 1000:
        return words(n // 1000) + ["thousand"] + (words(n % 1000) if n % 1000 else [])
    if n >= 100:
        return [ONES[n // 100], "hundred"] + (words(n % 100) if n % 100 else [])
    if n >= 20:
        return [TENS[n // 10 - 2]] + ([ONES[n % 10]] if n % 10 else [])
    return [ONES[n]]


def batch_of(numbers, device):
    """(src (B, S), src lengths (B,), tgt (B, T+1) = <bos> words <eos>, padded)."""
    src = [[1 + int(d) for d in str(n)] for n in numbers]
    tgt = [[BOS] + [TGT_ID[w] for w in words(n)] + [EOS] for n in numbers]

    def pad(rows, v):
        width = max(map(len, rows))
        return torch.tensor([r + [v] * (width - len(r)) for r in rows], device=device)
    return pad(src, SRC_PAD), torch.tensor([len(s) for s in src]), pad(tgt, PAD)


class Seq2Seq(nn.Module):
    def __init__(self, embed, hidden, attn, input_feed, backend):
        super().__init__()
        self.input_feed = input_feed
        self.src_embed = nn.Embedding(11, embed, padding_idx=SRC_PAD)
        # hidden // 2 per direction: the encoder's outputs and final states are `hidden` wide,
        # as the decoder's, so dot attention and the state hand-over need no projection.
        self.encoder = fused_rnn.LSTM(embed, hidden // 2, batch_first=True, bidirectional=True,
                                      backend=backend)
        self.tgt_embed = nn.Embedding(len(TGT), embed, padding_idx=PAD)
        self.decoder = fused_rnn.LSTMCell(embed + hidden * input_feed, hidden, backend=backend)
        self.w_a = nn.Linear(hidden, hidden, bias=False) if attn == "general" else nn.Identity()
        self.w_c = nn.Linear(2 * hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, len(TGT))

    def encode(self, src, lengths):
        packed = pack_padded_sequence(self.src_embed(src), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        mask = torch.arange(src.shape[1], device=src.device)[None] < lengths.to(src.device)[:, None]
        # Decoder starts from both directions' final states side by side; h, c (2, B, H/2).
        state = (torch.cat([h[0], h[1]], -1), torch.cat([c[0], c[1]], -1))
        return out, self.w_a(out), mask, state

    def step(self, y_prev, state, feed, memory):
        """One decoder step: (logits, state, attentional hidden h~)."""
        out, keys, mask, _ = memory
        x = self.tgt_embed(y_prev)
        if self.input_feed:  # the previous h~ goes in with the token (Luong et al. 2015, 3.3)
            x = torch.cat([x, feed], -1)
        h, c = self.decoder(x, state)
        scores = torch.bmm(keys, h[:, :, None]).squeeze(2)
        a = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        ctx = torch.bmm(a[:, None], out).squeeze(1)
        h_att = torch.tanh(self.w_c(torch.cat([ctx, h], -1)))
        return self.out(h_att), (h, c), h_att

    def forward(self, src, lengths, tgt_in):
        """Teacher-forced logits (B, T, V) for the target inputs tgt_in (B, T)."""
        memory = self.encode(src, lengths)
        state, feed, logits = memory[3], memory[3][0].new_zeros(memory[3][0].shape), []
        for t in range(tgt_in.shape[1]):
            y, state, feed = self.step(tgt_in[:, t], state, feed, memory)
            logits.append(y)
        return torch.stack(logits, 1)

    @torch.no_grad()
    def greedy(self, src, lengths, max_len=12):
        """Greedy decoding: (B, <= max_len) token ids; the longest answer is 10 words + <eos>."""
        memory = self.encode(src, lengths)
        state, feed = memory[3], memory[3][0].new_zeros(memory[3][0].shape)
        y, ys = torch.full((src.shape[0],), BOS, device=src.device), []
        done = torch.zeros_like(y, dtype=torch.bool)
        for _ in range(max_len):
            logits, state, feed = self.step(y, state, feed, memory)
            y = logits.argmax(-1)
            ys.append(y)
            done |= y == EOS
            if done.all():
                break
        return torch.stack(ys, 1)


def detokenize(ids) -> str:
    out = []
    for i in ids:
        if i == EOS:
            break
        out.append(TGT[i])
    return " ".join(out)


# Size-dependent defaults. full: the README's H100 runs (about 0.6 s a step on a CPU). small:
# hidden 128 for the CPU; 300 steps reach ~98% exact match.
SIZES = {
    "full": dict(batch=64, embed=64, hidden=256, lr=2e-3),
    "small": dict(batch=32, embed=32, hidden=128, lr=5e-3),
}


def build_parser():
    p = _harness.parser(__doc__, SIZES, metric="held-out exact match (accuracy)",
                        json_fields="accuracy (exact match) and samples (four held-out numbers "
                                    "and their decoding)",
                        prints_after=", then four held-out numbers as decoded (with the "
                                     "expected words where they differ) and the exact match")
    _harness.sized(p, SIZES, "--embed", int, "token embedding size, source and target")
    p.add_argument("--attn", choices=("dot", "general"), default="general",
                   help="Luong attention score: dot (h . s) or general (h . W s)")
    p.add_argument("--input-feed", action=argparse.BooleanOptionalAction, default=True,
                   help="feed the previous attentional hidden state to the decoder")
    p.add_argument("--held-out", type=int, default=256,
                   help="numbers kept out of training, scored by greedy decoding")
    return p


def main(argv):
    p = build_parser()
    args = _harness.parse(p, argv, SIZES)
    if args.hidden % 2:
        p.error("--hidden must be even (the encoder has hidden/2 per direction)")
    dev = args.device

    rng = random.Random(args.seed)
    held_out = rng.sample(range(MAX_N + 1), args.held_out)
    test = batch_of(held_out, dev)
    excluded, draws = set(held_out), rng.choices(range(MAX_N + 1), k=2 * args.steps * args.batch)
    train = [n for n in draws if n not in excluded][:args.steps * args.batch]
    # Every batch on the device before the timed loop (host-to-device copies would sync it),
    # and the same batches for every backend.
    batches = [batch_of(train[i:i + args.batch], dev) for i in range(0, len(train), args.batch)]

    def make(name):
        model = Seq2Seq(args.embed, args.hidden, args.attn, args.input_feed, name).to(dev)

        def loss_of_step(i):
            src, lengths, tgt = batches[i]
            logits = model(src, lengths, tgt[:, :-1])
            return F.cross_entropy(logits.float().flatten(0, 1), tgt[:, 1:].flatten(),
                                   ignore_index=PAD)
        return model, loss_of_step

    def evaluate(model):
        src, lengths, tgt = test
        pred = [detokenize(r) for r in model.greedy(src, lengths).tolist()]
        ref = [" ".join(words(n)) for n in held_out]
        acc = sum(a == b for a, b in zip(pred, ref)) / len(ref)
        samples = [(str(n), p) for n, p in zip(held_out[:4], pred)]
        for (n, s), r in zip(samples, ref):
            print(f"  {n:>7s} -> {s}" + ("" if s == r else f"   (expected: {r})"))
        print(f"  exact match {acc:.3f} on {len(ref)} held-out numbers")
        return {"accuracy": acc, "samples": samples}

    return _harness.run(args, make, evaluate, metric=("accuracy", "accuracy"))


if __name__ == "__main__":
    main(sys.argv[1:])
