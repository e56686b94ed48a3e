"""What both example scripts share: the backend, size and dtype arguments, one training run per
backend (same seed, so same weights and batches), step timing, peak memory, the summary table,
--json and --plot. The scripts themselves hold only the model, the data and the evaluation."""
import argparse
import contextlib
import gc
import json
import platform
import textwrap
import time
import traceback

import torch
from torch.nn.utils.rnn import PackedSequence

from fused_rnn import backends

BACKENDS = ("reference", "cudnn", "triton", "cuda", "auto")
WARMUP = 10  # untimed steps: Triton compiles and cuDNN/cuBLAS pick algorithms here
# --dtype modes: what each runs. Recorded in --json as config "dtype" (the name) and
# "dtype_mode" (this sentence).
DTYPES = {
    "fp32": "float32 with torch's default TF32 flags (cuDNN may use TF32, other matmuls do not)",
    "fp32-ieee": "float32 with TF32 off for cuDNN and matmuls (the README's recorded results)",
    "amp": "CUDA autocast to float16 with a GradScaler; the LSTM layers run in float16, as "
           "nn.LSTM's cuDNN path does under any autocast dtype (refused on the CPU)",
    "bf16": "the model cast to bfloat16, so the layers' inputs, weights, states and outputs "
            "are bfloat16 (the loss is taken in float32); any device, but a CPU without "
            "bfloat16 instructions is slow (13x fp32's step time on one)",
}
DEFAULT_DTYPE = "fp32-ieee"
EPILOG = (
    "Size: --full is the size the README's results were measured at (on a GPU); --small trains "
    "in about a minute on a CPU. Without either, the size is full on a CUDA --device and small "
    "otherwise; options given explicitly (--batch, --hidden, ...) override either size.",
    "Prints: the chosen size and why, the dtype mode{before}; then per backend the mean "
    "training loss every --log-every steps{after}; last, a table of final loss (mean of the "
    "last 10 steps), {metric}, ms per step (timed after {warmup} warm-up steps) and, where "
    "cudnn ran, each backend against it. A backend that cannot run on --device is skipped "
    "with the reason.",
    "Writes nothing unless asked: --json PATH writes the config (every option, and size, "
    "size_reason, dtype_mode, tf32, tf32_matmul, tf32_cudnn), the torch version, the device "
    "name, and per backend every step's loss (losses), final_loss, sec_per_step, timed_steps, "
    "peak_memory_bytes (CUDA only), param_dtype, layer_dtypes (what each fused_rnn layer "
    "output) and {json}; skipped backends with their reasons. --plot PATH saves the loss "
    "curves as an image (needs matplotlib).",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description and epilog as written; every option's default appended to its help,
    unless the help already says it."""

    def _get_help_string(self, action):
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def sized(p, sizes, flag, type, help):
    """An option whose default depends on the size: None here, filled in by parse()."""
    dest = flag[2:].replace("-", "_")
    p.add_argument(flag, type=type, default=None,
                   help=f"{help} (default: {sizes['full'][dest]} full, {sizes['small'][dest]} "
                        "small)")


def parser(doc: str, sizes: dict, metric: str, json_fields: str, prints_before: str = "",
           prints_after: str = "") -> argparse.ArgumentParser:
    """The shared options. doc: the script's docstring (the description); sizes: {"full": {...},
    "small": {...}}, the size-dependent defaults, batch, hidden and lr among them (the script
    adds its own with sized()); metric, json_fields, prints_*: what the epilog says the script
    prints and writes besides the shared parts."""
    fields = dict(before=prints_before, after=prints_after, metric=metric, warmup=WARMUP,
                  json=json_fields)
    epilog = "\n\n".join(textwrap.fill(par.format(**fields), 95) for par in EPILOG)
    p = argparse.ArgumentParser(description=doc.strip(), epilog=epilog,
                                formatter_class=HelpFormatter)
    p.add_argument("--backend", nargs="+", choices=BACKENDS, default=["cudnn", "triton", "cuda"],
                   metavar="NAME",
                   help="one or more of " + ", ".join(BACKENDS) + "; each trained from the same "
                        "seed, in the order given; cudnn is torch's own nn.LSTM (on the CPU too) "
                        "(default: cudnn triton cuda)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--small", dest="size", action="store_const", const="small",
                      help="the small size, which shows learning in about a minute on a CPU "
                           "(default: small unless --device is CUDA)")
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="the full size, the README's (default: full on a CUDA --device)")
    p.add_argument("--steps", type=int, default=300, help="training steps per backend")
    sized(p, sizes, "--batch", int, "sequences per step")
    sized(p, sizes, "--hidden", int, "LSTM hidden size")
    sized(p, sizes, "--lr", float, "Adam learning rate")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DEFAULT_DTYPE,
                   help="; ".join(f"{k}: {v}" for k, v in DTYPES.items()))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu; here "
                        f"{'cuda' if torch.cuda.is_available() else 'cpu'})")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (torch.set_num_threads) (default: 1 on a CPU "
                        "--device, where the small sizes ran several times faster on one thread "
                        f"than on two of a shared 2-core machine; else torch's own, "
                        f"{torch.get_num_threads()} here)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the data")
    p.add_argument("--log-every", type=int, default=25, help="print the mean loss every N steps")
    p.add_argument("--json", metavar="PATH",
                   help="write the config and per-backend results as JSON (default: none)")
    p.add_argument("--plot", metavar="PATH",
                   help="save the loss curves as an image, with matplotlib (default: none)")
    return p


def parse(p: argparse.ArgumentParser, argv, sizes: dict) -> argparse.Namespace:
    """Parse argv; fill in the size (printed, with why), the thread count and the TF32 flags
    the dtype mode wants (run() applies those two)."""
    args = p.parse_args(argv)
    args.backend = list(dict.fromkeys(args.backend))  # each once, in the order given
    if args.steps < 1:
        p.error("--steps must be at least 1")
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    if args.threads is None:
        args.threads = torch.get_num_threads() if cuda else 1
    elif args.threads < 1:
        p.error("--threads must be at least 1")
    if args.dtype == "amp" and not cuda:
        p.error("--dtype amp is CUDA autocast (float16) and needs a CUDA --device; on the "
                "CPU use fp32 or bf16 (real bfloat16 layers)")
    if args.size is None:
        args.size = "full" if cuda else "small"
        args.size_reason = (f"the default on a {args.device.type.upper()} device"
                            + ("; --small for the CPU size" if cuda else
                               ", to show learning in about a minute; --full for the GPU size"))
    else:
        args.size_reason = f"--{args.size} given"
    given = []
    for k, v in sizes[args.size].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
        else:
            given.append(k)
    print(f"size {args.size} ({args.size_reason}): "
          + ", ".join(f"{k} {getattr(args, k)}" for k in sizes[args.size])
          + (f"; given: {', '.join(given)}" if given else "")
          + f"; {args.threads} CPU thread{'s' if args.threads > 1 else ''} (--threads)")
    print(f"dtype {args.dtype}: {DTYPES[args.dtype]}")
    args.dtype_mode = DTYPES[args.dtype]
    # fp32: torch's defaults (TF32 for cuDNN, not for other matmuls); any other mode: no TF32.
    args.tf32_matmul = False
    args.tf32_cudnn = args.dtype == "fp32"
    args.tf32 = args.tf32_matmul or args.tf32_cudnn
    return args


@contextlib.contextmanager
def settings(args):
    """torch's two TF32 switches as the dtype mode wants them and its CPU thread count as
    --threads says, restored afterwards (main() may run inside a test session)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_num_threads())
    torch.backends.cuda.matmul.allow_tf32 = args.tf32_matmul
    torch.backends.cudnn.allow_tf32 = args.tf32_cudnn
    torch.set_num_threads(args.threads)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_num_threads(saved[2])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args):
    """The context forward and loss run in: CUDA autocast to float16 for amp, else nothing."""
    return torch.autocast("cuda", dtype=torch.float16, enabled=args.dtype == "amp")


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def record_layer_dtypes(model, seen: dict):
    """Hooks on the model's fused_rnn layers: seen[class name] = the dtype of the first output
    (y of a layer, h of a cell), what the layer actually ran in. Returns the hook handles."""
    def hook(module, inputs, out):
        t = out[0] if isinstance(out, tuple) else out
        t = t.data if isinstance(t, PackedSequence) else t
        seen.setdefault(type(module).__name__, _dtype_name(t.dtype))
    return [m.register_forward_hook(hook) for m in model.modules()
            if type(m).__module__.startswith("fused_rnn")]


