"""What a lowbit DDP hook costs on the GPU: a ResNet-18 training step (batch 512, 32×32 images,
bf16 autocast, SGD with momentum) under ``DistributedDataParallel`` with DDP's default hook and
with torch's Python hooks (the peers: what any Python hook costs) and with each lowbit codec's
hook, one process (NCCL, world size 1: the exchange is the codec's work
alone).  Median ms per step over the timed steps (CUDA events), × the default hook; and whether
a step synchronizes with the host (``torch.cuda.set_sync_debug_mode("error")`` on one step).

    python benchmarks/ddp_step.py --out bench-ddp-step.json      (a CUDA device)
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.distributed as dist
from common import device_name, write_results
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch import nn

from lowbit import get_compressor
from lowbit.compress import ErrorFeedback
from lowbit.dist.hooks import hook_for
from lowbit.models import get_model

CODECS = {
    "lowbit identity": lambda: get_compressor("identity"),
    "lowbit cast fp8": lambda: get_compressor("cast", format="fp8"),
    "lowbit cast fp4": lambda: get_compressor("cast", format="fp4"),
    "lowbit intsgd int8": lambda: get_compressor("intsgd", alpha=64.0, bits=8, n_workers=1),
    "lowbit natural": lambda: get_compressor("natural"),
    "lowbit qsgd s=16": lambda: get_compressor("qsgd", levels=16),
    "lowbit qsgd 4-bit (s=7)": lambda: get_compressor("qsgd", levels=7),
    "lowbit terngrad": lambda: get_compressor("terngrad"),
    "lowbit signsgd + EF": lambda: ErrorFeedback(get_compressor("signsgd")),
    "lowbit onebit": lambda: get_compressor("onebit"),
    "lowbit powersgd r=4": lambda: get_compressor("powersgd", rank=4),
}


# torch's own Python hooks, the peers of a Python hook's cost: (state, hook)
TORCH_HOOKS = {
    "torch allreduce_hook (Python)": lambda: (None, default_hooks.allreduce_hook),
    "torch fp16_compress_hook": lambda: (None, default_hooks.fp16_compress_hook),
    "torch powerSGD_hook r=4": lambda: (powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=4,
                                                                    start_powerSGD_iter=2),
                                        powerSGD_hook.powerSGD_hook),
}


def make_step(codec, x, y):
    """One training step of ResNet-18 under DDP with ``codec``'s hook (None: DDP's default; a
    (state, hook) pair: that hook)."""
    torch.manual_seed(0)
    model = get_model("resnet18").cuda().to(memory_format=torch.channels_last)
    ddp = nn.parallel.DistributedDataParallel(model)
    if isinstance(codec, tuple):
        ddp.register_comm_hook(*codec)
    elif codec is not None:
        state, hook = hook_for(codec, model=model, seed=0)
        ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()

    return step


def run(label, make, x, y, steps, warmup):
    step = make_step(make() if make is not None else None, x, y)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    syncs = "none"
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    except RuntimeError as e:
        syncs = str(e).split("\n")[0][:120]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    if syncs != "none":  # the step stopped inside backward: DDP's reduction is left unfinished
        step = make_step(make() if make is not None else None, x, y)
        for _ in range(warmup):
            step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return {"hook": label, "ms_per_step": statistics.median(times), "best_ms": min(times), "host_syncs": syncs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-ddp-step.json")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args(argv)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29677")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.backends.cudnn.benchmark = True
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device="cuda", generator=g).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device="cuda", generator=g)
    rows = [run("DDP default (fp32 all-reduce)", None, x, y, args.steps, args.warmup)]
    for label, make in {**TORCH_HOOKS, **CODECS}.items():
        rows.append(run(label, make, x, y, args.steps, args.warmup))
    base = rows[0]["ms_per_step"]
    print("| hook | ms/step | × default | host syncs in a step |\n|---|---:|---:|---|")
    for r in rows:
        r["x_default"] = r["ms_per_step"] / base
        print(f"| {r['hook']} | {r['ms_per_step']:.2f} | {r['x_default']:.3f} | {r['host_syncs']} |")
    write_results(args.out, "ddp_step", rows, device=device_name("cuda"), batch=args.batch, steps=args.steps)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
