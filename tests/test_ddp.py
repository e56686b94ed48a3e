"""Training under DistributedDataParallel: 2 processes, each fed its shard of a fixed global batch.

The model is Embedding -> fused LSTM (2 layers, bidirectional) -> fused GRU -> Linear, in
float64. Two worker processes (this file run as a script, with a file:// store in tmp_path,
so no TCP port is fixed) start once per device and run every case in turn: build the model
from the same seed, wrap it in DDP with its defaults (find_unused_parameters=False), take a few
optimizer steps, each rank on its half of each global batch. Afterwards one of them takes the
same steps without DDP on the whole global batch, the loss averaged the same way. The parent
test checks, per case:
- after each step, parameters and gradients are bitwise identical on both ranks;
- the DDP gradients, parameters and loss equal the single-process ones (float64 round-off);
- every parameter got a gradient (else DDP without find_unused_parameters would raise);
- model.module.state_dict() has nn.LSTM's names: it loads strictly into the same model built
  from plain nn.LSTM/nn.GRU, which then computes the same output, and loads strictly back.

The CPU cases use gloo (the Triton kernels run in Triton's interpreter, TRITON_INTERPRET=1 in
the workers' environment, set before they start, also where the test process itself has CUDA
and no interpreter); the CUDA cases use NCCL, one GPU per rank, and are skipped with fewer
than 2 GPUs. A worker that fails makes the test fail with its traceback; a run that
exceeds the time limit is killed and fails.
"""
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

WORLD = 2
PER_RANK = 2                  # sequences per rank; the global batch is WORLD * PER_RANK
T, VOCAB, EMB, HID, GRU_HID, CLASSES = 3, 7, 3, 4, 3, 3
STEPS = 3
SEED = 1234
TIMEOUT_S = 120               # for all cases of a device; on 2 CPU cores they take ~25 s
# Lengths of the global batch's sequences (packed cases): unsorted, both ranks get a mix.
LENGTHS = [3, 1, 2, 3]

# (backend, packed input, optimizer, DDP gradient_as_bucket_view)
CASES = [
    ("reference", True, "sgd", False),
    ("reference", False, "adam", True),
    ("triton", True, "adam", False),
    ("cudnn", False, "sgd", False),   # torch's own kernels: the control
]


class Net(nn.Module):
    """Embedding -> LSTM (2 layers, bidirectional) -> GRU -> Linear on the GRU's h_n; fused_rnn
    modules with `backend`, or plain torch.nn ones (backend=None) with the same names."""

    def __init__(self, backend):
        super().__init__()
        if backend is None:
            lstm, gru, kw = nn.LSTM, nn.GRU, {}
        else:
            import fused_rnn
            lstm, gru, kw = fused_rnn.LSTM, fused_rnn.GRU, dict(backend=backend)
        self.emb = nn.Embedding(VOCAB, EMB)
        self.lstm = lstm(EMB, HID, num_layers=2, bidirectional=True, batch_first=True, **kw)
        self.gru = gru(2 * HID, GRU_HID, batch_first=True, **kw)
        self.head = nn.Linear(GRU_HID, CLASSES)

    def forward(self, tokens, lengths=None):
        x = self.emb(tokens)
        if lengths is not None:
            x = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                  enforce_sorted=False)
        y, _ = self.lstm(x)
        _, h = self.gru(y)
        return self.head(h[-1])


def build(backend, device):
    torch.manual_seed(SEED)
    return Net(backend).to(device=device, dtype=torch.float64)


def global_batches():
    """STEPS global batches (tokens, lengths, targets) on the CPU, the same in every process."""
    g = torch.Generator().manual_seed(SEED + 1)
    n = WORLD * PER_RANK
    return [(torch.randint(VOCAB, (n, T), generator=g), torch.tensor(LENGTHS),
             torch.randint(CLASSES, (n,), generator=g)) for _ in range(STEPS)]


def make_optimizer(name, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.5, momentum=0.9)
    return torch.optim.Adam(params, lr=0.05)


def snapshot(named):
    return {n: t.detach().to("cpu", copy=True) for n, t in named}


def train(model, opt_name, batches, rows, device, packed):
    """STEPS steps on rows `rows` of each global batch, loss the mean over those rows. Returns
    the trajectory: initial parameters, and per step the loss, gradients and new parameters.
    `model` may be a DDP wrapper; names are those of the inner module."""
    inner = getattr(model, "module", model)
    opt = make_optimizer(opt_name, model.parameters())
    traj = dict(init=snapshot(inner.named_parameters()), loss=[], grads=[], params=[])
    for tokens, lengths, targets in batches:
        tokens, targets = tokens[rows].to(device), targets[rows].to(device)
        opt.zero_grad(set_to_none=True)
        logits = model(tokens, lengths[rows] if packed else None)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        missing = [n for n, p in inner.named_parameters() if p.grad is None]
        assert not missing, f"parameters without a gradient: {missing}"
        traj["loss"].append(loss.item())
        traj["grads"].append({n: p.grad.detach().to("cpu", copy=True)
                              for n, p in inner.named_parameters()})
        opt.step()
        traj["params"].append(snapshot(inner.named_parameters()))
    return traj


