"""Compressed DDP over a slow link: 2 gloo ranks, each in its own network namespace, joined by a
veth pair shaped with ``tc … tbf`` to 1 Gbit/s and 10 Gbit/s in both directions.

The model has ResNet-18's parameter tensors (62 tensors, 11.2 M floats) and a loss whose
gradient is a fixed dense random tensor, so a step's time is the exchange alone; one torch thread
per rank; median s/step of ``--steps`` steps after ``--warmup``.  Hooks: fp32 (DDP's default),
torch's fp16 and PowerSGD (rank 4) hooks (its bf16 hook refuses gloo: it needs NCCL), and every lowbit codec through
``lowbit.distributed.hooks``; and "no exchange", a hook that returns the bucket untouched: DDP's
own work in a step, the ceiling every hook's × fp32 is bounded by on this machine.  Bytes: what a
rank sent per step (torch hooks: computed from the sizes).

    sudo python benchmarks/link.py                 # builds the namespaces, runs, removes them
    sudo python benchmarks/link.py --rates 1gbit   # one rate
    sudo python benchmarks/link.py --rates unshaped  # no tc: what the CPUs alone allow
    sudo python benchmarks/link.py --rates 10gbit --only "intsgd int8" --timeline  # where a step goes

Needs root (``ip netns``, ``tc``).  The addresses (10.231.0.1–2) exist only inside the two
namespaces this script creates; they are deleted on exit, also after an error or Ctrl-C.
Rank 0 prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NS = ("lowbit-link-a", "lowbit-link-b")
DEV = ("lbveth-a", "lbveth-b")
ADDR = ("10.231.0.1", "10.231.0.2")


def sh(*cmd: str, check: bool = True) -> None:
    subprocess.run(cmd, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if not check else None)


def teardown() -> None:
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)


def setup(rate: str) -> None:
    teardown()
    for ns in NS:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", DEV[0], "netns", NS[0], "type", "veth", "peer", "name", DEV[1], "netns", NS[1])
    for ns, dev, addr in zip(NS, DEV, ADDR):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        if rate != "unshaped":  # "unshaped": the veth pair at the speed of the machine's memory copies
            bits = float(rate.lower().replace("gbit", "e9").replace("mbit", "e6"))
            burst = max(64 * 1024, int(bits / 8 / 250))  # 4 ms of traffic: tbf needs burst ≥ rate/HZ
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
               "burst", str(burst), "latency", "100ms")


# -- the worker side ---------------------------------------------------------------------------------
def hooks(world: int):
    """label → (make(state-free model) → (state, hook, bytes per step or None)), in table order."""
    import torch.distributed.algorithms.ddp_comm_hooks.default_hooks as dh
    import torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook as ph

    from lowbit import get_compressor
    from lowbit.compress import ErrorFeedback
    from lowbit.distributed.hooks import hook_for

    def no_exchange(state, bucket):  # DDP's own work in a step, nothing sent: the ceiling of every hook
        import torch

        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    def torch_hook(fn, width):
        return lambda m: (None, fn, width * sum(p.numel() for p in m.parameters()))

    def powersgd(m):
        st = ph.PowerSGDState(process_group=None, matrix_approximation_rank=4, start_powerSGD_iter=2,
                              min_compression_rate=2, orthogonalization_epsilon=1e-8)
        return st, ph.powerSGD_hook, None

    def lowbit(make, **kw):
        def build(m):
            st, hk = hook_for(make(), model=m, seed=0, **kw)
            return st, hk, None
        return build

    return {
        "fp32 (DDP default)": lambda m: (None, None, 4 * sum(p.numel() for p in m.parameters())),
        "no exchange (ceiling)": lambda m: (None, no_exchange, 0),
        "torch fp16_compress_hook": torch_hook(dh.fp16_compress_hook, 2),
        "torch powerSGD_hook r=4": powersgd,
        "lowbit identity": lowbit(lambda: get_compressor("identity")),
        "lowbit intsgd int8": lowbit(lambda: get_compressor("intsgd", alpha=64.0, bits=8, n_workers=world)),
        "lowbit hintsgd int8": lowbit(lambda: get_compressor("hintsgd", bits=8, n_workers=world)),
        "lowbit cast fp8": lowbit(lambda: get_compressor("cast", format="fp8")),
        "lowbit cast fp8, scatter": lowbit(lambda: get_compressor("cast", format="fp8"), mode="scatter"),
        "lowbit cast fp4": lowbit(lambda: get_compressor("cast", format="fp4")),
        "lowbit natural": lowbit(lambda: get_compressor("natural")),
        "lowbit qsgd s=16": lowbit(lambda: get_compressor("qsgd", levels=16)),
        "lowbit qsgd 4-bit (s=7)": lowbit(lambda: get_compressor("qsgd", levels=7)),
        "lowbit terngrad": lowbit(lambda: get_compressor("terngrad")),
        "lowbit signsgd + EF": lowbit(lambda: ErrorFeedback(get_compressor("signsgd"))),
        "lowbit onebit": lowbit(lambda: get_compressor("onebit")),
        "lowbit powersgd r=4": lowbit(lambda: get_compressor("powersgd", rank=4)),
    }


def install_timeline() -> tuple[list, list]:
    """Wrap the hook and the bucket coder's calls so that each appends (name, start, end, thread) in
    seconds after the step's start to the returned list; the second list holds the step's start."""
    import threading

    import lowbit.distributed.hooks as H
    from common import time_calls
    from lowbit.distributed.bucket import BucketCoder

    events, t0 = [], [0.0]

    def note(name, start):
        events.append((name, start - t0[0], time.perf_counter() - t0[0], threading.get_ident() % 997))

    for name in ("encode_decoded", "to_sum_buffer", "decode_sum", "to_bytes", "mean_decoded", "join"):
        time_calls(BucketCoder, name, name, note)
    time_calls(H.dist, "all_reduce", "all_reduce", note)
    time_calls(H, "_all_gather_into", "_all_gather_into", note)
    hook = H.compressed_hook

    def with_completion(state, bucket):  # the hook's call is timed below; this adds when its future completes
        def done(f):
            note("future done", time.perf_counter())
            return f.value()

        return hook(state, bucket).then(done)

    H.compressed_hook = with_completion
    time_calls(H, "compressed_hook", "hook", note)
    return events, t0


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from lowbit.models import resnet18

    torch.set_num_threads(args.threads)
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    shapes = [p.shape for p in resnet18().parameters()]

    class FixedGradient(torch.nn.Module):
        """ResNet-18's parameters; the loss Σ⟨p_j, r_j⟩ has the fixed gradient r."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1 + rank)
            self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s)) for s in shapes])
            self.r = [torch.randn(s, generator=g) * 1e-2 for s in shapes]

        def forward(self):
            return sum((p * r).sum() for p, r in zip(self.ps, self.r))

    events, step_start = install_timeline() if args.timeline and rank == 0 else ([], [0.0])
    rows = collectives(args, rank) if args.collectives else []
    wanted = [k for k in hooks(2) if not args.only or any(o in k for o in args.only)]
    for label in wanted:
        model = FixedGradient()
        # torch's PowerSGD hook starts collectives inside future callbacks, whose order differs
        # between ranks once several buckets are in flight over gloo: it gets one bucket
        one = "powerSGD" in label
        ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1024 if one else 25)
        state, hook, fixed_bytes = hooks(2)[label](model)
        if hook is not None:
            ddp.register_comm_hook(state, hook)
        times = []
        before = 0
        for k in range(args.warmup + args.steps):
            if k == args.warmup and fixed_bytes is None and hasattr(state, "bytes_sent"):
                before = state.bytes_sent
            dist.barrier()
            t0 = step_start[0] = time.perf_counter()
            events.clear()
            loss = ddp()
            events.append(("forward", 0.0, time.perf_counter() - t0, 0))
            loss.backward()
            times.append(time.perf_counter() - t0)
            if args.timeline and rank == 0 and args.warmup <= k < args.warmup + 3:
                print(f"  {label}, step {k}, ms after its start [thread]: " + " ".join(
                    f"{n} {1e3 * a:.1f}–{1e3 * b:.1f} [{th}]" for n, a, b, th in events)
                    + f" · end {1e3 * times[-1]:.1f}", flush=True)
            model.zero_grad(set_to_none=False)
        t = torch.tensor(times[args.warmup:], dtype=torch.float64)
        dist.all_reduce(t, dist.ReduceOp.MAX)  # a step ends when both ranks have the mean
        if fixed_bytes is None and hasattr(state, "bytes_sent"):
            sent = (state.bytes_sent - before) / args.steps
        elif fixed_bytes is None:  # torch's PowerSGD: P and Q of every matrix, uncompressed 1-D
            sent = 4 * sum(min(4, s[0]) * (s[0] + int(torch.tensor(s[1:]).prod()))
                           if len(s) > 1 and min(4, s[0]) * (s[0] + int(torch.tensor(s[1:]).prod())) * 2
                           < s.numel() else s.numel() for s in shapes)
        else:
            sent = fixed_bytes
        rows.append({"hook": label, "s_per_step": statistics.median(t.tolist()), "mb_sent": sent / 1e6})
        if rank == 0:
            print(f"  {label:28s} {rows[-1]['s_per_step']:.3f} s/step  {rows[-1]['mb_sent']:.2f} MB", flush=True)
    if rank == 0:
        import json

        with open(args.out, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def collectives(args, rank: int) -> list:
    """The bare collectives under the hooks, on one ResNet-18 message of 8-bit codes (11.2 MB):
    an all-reduce, one all-gather, and the all-gathers of at most 1 MiB that the gather mode
    sends on the CPU (lowbit.distributed.hooks._all_gather_chunks), all in flight."""
    import torch
    import torch.distributed as dist

    from lowbit.distributed.hooks import _all_gather_chunks

    m = 11_173_962
    mine, got = torch.ones(m, dtype=torch.uint8), torch.empty(2 * m, dtype=torch.uint8)
    cases = {
        "collective: all-reduce, int8": lambda: dist.all_reduce(mine.view(torch.int8)),
        "collective: one all-gather": lambda: dist.all_gather_into_tensor(got, mine),
        "collective: all-gathers of 1 MiB": lambda: _all_gather_chunks(got, mine, 2, 1 << 20, None).wait(),
    }
    rows = []
    for label, f in cases.items():
        times = []
        for k in range(args.warmup + args.steps):
            dist.barrier()
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        t = torch.tensor(times[args.warmup:], dtype=torch.float64)
        dist.all_reduce(t, dist.ReduceOp.MAX)
        rows.append({"hook": label, "s_per_step": statistics.median(t.tolist()), "mb_sent": m / 1e6})
        if rank == 0:
            print(f"  {label:28s} {rows[-1]['s_per_step']:.3f} s  {m / 1e6:.2f} MB", flush=True)
    return rows


E2E = {  # label → hook options (None: DDP's fp32 all-reduce)
    "fp32 (DDP default)": None,
    "lowbit intsgd int8": dict(compressor="intsgd", bits=8, n_workers=2, rounding="stochastic",
                               rule="moving_avg_const", beta=0.0, sigma_sq=1e-8),
    "lowbit cast fp8": dict(compressor="cast", format="fp8"),
}


def e2e_worker(args) -> None:
    """LeNet (ISGQ's count: 1.66 M parameters) on mnist-5k over the 2 ranks: each rank takes its
    half of every batch; wall time (training only, both ranks) until the test accuracy, checked
    after every epoch, first reaches ``--target``."""
    import json

    import torch
    import torch.distributed as dist

    from lowbit.data.images import load_images
    from lowbit.distributed.hooks import hook_for
    from lowbit.models import get_model

    torch.set_num_threads(args.threads)
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    data = load_images("mnist-5k")
    rows = []
    for label, opts in E2E.items():
        torch.manual_seed(0)
        model = get_model("lenet")
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        state = None
        if opts is not None:
            state, hook = hook_for(model=model, seed=0, **opts)
            ddp.register_comm_hook(state, hook)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        wall, reached, acc, curve, steps = 0.0, None, 0.0, [], 0
        for epoch in range(args.epochs):
            order = torch.randperm(data.train_x.shape[0], generator=g)
            dist.barrier()
            t0 = time.perf_counter()
            for i in range(0, len(order) - args.batch + 1, args.batch):
                idx = order[i : i + args.batch][rank::2]
                before = [p.detach().clone() for p in model.parameters()] if state is not None else None
                opt.zero_grad()
                torch.nn.functional.cross_entropy(ddp(data.train_x[idx]), data.train_y[idx]).backward()
                opt.step()
                steps += 1
                if before is not None:
                    state.observe(args.lr, [float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before)])
            t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(t, dist.ReduceOp.MAX)
            wall += float(t)
            with torch.no_grad():
                acc = float((model(data.test_x).argmax(1) == data.test_y).float().mean())
            curve.append((round(wall, 2), acc))
            if reached is None and acc >= args.target:
                reached = wall
                break
        rows.append({"hook": label, "s_to_target": reached, "epochs": len(curve), "final_accuracy": acc,
                     "curve": curve, "mb_sent": (state.bytes_sent if state is not None
                                                 else 4 * steps * sum(p.numel() for p in model.parameters())) / 1e6})
        if rank == 0:
            print(f"  {label:24s} {reached if reached else float('nan'):7.1f} s to {args.target:.0%} "
                  f"({len(curve)} epochs, accuracy {acc:.3f})", flush=True)
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def run_rate(rate: str, args, e2e: bool = False) -> list:
    setup(rate)
    out = f"/tmp/lowbit-link-{os.getpid()}-{rate}{'-e2e' if e2e else ''}.json"
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR=ADDR[0], MASTER_PORT="29611",
                   GLOO_SOCKET_IFNAME=DEV[r], OMP_NUM_THREADS=str(args.threads))
        pin = ["taskset", "-c", str(r % os.cpu_count())] if args.pin else []  # rank r on core r
        cmd = ["ip", "netns", "exec", NS[r], *pin, sys.executable, os.path.abspath(__file__), "--worker", "--out", out,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--target", str(args.target), "--epochs", str(args.epochs), "--batch", str(args.batch),
               "--lr", str(args.lr)] + (["--e2e"] if e2e else []) + (["--collectives"] if args.collectives else []) \
            + (["--timeline"] if args.timeline else [])
        if args.only:
            cmd += ["--only", *args.only]
        procs.append(subprocess.Popen(cmd, env=env))
    try:
        for p in procs:
            p.wait(timeout=args.timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a rank failed at {rate}")
    import json

    with open(out) as f:
        rows = json.load(f)
    os.remove(out)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", nargs="+", default=["1gbit", "10gbit"], help="tc rates, or unshaped (no tc)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="run the hooks whose label contains one of these")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per link rate")
    ap.add_argument("--out", default="benchmarks/results/link.json")
    ap.add_argument("--e2e", action="store_true", help="also train LeNet on mnist-5k at the first rate")
    ap.add_argument("--target", type=float, default=0.95, help="end-to-end: test accuracy to reach")
    ap.add_argument("--epochs", type=int, default=30, help="end-to-end: at most this many epochs")
    ap.add_argument("--batch", type=int, default=128, help="end-to-end: global batch (half per rank)")
    ap.add_argument("--lr", type=float, default=0.02, help="end-to-end: SGD stepsize (momentum 0.9)")
    ap.add_argument("--no-table", action="store_true", help="skip the fixed-gradient table")
    ap.add_argument("--collectives", action="store_true", help="also time the bare collectives on one 8-bit message")
    ap.add_argument("--pin", action="store_true", help="each rank on its own core (taskset); no faster here")
    ap.add_argument("--timeline", action="store_true",
                    help="rank 0 prints when the forward, each lowbit hook call, its encode, collective and decode "
                         "ran in three timed steps")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        (e2e_worker if args.e2e else worker)(args)
        return
    if os.geteuid() != 0:
        sys.exit("link.py builds network namespaces and shapes a link with tc: run it as root")
    sys.path.insert(0, HERE)
    from common import write_results

    table, e2e = {}, None
    try:
        for rate in [] if args.no_table else args.rates:
            print(f"{rate}:", flush=True)
            table[rate] = run_rate(rate, args)
        if args.e2e:
            print(f"LeNet on mnist-5k at {args.rates[0]}:", flush=True)
            e2e = run_rate(args.rates[0], args, e2e=True)
    finally:
        teardown()
    rows = []
    for rate, rs in table.items():
        base = {r["hook"]: r["s_per_step"] for r in rs}
        fp32, fp16 = base.get("fp32 (DDP default)"), base.get("torch fp16_compress_hook")
        for r in rs:
            rows.append({"rate": rate, **r, "x_fp32": fp32 / r["s_per_step"] if fp32 else None,
                         "x_fp16": fp16 / r["s_per_step"] if fp16 else None})
    print("\n| link | hook | s/step | × fp32 | × torch fp16 | MB sent per rank |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        f = lambda v: f"{v:.2f}" if v else ""  # noqa: E731
        print(f"| {r['rate']} | {r['hook']} | {r['s_per_step']:.3f} | {f(r['x_fp32'])} | {f(r['x_fp16'])} | "
              f"{r['mb_sent']:.2f} |")
    if e2e:
        base = next((r["s_to_target"] for r in e2e if r["hook"].startswith("fp32")), None)
        print(f"\n| LeNet, mnist-5k, {args.rates[0]} | s to {args.target:.0%} test accuracy | × fp32 | epochs | "
              "s / epoch | MB sent per rank per epoch |\n|---|---:|---:|---:|---:|---:|")
        for r in e2e:
            s_, x = r["s_to_target"], (base / r["s_to_target"]) if base and r["s_to_target"] else None
            per = r["curve"][-1][0] / r["epochs"]
            mb = f"{r['mb_sent'] / r['epochs']:.1f}" if r["mb_sent"] is not None else ""
            print(f"| {r['hook']} | {f'{s_:.1f}' if s_ else 'not reached'} | {f'{x:.2f}' if x else ''} | {r['epochs']} | "
                  f"{per:.2f} | {mb} |")
    write_results(args.out, "link", rows, steps=args.steps, warmup=args.warmup, threads_per_rank=args.threads,
                  model="ResNet-18 parameter tensors, fixed random gradient", ranks=2, end_to_end=e2e,
                  end_to_end_setup={"model": "lenet", "data": "mnist-5k", "rate": args.rates[0], "target": args.target,
                                    "batch": args.batch, "lr": args.lr, "momentum": 0.9} if e2e else None)


if __name__ == "__main__":
    main()
