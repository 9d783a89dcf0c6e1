"""Where a lowbit DDP hook's time goes: torch.profiler over a few ResNet-18 steps (batch 512,
bf16 autocast) under DDP with one codec's hook (NCCL, world size 1); prints the top operators by
device time and by host time.

    python scripts/profile_ddp_hook.py --codec cast --format fp8
    python scripts/profile_ddp_hook.py --codec cast --format fp8 --python   # Python functions (cProfile)
    python scripts/profile_ddp_hook.py --codec intsgd --opt alpha=64 bits=8 n_workers=1 --cuda-graph
        # each bucket's captured exchange replayed alone (µs), and the kernels a step launches
"""

import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from common import time_calls  # noqa: E402
from ddp_step import make_step, replay_us  # noqa: E402
from lowbit import get_compressor  # noqa: E402


def _install_timers():
    """Timers around the hook and the pieces it calls (the hook and its callbacks run on other
    threads than this one, which cProfile would not see): {label: seconds}."""
    import time
    from collections import defaultdict

    import lowbit.distributed.hooks as H
    from lowbit.distributed.bucket import BucketCoder

    spent = defaultdict(float)

    def note(label, start):
        spent[label] += time.perf_counter() - start

    for name in ("encode_decoded", "nbytes", "to_sum_buffer", "from_sum_buffer", "decode_sum", "mean_decoded",
                 "to_bytes", "from_bytes", "exact_part", "join"):
        time_calls(BucketCoder, name, f"BucketCoder.{name}", note)
    from lowbit.compress.cast import Cast
    from lowbit.compress.intsgd import IntSGD

    for cls in (Cast, IntSGD):
        for name in ("flat_encode", "flat_decode"):
            time_calls(cls, name, f"{cls.__name__}.{name}", note)
    for name in ("bucket", "states", "_end_step"):
        time_calls(H.HookState, name, f"HookState.{name}", note)
    time_calls(H, "draw_ahead", "draw_ahead", note)
    time_calls(H.dist, "all_reduce", "dist.all_reduce", note)
    time_calls(H, "_all_gather_into", "all-gather", note)
    time_calls(H, "compressed_hook", "compressed_hook (all of it, before the callback)", note)
    return spent


def _host_times(step, steps, spent):
    """Host time per step in each timed piece, and the step's wall time."""
    import time

    step()
    torch.cuda.synchronize()
    spent.clear()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    spent["the step (wall)"] = time.perf_counter() - t
    return sorted(((k, 1e3 * v / steps) for k, v in spent.items()), key=lambda kv: -kv[1])


def _replay_host_us(state):
    """The host's time for one replay call of the hook (``hooks._replay``: the side stream's wait,
    the launch, the CUDA future), median of 200, the device idle before each."""
    import statistics
    import time

    from lowbit.distributed.hooks import _replay

    buf, _, b = next(iter(state.replays.values()))
    times = []
    for _ in range(200):
        torch.cuda.synchronize()
        t = time.perf_counter()
        _replay(state, b, buf)
        times.append(time.perf_counter() - t)
    torch.cuda.synchronize()
    print(f"one replay call: {1e6 * statistics.median(times):.1f} µs on the host")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="cast")
    ap.add_argument("--format", default=None)
    ap.add_argument("--rows", type=int, default=18)
    ap.add_argument("--python", action="store_true", help="cProfile of 20 steps: the host's Python functions")
    ap.add_argument("--opt", nargs="*", default=[], help="more codec options, key=value (numbers parsed)")
    ap.add_argument("--cuda-graph", action="store_true", help="the hook replays each bucket from a CUDA graph")
    a = ap.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29678")
    dist.init_process_group("nccl", rank=0, world_size=1)
    opts = {"format": a.format} if a.format else {}
    for kv in a.opt:
        k, v = kv.split("=", 1)
        opts[k] = float(v) if "." in v else int(v) if v.lstrip("-").isdigit() else v
    x = torch.randn(512, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (512,), device="cuda")
    spent = _install_timers() if a.python else None
    step = make_step(get_compressor(a.codec, **opts) if a.codec != "none" else None, x, y, cuda_graph=a.cuda_graph)

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    if a.cuda_graph:
        for size, us in replay_us(step.hook_state):
            print(f"bucket of {size / 1e6:6.2f} M values: " + (f"{us:8.1f} µs per replay" if us else "runs eagerly"))
        _replay_host_us(step.hook_state)
    if a.python:
        report = _host_times(step, 20, spent)
        for name, ms in report:
            print(f"{name:40s} {ms:8.3f} ms / step (host)")
        dist.destroy_process_group()
        return
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