def worker(rank, args):
    """One DDP rank (run as `python test_ddp.py --worker RANK JSON`): every case in turn in
    one process group, then the single-process runs of the cases i with i % WORLD == rank."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    if args["device"] == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    batches = global_batches()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    results = [{} for _ in args["cases"]]
    dist.init_process_group(args["dist_backend"], init_method="file://" + args["store"],
                            rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        for case, out in zip(args["cases"], results):
            model = build(case["backend"], device)
            ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                      gradient_as_bucket_view=case["bucket_view"])  # find_unused_parameters=False
            out["ddp"] = train(ddp, case["optimizer"], batches, rows, device, case["packed"])
            if rank == 0:  # the trained model's state and output, for the state_dict check
                out["state_dict"] = {k: v.to("cpu", copy=True)
                                     for k, v in ddp.module.state_dict().items()}
                tokens, lengths, _ = batches[0]
                with torch.no_grad():
                    out["output"] = ddp.module(tokens.to(device),
                                               lengths if case["packed"] else None).cpu()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    for i, (case, out) in enumerate(zip(args["cases"], results)):
        if i % WORLD == rank:
            # The single-process run over the whole global batch, loss averaged over it.
            out["single"] = train(build(case["backend"], device), case["optimizer"], batches,
                                  slice(None), device, case["packed"])
    torch.save(results, args["out"].format(rank=rank))


def _env(device):
    import fused_rnn
    env = dict(os.environ)
    # The fused_rnn this process imported, also where an installed copy points elsewhere.
    root = str(Path(fused_rnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH")] if p)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"   # read when triton is imported, so set before start
    else:
        env.pop("TRITON_INTERPRET", None)
    env["FUSED_RNN_POISON"] = "1"       # as the test suite runs the library
    env["OMP_NUM_THREADS"] = "1"
    return env


def _tail(path, n=6000):
    text = Path(path).read_text(errors="replace") if Path(path).exists() else ""
    return text[-n:]


def run_workers(tmp_path, device, dist_backend, cases):
    """Run `cases` in WORLD workers (TIMEOUT_S at most). Returns (per case: rank 0's and rank
    1's results, and the single-process run), or a failure report with every worker's output
    (a failed worker's traceback)."""
    args = dict(device=device, dist_backend=dist_backend, cases=cases,
                store=str(tmp_path / "store"), out=str(tmp_path / "rank{rank}.pt"))
    env = _env(device)
    procs, logs, killed = [], [], set()
    try:
        for rank in range(WORLD):
            log = [tmp_path / f"rank{rank}.stdout", tmp_path / f"rank{rank}.stderr"]
            with open(log[0], "w") as so, open(log[1], "w") as se:
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(rank), json.dumps(args)],
                    stdout=so, stderr=se, env=env, cwd=str(tmp_path)))
            logs.append(log)
        deadline = time.monotonic() + TIMEOUT_S
        why = None
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                why = f"the workers were killed after {TIMEOUT_S} s"
                break
            if any(p.poll() not in (None, 0) for p in procs):
                # One failed: the other may be waiting in a collective. It errors out when the
                # connection drops, or at gloo's timeout; give it a moment, then kill it.
                grace = time.monotonic() + 10
                while any(p.poll() is None for p in procs) and time.monotonic() < grace:
                    time.sleep(0.05)
                break
            time.sleep(0.05)
    finally:
        for rank, p in enumerate(procs):
            if p.poll() is None:
                p.kill()
                p.wait()
                killed.add(rank)
    if why is not None or any(p.returncode != 0 for p in procs):
        report = [f"DDP workers ({device}, {dist_backend}): {why or 'a worker failed'}"]
        for rank, (p, (so, se)) in enumerate(zip(procs, logs)):
            how = " (killed by the test)" if rank in killed else ""
            report.append(f"--- rank {rank}: exit code {p.returncode}{how}\n"
                          f"--- stdout:\n{_tail(so)}"
                          f"\n--- stderr:\n{_tail(se)}")
        return "\n".join(report)
    r0, r1 = (torch.load(args["out"].format(rank=r), weights_only=True) for r in range(WORLD))
    return [(a, b, a.get("single") or b.get("single")) for a, b in zip(r0, r1)]