def train(args, name, make, evaluate):
    """Train one backend. make(name) -> (model, loss_of_step), built right after seeding;
    loss_of_step(i) returns step i's loss (run under autocast). evaluate(model) -> dict of
    extra metrics. --dtype bf16 casts the model to bfloat16 here (the scripts' inputs are token
    ids, so the embeddings hand bfloat16 on to the layers); amp runs forward and loss under CUDA
    autocast with a GradScaler. Returns the results dict, or a string: why it was skipped."""
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
    if args.dtype == "bf16":
        model.to(torch.bfloat16)  # in place: loss_of_step's model is this one
    layer_dtypes = {}
    hooks = record_layer_dtypes(model, layer_dtypes)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=args.dtype == "amp")
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
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            scaler.step(opt)
            scaler.update()
        except Exception as e:
            if i > 0:
                raise
            for h in hooks:
                h.remove()
            # An unavailable backend says so on its first call; anything else (a failed
            # build or compile) gets its traceback, and the remaining backends still run.
            if "cannot run this call" not in str(e):
                traceback.print_exc()
            return f"{type(e).__name__}: {e}"
        if i == 0:
            for h in hooks:  # the first step has seen every layer
                h.remove()
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
                param_dtype=_dtype_name(next(model.parameters()).dtype),
                layer_dtypes=layer_dtypes, **extra)


def run(args, make, evaluate, metric=("val_loss", "val loss")):
    """Train every backend in args.backend, print the summary table, write --json/--plot.
    Returns {backend: results} for the backends that ran."""
    results, skipped = {}, {}
    with settings(args):
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
