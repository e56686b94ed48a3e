"""Why half-precision RNN_RELU gradients fail the parity rule (fused_rnn/testing.py) on the CPU:
ReLU branch flips. Where a pre-activation lies within rounding of 0, a bf16/fp16 run takes the
other branch than the float64 truth, and two implementations flip at different elements.

"ours" is an emulation of the CUDA kernel's rounding for an Elman RNN (csrc/cells.cuh,
fused_rnn/ops/recurrence.py): input gates rounded to the dtype, h rounded to it between steps,
fp32 math inside a step, the ReLU mask taken from the fp32 h, the backward's carries in fp32,
dgates rounded to the dtype for the input-side GEMMs. "torch" is torch's own CPU run in the
dtype (testing.run) and the truth is testing's float64 run; the rule is testing.compare. Per
dtype, cell and case set this prints the cases, the fails and the worst ratio, and
  swapped    fails with the roles swapped: torch's run judged against ours;
and for RNN_RELU:
  own-flip   fails / cases among the cases where ours flips an element that torch's run does not
  no-own     fails / cases among the others;
  truth-mask fails when ours' backward takes the float64 truth's ReLU mask instead of its own;
  flips      per 1e4 elements of (T, B, H) per layer and direction, ours / torch's against the
             truth's mask.
Padded, batched, time-major cases only (what the emulation covers). About 70 s on 2 cores:

    python scripts/relu_flips.py --out benchmarks/results/relu_flips_cpu.json
"""
import argparse
import copy
import dataclasses
import datetime
import json
import multiprocessing
import random
import time

import torch
import torch.nn as nn

from fused_rnn import testing

F64, F32 = torch.float64, torch.float32
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
CELLS = ("RNN_RELU", "RNN_TANH")


def emulate(case, dtype, exact=False, masks=None):
    """Forward and backward of the case as the CUDA kernel computes them in dtype, or, exact,
    in float64 on the truth's inputs (testing.run in float64 does not round x, h_0 or the
    cotangents; the weights are rounded to dtype for every run). masks: the ReLU mask of each
    layer and direction, (T, B, H) bool, for the backward to use instead of its own. Returns
    the tensors keyed as testing.run, and the masks of the forward."""
    acc = F64 if exact else F32

    def stored(t):  # a value the kernel writes in dtype and reads back
        return t if exact else t.to(dtype).to(acc)

    relu = case.cell == "RNN_RELU"
    L, T, B, H, D = case.num_layers, case.T, case.B, case.H, 2 if case.bidirectional else 1
    params = {n: p.to(acc) for n, p in testing.torch_module(case).to(dtype).named_parameters()}
    x, _, states = testing._inputs(case, F64 if exact else dtype)  # the inputs testing.run sees
    h0 = states[0].to(acc) if states else torch.zeros(L * D, B, H, dtype=acc)
    zero = torch.zeros(H, dtype=acc)

    def weights(l, d):
        sfx = f"_l{l}" + ("_reverse" if d else "")
        return (sfx, params["weight_ih" + sfx], params["weight_hh" + sfx],
                params.get("bias_ih" + sfx, zero), params.get("bias_hh" + sfx, zero))

    inp, layer_inputs, saved, h_n = x.to(acc), [], [], []
    for l in range(L):
        layer_inputs.append(inp)
        outs = []
        for d in range(D):
            _, w_ih, w_hh, b_ih, b_hh = weights(l, d)
            gi = stored(inp @ w_ih.t() + b_ih)  # one GEMM over all steps, before the loop
            h, h_prev, hs = h0[l * D + d], [None] * T, [None] * T
            for t in (reversed(range(T)) if d else range(T)):
                h_prev[t] = h
                pre = h @ w_hh.t() + b_hh + gi[t]
                hs[t] = torch.relu(pre) if relu else torch.tanh(pre)  # saved in fp32
                h = stored(hs[t])
            h_n.append(h)
            saved.append((torch.stack(h_prev), torch.stack(hs)))
            outs.append(stored(torch.stack(hs)))
        inp = torch.cat(outs, -1)
    result = {"output": inp, "h_n": torch.stack(h_n)}
    own_masks = [hs > 0 for _, hs in saved]
    masks = own_masks if masks is None else masks

    g = torch.Generator().manual_seed(case.seed + 3)  # the cotangents, drawn as testing.run does
    cot = {k: torch.randn(v.shape, generator=g, dtype=F64).to(F64 if exact else dtype).to(acc)
           for k, v in result.items()}
    d_layer, grads, dh0 = cot["output"], {}, [None] * (L * D)
    for l in reversed(range(L)):
        d_inp = 0
        for d in range(D):
            k = l * D + d
            sfx, w_ih, w_hh, _, _ = weights(l, d)
            h_prev, hs = saved[k]
            carry, dg = cot["h_n"][k], torch.zeros(T, B, H, dtype=acc)
            for t in (range(T) if d else reversed(range(T))):
                dh = d_layer[t, :, d * H:(d + 1) * H] + carry
                dg[t] = dh * masks[k][t] if relu else dh * (1 - hs[t] ** 2)
                carry = dg[t] @ w_hh
            dh0[k] = stored(carry)
            dgi = stored(dg)  # handed to the input-side GEMMs in dtype
            grads["weight_hh" + sfx] = dg.flatten(0, 1).t() @ h_prev.flatten(0, 1)
            grads["weight_ih" + sfx] = dgi.flatten(0, 1).t() @ layer_inputs[l].flatten(0, 1)
            grads["bias_ih" + sfx], grads["bias_hh" + sfx] = dgi.sum((0, 1)), dg.sum((0, 1))
            d_inp = d_inp + dgi @ w_ih
        d_layer = stored(d_inp)
    result["grad_input"] = d_layer
    if case.with_hx:
        result["grad_h_0"] = torch.stack(dh0)
    result.update({"grad_" + n: stored(grads[n]) for n in params})
    return {k: v.double() for k, v in result.items()}, own_masks