def _case_params():
    nccl = (torch.cuda.device_count() >= 2 and torch.distributed.is_available()
            and torch.distributed.is_nccl_available())
    skip_cuda = pytest.mark.skipif(not nccl, reason="the NCCL case needs 2 GPUs and NCCL")
    for device, dist_backend, marks in [("cpu", "gloo", ()), ("cuda", "nccl", (skip_cuda,))]:
        for backend, packed, optimizer, bucket_view in CASES:
            case_id = "-".join([device, dist_backend, backend, "packed" if packed else "padded",
                                optimizer] + (["bucketview"] if bucket_view else []))
            yield pytest.param(device, dist_backend,
                               dict(backend=backend, packed=packed, optimizer=optimizer,
                                    bucket_view=bucket_view), id=case_id, marks=marks)


@pytest.fixture(scope="module")
def ddp_runs(request, tmp_path_factory):
    """run(device, dist_backend, case): the results of `case`. The workers start once per
    device (starting one takes seconds: DDP imports torch._dynamo) and run every selected case
    of that device in turn."""
    done = {}

    def run(device, dist_backend, case):
        if device not in done:
            selected = [item.callspec.params["case"] for item in request.session.items
                        if getattr(item, "module", None) is request.module
                        and hasattr(item, "callspec")
                        and item.callspec.params.get("device") == device]
            results = run_workers(tmp_path_factory.mktemp(f"ddp-{device}"), device,
                                  dist_backend, selected)
            done[device] = (selected, results)
        selected, results = done[device]
        if isinstance(results, str):
            pytest.fail(results, pytrace=False)
        return results[selected.index(case)]

    return run


# One pytest-xdist worker takes them all (--dist loadgroup): the workers' processes start once.
@pytest.mark.xdist_group("ddp")
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
@pytest.mark.parametrize("device,dist_backend,case", list(_case_params()))
def test_ddp_matches_single_process(ddp_runs, device, dist_backend, case):
    if dist_backend == "gloo" and not torch.distributed.is_gloo_available():
        pytest.skip("gloo is not available")
    r0, r1, single = ddp_runs(device, dist_backend, case)
    d0, d1 = r0["ddp"], r1["ddp"]
    names = list(single["init"])
    assert list(d0["init"]) == names and list(d1["init"]) == names
    for n in names:  # the same seed in each process: the same start
        assert torch.equal(d0["init"][n], single["init"][n]), n
        assert torch.equal(d1["init"][n], single["init"][n]), n

    tol = dict(rtol=1e-9, atol=1e-12)
    for step in range(STEPS):
        # The ranks saw different halves of the batch, and their mean loss is the global one.
        assert d0["loss"][step] != d1["loss"][step], step
        assert abs((d0["loss"][step] + d1["loss"][step]) / 2 - single["loss"][step]) < 1e-12
        for n in names:
            where = f"step {step}, {n}"
            g0, g1, g = d0["grads"][step][n], d1["grads"][step][n], single["grads"][step][n]
            assert torch.equal(g0, g1), f"gradients differ between ranks: {where}"
            assert g.abs().max() > 0, f"a zero gradient makes the check vacuous: {where}"
            torch.testing.assert_close(g0, g, **tol, msg=lambda m: f"{where} gradient: {m}")
            p0, p1, p = d0["params"][step][n], d1["params"][step][n], single["params"][step][n]
            assert torch.equal(p0, p1), f"parameters differ between ranks: {where}"
            torch.testing.assert_close(p0, p, **tol, msg=lambda m: f"{where} parameter: {m}")
            before = d0["params"][step - 1][n] if step else d0["init"][n]
            assert not torch.equal(p0, before), f"the step left the parameter as it was: {where}"

    # model.module keeps nn.LSTM's parameter names: its state_dict loads strictly into the
    # same model built from plain nn.LSTM/nn.GRU, which gives the same output, and back.
    state = r0["state_dict"]
    assert not any(k.startswith("module.") for k in state)
    plain = build(None, "cpu")
    assert list(plain.state_dict()) == list(state)
    plain.load_state_dict(state, strict=True)
    tokens, lengths, _ = global_batches()[0]
    with torch.no_grad():
        expected = plain(tokens, lengths if case["packed"] else None)
    torch.testing.assert_close(r0["output"], expected, rtol=1e-10, atol=1e-12)
    again = build("reference", "cpu")
    again.load_state_dict(plain.state_dict(), strict=True)
    for k, v in again.state_dict().items():
        assert torch.equal(v, state[k]), k


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        import faulthandler
        # Where a worker hangs: its stack goes to stderr before the test kills it.
        faulthandler.dump_traceback_later(TIMEOUT_S - 15, exit=True)
        worker(int(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} --worker RANK JSON (started by the test)")
