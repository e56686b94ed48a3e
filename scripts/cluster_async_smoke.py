"""GPU smoke test of the cluster forward's asynchronous exchange (plans '<CS>x<KS>a'), run
first by scripts/gpu_check.sh's cluster stage under a short timeout: a wrong barrier phase
hangs the kernel, and a hang should cost a minute, not a whole test stage. Prints, per plan,
whether it ran and its largest difference from the barrier exchange on the same input (the
same arithmetic in the same order: 0 expected)."""
import sys

import torch

import fused_rnn
from fused_rnn.ops.cuda import launch as cuda_launch


def main() -> int:
    torch.manual_seed(0)
    bad = 0
    for H, plan in ((64, "4x4a"), (128, "8x4a"), (256, "16x4a"), (256, "8x4a")):
        m = fused_rnn.LSTM(H, H, backend="cuda", device="cuda", dtype=torch.bfloat16)
        x = torch.randn(37, 21, H, device="cuda", dtype=torch.bfloat16)
        outs = {}
        for name in (plan[:-1], plan):
            with torch.no_grad(), cuda_launch.variant("cluster"), cuda_launch.cluster_plan(name):
                outs[name] = m(x)[0]
            torch.cuda.synchronize()
            ran = cuda_launch.last_used["plan"]
            if ran != name:
                print(f"H={H} {name}: ran {ran} instead")
                bad += 1
        diff = (outs[plan].float() - outs[plan[:-1]].float()).abs().max().item()
        print(f"H={H} {plan}: max |async - barrier| = {diff:g}", flush=True)
        bad += diff != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