def torch_masks(case, dtype):
    """The ReLU masks (h > 0) of torch's own CPU run in dtype, per layer and direction. nn.RNN
    returns the last layer's output only, so layer l's come from a copy of its first l+1 layers."""
    full = testing.torch_module(case).to(dtype)
    x, _, states = testing._inputs(case, dtype)
    D = 2 if case.bidirectional else 1
    masks = []
    for l in range(case.num_layers):
        part = nn.RNN(case.I, case.H, num_layers=l + 1, nonlinearity="relu", bias=case.bias,
                      bidirectional=case.bidirectional, dtype=dtype)
        part.load_state_dict(full.state_dict(), strict=False)  # the deeper layers' are unused
        with torch.no_grad():
            out, _ = part(x.to(dtype), states[0][:(l + 1) * D].to(dtype) if states else None)
        masks += [out[..., d * case.H:(d + 1) * case.H] > 0 for d in range(D)]
    return masks


def cases():
    """(set, case): testing's random cases of the two cells made padded, batched and
    time-major, and larger ones of the sizes the CUDA kernels are for; fixed seeds."""
    small = [c for c in testing.random_cases(800, with_dropout=False) if c.cell in CELLS]
    out = [("random", dataclasses.replace(c, packed="", unbatched=False, batch_first=False))
           for c in small]
    rng = random.Random(1)
    for cell in CELLS:
        out += [("large", testing.Case(
            cell=cell, T=rng.choice([5, 10, 20, 40]), B=rng.choice([1, 4, 8, 16]),
            I=rng.choice([8, 32, 64]), H=rng.choice([64, 128, 256]),
            num_layers=rng.randint(1, 2), bidirectional=rng.random() < 0.3,
            seed=rng.randrange(2 ** 31))) for _ in range(100)]
    return out


