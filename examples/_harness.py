"""What both example scripts share: the backend/size arguments, one training run per backend
(same seed, so same weights and batches), step timing, peak memory, the summary table, --json
and --plot. The scripts themselves hold only the model, the data and the evaluation."""
import argparse
import gc
import json
import platform
import time
import traceback

import torch

from fused_rnn import backends

BACKENDS = ("reference", "cudnn", "triton", "cuda", "auto")
WARMUP = 10  # untimed steps: Triton compiles and cuDNN/cuBLAS pick algorithms here


def parser(description: str, hidden: int, lr: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--backend", nargs="+", choices=BACKENDS, default=["cudnn", "triton", "cuda"],
                   help="one or more backends, each trained from the same seed")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: CUDA autocast around forward and loss")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (off: fair fp32)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--json", metavar="PATH", help="write config and per-backend results")
    p.add_argument("--plot", metavar="PATH", help="save the loss curves (matplotlib)")
    return p


def parse(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.backend = list(dict.fromkeys(args.backend))  # each once, in the order given
    if args.steps < 1:
        p.error("--steps must be at least 1")
    args.device = torch.device(args.device)
    if args.dtype == "bf16" and args.device.type != "cuda":
        p.error("--dtype bf16 uses CUDA autocast and needs a CUDA --device")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    return args


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args):
    return torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")


def train(args, name, make, evaluate):
    """Train one backend. make(name) -> (model, loss_of_step), built right after seeding;
    loss_of_step(i) returns step i's loss (run under autocast). evaluate(model) -> dict of
    extra metrics. Returns the results dict, or a string: why the backend was skipped."""
    dev = args.device
    why = None if name == "auto" else backends.why_not(name, dev)
    if why is not None:
        return why
    gc.collect()
    if dev.type == "cuda":  # so the peak below is this backend's own
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(args.seed)
    model, loss_of_step = make(name)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warm = min(WARMUP, args.steps // 2)
    losses, t0 = [], time.perf_counter()
    print(f"--- {name}")
    for i in range(args.steps):
        if i == warm:
            _sync(dev)
            t0 = time.perf_counter()
        try:
            with autocast(args):
                loss = loss_of_step(i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
        except Exception as e:
            if i > 0:
                raise
            # An unavailable backend says so on its first call; anything else (a failed
            # build or compile) gets its traceback, and the remaining backends still run.
            if "cannot run this call" not in str(e):
                traceback.print_exc()
            return f"{type(e).__name__}: {e}"
        losses.append(loss.detach())  # no .item() here: it would sync every step
        if (i + 1) % args.log_every == 0 or i + 1 == args.steps:
            window = torch.stack(losses[-args.log_every:]).float().mean().item()
            print(f"step {i + 1:5d}  loss {window:.4f}", flush=True)
    _sync(dev)
    sec = (time.perf_counter() - t0) / (args.steps - warm)
    losses = torch.stack(losses).float().tolist()
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    model.eval()
    with torch.no_grad(), autocast(args):
        extra = evaluate(model)
    return dict(losses=losses, final_loss=sum(losses[-10:]) / len(losses[-10:]),
                sec_per_step=sec, timed_steps=args.steps - warm, peak_memory_bytes=peak,
                **extra)


def run(args, make, evaluate, metric=("val_loss", "val loss")):
    """Train every backend in args.backend, print the summary table, write --json/--plot.
    Returns {backend: results} for the backends that ran."""
    results, skipped = {}, {}
    for name in args.backend:
        r = train(args, name, make, evaluate)
        if isinstance(r, str):
            print(f"--- {name}: skipped ({r})")
            skipped[name] = r
        else:
            results[name] = r
    table(results, metric)
    if args.json:
        dev = args.device
        config = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(args).items()}
        with open(args.json, "w") as f:
            json.dump(dict(config=config, torch=torch.__version__,
                           device=(torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                   else platform.processor() or platform.machine()),
                           backends=results, skipped=skipped), f, indent=1)
    if args.plot:
        plot(results, args.plot)
    return results


def table(results, metric):
    key, label = metric
    base = results.get("cudnn")
    print(f"\n{'backend':10s} {'final loss':>10s} {label:>10s} {'ms/step':>9s}"
          + (f" {'loss vs cudnn':>14s} {'time/cudnn':>10s}" if base else ""))
    for name, r in results.items():
        line = f"{name:10s} {r['final_loss']:10.4f} {r[key]:10.4f} {1e3 * r['sec_per_step']:9.2f}"
        if base and name != "cudnn":
            rel = (r["final_loss"] - base["final_loss"]) / base["final_loss"]
            line += f" {rel:+14.2e} {r['sec_per_step'] / base['sec_per_step']:10.2f}"
        print(line)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")  # no display on the GPU machine
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        ax.plot(range(1, len(r["losses"]) + 1), r["losses"], label=name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
