"""What every benchmark script shares: the timer, the device's name, writing results, the GPU rounding scripts'
input, and timers wrapped around a library's calls."""

from __future__ import annotations

import functools
import inspect
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import torch


def timer(device: str, inner: int = 5, warm_s: float = 0.25, backlog: bool = False):
    """median seconds per call of ``fn``; on CUDA, ``inner`` calls are queued between two events so
    that host-side launch overhead stays hidden behind device work, as in a training loop, after
    ``warm_s`` seconds of calls: an idle GPU runs at a low clock and takes tens of milliseconds to
    reach its steady one, which would otherwise weigh on compute-bound kernels measured after a
    pause (a compilation, another benchmark's host work).

    ``backlog``: the device time of back-to-back calls.  Where the host takes longer to issue a call
    than the device to run it (a few kernels of tens of microseconds each behind Python code), the
    events above time the host; here a device-side sleep longer than the host's issue time of the
    ``inner`` calls is queued first, so the calls wait in the stream and run back to back."""
    if device == "cuda":
        def run(fn, reps):
            t0 = time.perf_counter()
            while True:
                fn()
                torch.cuda.synchronize()
                if time.perf_counter() - t0 >= warm_s:
                    break
            cycles = 0
            if backlog:
                # the sleep: 3× the host's issue time of `inner` calls, in cycles of a 2 GHz clock
                # (a slower clock only lengthens it)
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                issue = time.perf_counter() - t0
                torch.cuda.synchronize()
                cycles = int(3 * issue * 2e9) + 100_000
            times = []
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                if cycles:
                    torch.cuda._sleep(cycles)
                a.record()
                for _ in range(inner):
                    fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3 / inner)
            return statistics.median(times)
    else:
        def run(fn, reps):
            fn()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
    return run


def device_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def write_results(out: str, benchmark: str, rows: list, **meta) -> None:
    """JSON {"meta", "rows"} with the date, torch, Python and CPU threads added to ``meta``."""
    meta = {"benchmark": benchmark, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": sys.version.split()[0], "cpu_threads": torch.get_num_threads(),
            **meta}
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {out}")


def rounding_input(n: int):
    """(x, y, run, copy_s) for the GPU rounding scripts: n standard-normal float32 on the GPU with
    the first 4,096 scaled by 10^-3 (some values in the formats' subnormal ranges), an output
    buffer of the same shape, a back-to-back timer (``timer("cuda", backlog=True)``) and the
    seconds of one copy of x into y (the floor)."""
    x = torch.randn(n, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    x[:4096] *= 1e-3
    y = torch.empty_like(x)
    run = timer("cuda", backlog=True)
    return x, y, run, run(lambda: y.copy_(x), 20)


def time_calls(owner, name: str, label: str, note) -> None:
    """Replace ``owner.name`` (a function of a module or class, a static method kept static) by one
    that calls ``note(label, start)`` with its start (``time.perf_counter()``) after every call:
    where a library spends its time across threads, which cProfile would not follow (DDP's hook
    and its callbacks run on other threads).  The wrapper keeps the signature (DDP reads a hook's)."""
    fn = getattr(owner, name)
    static = isinstance(owner, type) and isinstance(inspect.getattr_static(owner, name), staticmethod)

    @functools.wraps(fn)
    def timed(*args, **kw):
        start = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            note(label, start)

    setattr(owner, name, staticmethod(timed) if static else timed)