def job(args):
    kind, case, dtype_name = args
    torch.set_num_threads(1)  # one case per process
    dtype = DTYPES[dtype_name]
    rounded = copy.deepcopy(testing.torch_module(case)).to(dtype).double()
    truth = testing.run(rounded, case, F64)
    theirs = testing.run(rounded, case, dtype)
    ours, our_masks = emulate(case, dtype)
    exact, truth_masks = emulate(case, dtype, exact=True)
    # The exact emulation must be the truth, or its masks would not be the truth's.
    assert max((exact[k] - v).abs().max().item() / max(1.0, testing._rms(v))
               for k, v in truth.items()) < 1e-9, case.label()
    r = dict(kind=kind, cell=case.cell, dtype=dtype_name,
             worst=testing.compare(ours, truth, theirs, dtype, case).worst_ratio,
             swapped=testing.compare(theirs, truth, ours, dtype, case).worst_ratio)
    if case.cell == "RNN_RELU":
        with_truth_mask, _ = emulate(case, dtype, masks=truth_masks)
        r["truth_mask"] = testing.compare(with_truth_mask, truth, theirs, dtype, case).worst_ratio
        ours_f = torch.cat([(m != t).flatten() for m, t in zip(our_masks, truth_masks)])
        theirs_f = torch.cat([(m != t).flatten() for m, t in zip(torch_masks(case, dtype),
                                                                   truth_masks)])
        r.update(own_flip=bool((ours_f & ~theirs_f).any()), elements=ours_f.numel(),
                 our_flips=int(ours_f.sum()), torch_flips=int(theirs_f.sum()))
    return r


def summarize(rs):
    """One row of the table: the counts over a dtype, cell and case set."""
    s = dict(cases=len(rs), fails=sum(r["worst"] > 1 for r in rs),
             worst=round(max(r["worst"] for r in rs), 2),
             swapped_fails=sum(r["swapped"] > 1 for r in rs))
    if rs[0]["cell"] == "RNN_RELU":
        own = [r for r in rs if r["own_flip"]]
        n = sum(r["elements"] for r in rs)
        s.update(own_flip_cases=len(own), own_flip_fails=sum(r["worst"] > 1 for r in own),
                 no_own_flip_cases=len(rs) - len(own),
                 no_own_flip_fails=sum(r["worst"] > 1 for r in rs if not r["own_flip"]),
                 truth_mask_fails=sum(r["truth_mask"] > 1 for r in rs),
                 truth_mask_worst=round(max(r["truth_mask"] for r in rs), 2),
                 our_flips_per_1e4=round(1e4 * sum(r["our_flips"] for r in rs) / n, 2),
                 torch_flips_per_1e4=round(1e4 * sum(r["torch_flips"] for r in rs) / n, 2))
    return s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the numbers as JSON here")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    jobs = [(kind, c, dt) for kind, c in cases() for dt in DTYPES]
    start = time.time()
    with multiprocessing.Pool(args.workers) as pool:
        results = pool.map(job, jobs, chunksize=1)
    rows = {}
    print(f"{'dtype':9} {'cell':8} {'set':6} {'cases':>5} {'fails':>5} {'worst':>7} {'swapped':>7}"
          f" {'own-flip':>8} {'no-own':>7} {'truth-mask':>10} {'flips ours/torch':>17}")
    for dt in DTYPES:
        for cell in CELLS:
            for kind in ("random", "large"):
                s = summarize([r for r in results if (r["dtype"], r["cell"], r["kind"])
                               == (dt, cell, kind)])
                rows[f"{dt} {cell} {kind}"] = s
                line = (f"{dt:9} {cell:8} {kind:6} {s['cases']:5} {s['fails']:5} "
                        f"{s['worst']:7.2f} {s['swapped_fails']:7}")
                if cell == "RNN_RELU":
                    line += (f" {s['own_flip_fails']:>3}/{s['own_flip_cases']:<4}"
                             f" {s['no_own_flip_fails']:>3}/{s['no_own_flip_cases']:<3}"
                             f" {s['truth_mask_fails']:10} "
                             f"{s['our_flips_per_1e4']:8.2f}/{s['torch_flips_per_1e4']:<8.2f}")
                print(line)
    seconds = time.time() - start
    print(f"{len(jobs)} runs in {seconds:.0f} s")
    if args.out:
        meta = dict(what=" ".join(__doc__.split("\n\n")[0].split()), torch=torch.__version__,
                    date=datetime.date.today().isoformat(), seconds=round(seconds),
                    rule=f"testing.compare: rms <= {testing.RMS_FACTOR:g}x torch's + atol, max <= "
                         f"{testing.MAX_FACTOR:g}x torch's + atol; fail: worst ratio > 1",
                    cases="random: the RNN cells of testing.random_cases(800), made padded, "
                          "batched, time-major; large: 100 a cell, T 5-40, H 64-256 (cases())")
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
