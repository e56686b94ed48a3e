"""GPU smoke test of the cluster kernels' asynchronous exchange (plans '<CS>x<KS>a' forward,
'<CS>x<NW>a' backward), run first by scripts/gpu_check.sh's cluster stage under a short
timeout: a wrong barrier phase hangs a kernel, and a hang should
cost a minute, not a whole test stage. Prints, per plan, whether it ran and its largest
difference from the barrier exchange of the same plan on the same input (the same arithmetic in
the same order: 0 expected), forward outputs and backward gradients alike."""
import sys

import torch

import fused_rnn
from fused_rnn.ops.cuda import launch as cuda_launch

FWD = ((64, "4x4a"), (128, "8x4a"), (256, "16x4a"), (256, "8x4a"))
BWD = ((64, "2x4a"), (64, "4x4a"), (128, "2x8a"), (128, "8x4a"), (256, "16x4a"), (256, "8x8a"))


def _grads(m, x, plan):
    x = x.detach().requires_grad_()
    with cuda_launch.variant("cluster"), cuda_launch.cluster_bwd_plan(plan):
        out, (h, c) = m(x)
        (out.float().sum() + h.float().sum() + c.float().sum()).backward()
    torch.cuda.synchronize()
    grads = [x.grad] + [p.grad for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    return cuda_launch.last_used["bwd_plan"], grads


def main() -> int:
    torch.manual_seed(0)
    bad = 0
    for H, plan in FWD:
        m = fused_rnn.LSTM(H, H, backend="cuda", device="cuda", dtype=torch.bfloat16)
        x = torch.randn(37, 21, H, device="cuda", dtype=torch.bfloat16)
        outs = {}
        for name in (plan[:-1], plan):
            with torch.no_grad(), cuda_launch.variant("cluster"), cuda_launch.cluster_plan(name):
                outs[name] = m(x)[0]
            torch.cuda.synchronize()
            ran = cuda_launch.last_used["plan"]
            if ran != name:
                print(f"fwd H={H} {name}: ran {ran} instead")
                bad += 1
        diff = (outs[plan].float() - outs[plan[:-1]].float()).abs().max().item()
        print(f"fwd H={H} {plan}: max |async - barrier| = {diff:g}", flush=True)
        bad += diff != 0
    for H, plan in BWD:
        m = fused_rnn.LSTM(H, H, backend="cuda", device="cuda", dtype=torch.bfloat16)
        x = torch.randn(37, 21, H, device="cuda", dtype=torch.bfloat16)
        twin = plan[:-1]
        runs = {}
        for name in (twin, plan):
            ran, runs[name] = _grads(m, x, name)
            if ran != name:
                print(f"bwd H={H} {name}: ran {ran} instead")
                bad += 1
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(runs[plan], runs[twin]))
        print(f"bwd H={H} {plan}: max |async - barrier| over the gradients = {diff:g}",
              flush=True)
        bad += diff != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
