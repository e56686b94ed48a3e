"""Time every cluster plan of the CUDA backend's cluster forward (csrc/rnn_fwd_cluster.cu) against
cuDNN and the persistent variant, forward only, on a few shapes per H; prints a table and writes
JSON. For choosing the default plan per H until `fused-rnn bench --tune` does it.

    python benchmarks/cluster_plans.py --out results.json
"""
import argparse
import json

import torch

from fused_rnn import _alloc
from fused_rnn.bench.suite import DTYPES, build, measure
from fused_rnn.ops.cuda import launch as cuda_launch

PLANS = {64: ("4x4", "4x2", "2x4", "4x4a"), 128: ("8x4", "8x2", "4x4", "8x4a"),
         256: ("16x4", "8x4", "16x4a", "8x4a")}
SHAPES = [(512, 16, 64, 64), (512, 16, 128, 128), (256, 16, 256, 256), (256, 64, 256, 256),
          (256, 1, 256, 256)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cluster_plans.json")
    ap.add_argument("--cells", nargs="+", default=["LSTM", "GRU"])
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"])
    args = ap.parse_args()
    dev = torch.device("cuda")
    rows = []
    with _alloc.poisoned(False):
        for cell in args.cells:
            for dtype in args.dtypes:
                for shape in SHAPES:
                    T, B, I, H = shape
                    x = torch.randn(T, B, I, device=dev, dtype=DTYPES[dtype][0])
                    runs = [("cudnn", None), ("cuda_persistent", None)] + \
                        [("cuda_cluster", p) for p in PLANS[H]]
                    for provider, plan in runs:
                        fn, _ = build(provider, cell, shape, dtype, dev)

                        def call():
                            with torch.no_grad(), cuda_launch.cluster_plan(plan):
                                fn(x)
                        call()
                        ran = cuda_launch.last_used["plan"] if provider == "cuda_cluster" else None
                        med, p20, p80 = measure(call, dev)
                        row = dict(cell=cell, dtype=dtype, T=T, B=B, I=I, H=H, provider=provider,
                                   plan=plan, plan_ran=ran, median_ms=med,
                                   us_per_step=med * 1e3 / T)
                        rows.append(row)
                        print(f"{cell:5s} {dtype} {str(shape):22s} {provider:16s} "
                              f"{plan or '':5s} ran {ran or '':5s} {med:8.3f} ms "
                              f"{med * 1e3 / T:7.2f} us/step", flush=True)
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
