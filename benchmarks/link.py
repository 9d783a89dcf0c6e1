"""Compressed DDP over a slow link: 2 gloo ranks, each in its own network namespace, joined by a
veth pair shaped with ``tc … tbf`` to 1 Gbit/s and 10 Gbit/s in both directions.

The model has ResNet-18's parameter tensors (62 tensors, 11.2 M floats) and a loss whose
gradient is a fixed dense random tensor, so a step's time is the exchange alone; one torch thread
per rank; median s/step of ``--steps`` steps after ``--warmup``.  Hooks: fp32 (DDP's default),
torch's fp16 and PowerSGD (rank 4) hooks (its bf16 hook refuses gloo: it needs NCCL), and every lowbit codec through
``lowbit.dist.hooks``.  Bytes: what a rank sent per step (torch hooks: computed from the sizes).

    sudo python benchmarks/link.py                 # builds the namespaces, runs, removes them
    sudo python benchmarks/link.py --rates 1gbit   # one rate

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
    bits = float(rate.lower().replace("gbit", "e9").replace("mbit", "e6"))
    burst = max(64 * 1024, int(bits / 8 / 250))  # 4 ms of traffic: tbf needs burst ≥ rate/HZ
    for ns, dev, addr in zip(NS, DEV, ADDR):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
           "burst", str(burst), "latency", "100ms")


# -- the worker side ---------------------------------------------------------------------------------
def hooks(world: int):
    """label → (make(state-free model) → (state, hook, bytes per step or None)), in table order."""
    import torch.distributed.algorithms.ddp_comm_hooks.default_hooks as dh
    import torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook as ph

    from lowbit import get_compressor
    from lowbit.compress import ErrorFeedback
    from lowbit.dist.hooks import hook_for

    def torch_hook(fn, width):
        return lambda m: (None, fn, width * sum(p.numel() for p in m.parameters()))

    def powersgd(m):
        st = ph.PowerSGDState(process_group=None, matrix_approximation_rank=4, start_powerSGD_iter=2,
                              min_compression_rate=2, orthogonalization_epsilon=1e-8)
        return st, ph.powerSGD_hook, None

    def lowbit(make):
        def build(m):
            st, hk = hook_for(make(), model=m, seed=0)
            return st, hk, None
        return build

    return {
        "fp32 (DDP default)": lambda m: (None, None, 4 * sum(p.numel() for p in m.parameters())),
        "torch fp16_compress_hook": torch_hook(dh.fp16_compress_hook, 2),
        "torch powerSGD_hook r=4": powersgd,
        "lowbit identity": lowbit(lambda: get_compressor("identity")),
        "lowbit intsgd int8": lowbit(lambda: get_compressor("intsgd", alpha=64.0, bits=8, n_workers=world)),
        "lowbit cast fp8": lowbit(lambda: get_compressor("cast", format="fp8")),
        "lowbit cast fp4": lowbit(lambda: get_compressor("cast", format="fp4")),
        "lowbit natural": lowbit(lambda: get_compressor("natural")),
        "lowbit qsgd s=16": lowbit(lambda: get_compressor("qsgd", levels=16)),
        "lowbit qsgd 4-bit (s=7)": lowbit(lambda: get_compressor("qsgd", levels=7)),
        "lowbit terngrad": lowbit(lambda: get_compressor("terngrad")),
        "lowbit signsgd + EF": lowbit(lambda: ErrorFeedback(get_compressor("signsgd"))),
        "lowbit onebit": lowbit(lambda: get_compressor("onebit")),
        "lowbit powersgd r=4": lowbit(lambda: get_compressor("powersgd", rank=4)),
    }


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

    rows = []
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
            t0 = time.perf_counter()
            ddp().backward()
            times.append(time.perf_counter() - t0)
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


def run_rate(rate: str, args) -> list:
    setup(rate)
    out = f"/tmp/lowbit-link-{os.getpid()}-{rate}.json"
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR=ADDR[0], MASTER_PORT="29611",
                   GLOO_SOCKET_IFNAME=DEV[r], OMP_NUM_THREADS=str(args.threads))
        cmd = ["ip", "netns", "exec", NS[r], sys.executable, os.path.abspath(__file__), "--worker", "--out", out,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
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
    ap.add_argument("--rates", nargs="+", default=["1gbit", "10gbit"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="run the hooks whose label contains one of these")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per link rate")
    ap.add_argument("--out", default="benchmarks/results/link.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if os.geteuid() != 0:
        sys.exit("link.py builds network namespaces and shapes a link with tc: run it as root")
    sys.path.insert(0, HERE)
    from common import write_results

    table = {}
    try:
        for rate in args.rates:
            print(f"{rate}:", flush=True)
            table[rate] = run_rate(rate, args)
    finally:
        teardown()
    rows = []
    for rate, rs in table.items():
        base = {r["hook"]: r["s_per_step"] for r in rs}
        fp32, fp16 = base.get("fp32 (DDP default)"), base.get("torch fp16_compress_hook")
        for r in rs:
            rows.append({"rate": rate, **r, "x_fp32": fp32 / r["s_per_step"] if fp32 else None,
                         "x_fp16": fp16 / r["s_per_step"] if fp16 else None})
    print(f"\n| link | hook | s/step | × fp32 | × torch fp16 | MB sent per rank |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        f = lambda v: f"{v:.2f}" if v else ""  # noqa: E731
        print(f"| {r['rate']} | {r['hook']} | {r['s_per_step']:.3f} | {f(r['x_fp32'])} | {f(r['x_fp16'])} | "
              f"{r['mb_sent']:.2f} |")
    write_results(args.out, "link", rows, steps=args.steps, warmup=args.warmup, threads_per_rank=args.threads,
                  model="ResNet-18 parameter tensors, fixed random gradient", ranks=2)


if __name__ == "__main__":
    main()
