"""Time per step of exchanging a ResNet-18 gradient among processes, fp32 all-reduce against
every codec through lowbit's exchange (the DDP hook's path): encode, agree, all-reduce or
all-gather, decode and average.  Bytes sent per rank per step: the codecs' payload and what
went on the wire (headers, padding, int16 widened to int32).

    torchrun --standalone --nproc-per-node 2 benchmarks/allreduce.py            # NCCL on 2 GPUs
    torchrun --standalone --nproc-per-node 2 benchmarks/allreduce.py --device cpu  # gloo

Rank 0 prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.distributed as dist

import lowbit.distributed as ld
from lowbit import get_compressor
from lowbit.compress import ErrorFeedback
from lowbit.distributed.cluster import DistributedCluster, exchange_all
from lowbit.models import resnet18

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import write_results  # noqa: E402

CODECS = {
    "identity": lambda n: get_compressor("identity"),
    "cast fp8": lambda n: get_compressor("cast", format="fp8"),
    "cast fp4": lambda n: get_compressor("cast", format="fp4"),
    "intsgd int8": lambda n: get_compressor("intsgd", alpha=1e3, bits=8, n_workers=n),
    "hintsgd": lambda n: get_compressor("hintsgd", n_workers=n),
    "natural": lambda n: get_compressor("natural"),
    "qsgd s=16": lambda n: get_compressor("qsgd", levels=16),
    "terngrad": lambda n: get_compressor("terngrad"),
    "signsgd (EF)": lambda n: ErrorFeedback(get_compressor("signsgd")),
    "onebit": lambda n: get_compressor("onebit"),
    "topk 1%": lambda n: get_compressor("topk", ratio=0.01),
    "randk 1%": lambda n: get_compressor("randk", ratio=0.01),
    "powersgd r=4": lambda n: get_compressor("powersgd", rank=4),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="bench-allreduce.json")
    args = ap.parse_args(argv)
    ld.init("nccl" if args.device == "cuda" else "gloo", timeout=300)
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device(f"cuda:{torch.cuda.current_device()}") if args.device == "cuda" else torch.device("cpu")
    gen = torch.Generator(device=dev).manual_seed(rank)
    shapes = [p.shape for p in resnet18().parameters()]
    grads = [torch.randn(s, device=dev, generator=gen) * 1e-2 for s in shapes]
    d = sum(g.numel() for g in grads)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()

    def timed(fn):
        for _ in range(3):
            fn()
        times = []
        for _ in range(args.reps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    flat = torch.cat([g.reshape(-1) for g in grads])

    def fp32():
        buf = flat.clone()
        dist.all_reduce(buf)
        buf /= world

    rows = [{"name": "fp32 all-reduce (peer)", "seconds": timed(fp32), "payload_bytes": 4 * d, "wire_bytes": 4 * d}]
    for label, make in CODECS.items():
        codec = make(world)
        clusters = [DistributedCluster(codec, seed=j) for j in range(len(grads))]
        try:
            s = timed(lambda: exchange_all(clusters, grads))
        except Exception as e:  # report, keep going
            rows.append({"name": label, "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        steps = args.reps + 3
        rows.append({"name": label, "seconds": s,
                     "payload_bytes": sum(c.bytes_sent for c in clusters) / steps,
                     "wire_bytes": sum(c.wire_bytes for c in clusters) / steps})
    base = rows[0]["seconds"]
    if rank == 0:
        name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
        print(f"\nResNet-18 gradient ({d:,} floats, {len(grads)} tensors), {world} ranks, {dist.get_backend()} on {name}")
        print(f"{'codec':24} {'ms/step':>8} {'× fp32':>7} {'MB sent':>8} {'MB wire':>8} {'bits/coord':>10}")
        for r in rows:
            if "error" in r:
                print(f"{r['name']:24} error: {r['error']}")
                continue
            print(f"{r['name']:24} {1e3 * r['seconds']:8.2f} {r['seconds'] / base:7.2f} {r['payload_bytes'] / 1e6:8.2f} "
                  f"{r['wire_bytes'] / 1e6:8.2f} {8 * r['payload_bytes'] / d:10.3f}")
        write_results(args.out, "allreduce", rows, device=name, world=world, backend=dist.get_backend(), floats=d,
                      tensors=len(grads))
    ld.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
