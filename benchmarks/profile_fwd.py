"""Where a fused forward's time goes on the GPU: per call, the wall time (CUDA events around the
module call), the device time of each kernel (torch.profiler) and the host time of the call.
For the benchmark's headline rows (`--quick`); prints one block per row.

    python benchmarks/profile_fwd.py [--variant cluster] [--json out.json]
"""
import argparse
import json
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import fused_rnn
from fused_rnn import _alloc
from fused_rnn.ops.cuda import launch as cuda_launch

ROWS = [("LSTM", "bf16", (256, 16, 256, 256)), ("LSTM", "bf16", (512, 16, 128, 128)),
        ("LSTM", "fp16", (1024, 16, 768, 768)), ("GRU", "bf16", (256, 16, 256, 256))]
DT = {"bf16": torch.bfloat16, "fp16": torch.float16}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="cluster")
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = torch.device("cuda")
    results = []
    with _alloc.poisoned(False), torch.no_grad():
        for cell, dtype, (T, B, I, H) in ROWS:
            cls = {"LSTM": fused_rnn.LSTM, "GRU": fused_rnn.GRU}[cell]
            m = cls(I, H, backend="cuda", device=dev, dtype=DT[dtype])
            ref = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[cell](I, H, device=dev,
                                                                     dtype=DT[dtype])
            x = torch.randn(T, B, I, device=dev, dtype=DT[dtype])
            n = 10
            for name, fn in (("fused", lambda: m(x)), ("cudnn", lambda: ref(x))):
                with cuda_launch.variant(args.variant):
                    for _ in range(3):
                        fn()
                    torch.cuda.synchronize()
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                        enable_timing=True)
                    t0 = time.perf_counter()
                    a.record()
                    for _ in range(n):
                        fn()
                    b.record()
                    host = (time.perf_counter() - t0) / n
                    torch.cuda.synchronize()
                    wall = a.elapsed_time(b) / n
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        for _ in range(n):
                            fn()
                        torch.cuda.synchronize()
                kernels = defaultdict(float)
                for ev in prof.key_averages():
                    if ev.device_time_total > 0:
                        kernels[ev.key[:70]] += ev.device_time_total / n
                # The GPU's idle time per call: wall time less the kernels' device time (the
                # host's launches show here once the kernels are short).
                idle = wall * 1e3 - sum(kernels.values())
                row = dict(cell=cell, dtype=dtype, T=T, B=B, I=I, H=H, provider=name,
                           wall_ms=wall, host_us=host * 1e6, gpu_idle_us=idle,
                           kernels_us=dict(kernels),
                           used=dict(cuda_launch.last_used) if name == "fused" else None)
                results.append(row)
                print(f"{cell} {dtype} T{T} B{B} I{I} H{H} {name}: wall {wall:.3f} ms "
                      f"({wall * 1e3 / T:.2f} us/step), host {host * 1e6:.1f} us/call, GPU idle "
                      f"{idle:.1f} us/call, used {row['used']}")
                for k, us in sorted(kernels.items(), key=lambda kv: -kv[1])[:8]:
                    print(f"    {us:9.1f} us  {us / T:6.3f} us/step  {k}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
