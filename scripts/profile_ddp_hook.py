"""Where a lowbit DDP hook's time goes: torch.profiler over a few ResNet-18 steps (batch 512,
bf16 autocast) under DDP with one codec's hook (NCCL, world size 1); prints the top operators by
device time and by host time.

    python scripts/profile_ddp_hook.py --codec cast --format fp8
"""

import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from ddp_step import make_step  # noqa: E402
from lowbit import get_compressor  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="cast")
    ap.add_argument("--format", default=None)
    ap.add_argument("--rows", type=int, default=18)
    a = ap.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29678")
    dist.init_process_group("nccl", rank=0, world_size=1)
    opts = {"format": a.format} if a.format else {}
    x = torch.randn(512, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (512,), device="cuda")
    step = make_step(get_compressor(a.codec, **opts) if a.codec != "none" else None, x, y)

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    print(ka.table(sort_by="self_cuda_time_total", row_limit=a.rows, max_name_column_width=60))
    print(ka.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=60))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
