"""The simulated cluster at scale: ``SimulatedCluster(n, codec).reduce(rows)`` of n × d float32
rows (batched mode: one generator), for intsgd, natural and qsgd; ms per call (median of
``--reps`` after a warm-up), Gelem/s, and peak memory beyond the rows as a multiple of their size
(returning the decoded rows, and with ``inplace=True``, which writes them over the rows), against
the floor of reading the rows once (a ``rows.sum(0)``, measured in the same run).

    python benchmarks/simulated.py --out bench-simulated.json                   (a CUDA device: n = 64, 1024; d = 10^6)
    python benchmarks/simulated.py --device cpu --n 64 256 --d 10000             (2 cores)
    python benchmarks/simulated.py --profile natural --n 1024                    (top kernels of one codec)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import device_name, write_results

from lowbit import get_compressor
from lowbit.distributed import SimulatedCluster

CODECS = {
    "intsgd": lambda n: get_compressor("intsgd", n_workers=n),
    "intsgd int8": lambda n: get_compressor("intsgd", bits=8, n_workers=n),
    "natural": lambda n: get_compressor("natural"),
    "qsgd": lambda n: get_compressor("qsgd", levels=16),
}


def timed(fn, device, reps):
    fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, nargs="+", default=None)
    ap.add_argument("--d", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", default=None, help="print the top kernels of this codec's reduce")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    dev = a.device
    ns = a.n or ([64, 1024] if dev == "cuda" else [64, 256])
    d = a.d or (10**6 if dev == "cuda" else 10**4)
    rows_all = torch.randn(max(ns), d, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    out = []
    for n in ns:
        rows = rows_all[:n]
        floor = timed(lambda: rows.sum(0), dev, a.reps)
        for name, make in CODECS.items():
            if a.profile and name != a.profile:
                continue
            cl = SimulatedCluster(n, make(n), generator=torch.Generator(device=dev).manual_seed(1))
            if dev == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            s = timed(lambda: cl.reduce(rows), dev, a.reps)
            peak = (torch.cuda.max_memory_allocated() - base) / rows.nbytes if dev == "cuda" else float("nan")
            peak_in = float("nan")
            if dev == "cuda":  # the decoded rows written over the input rows (reduce(..., inplace=True))
                work = rows.clone()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                cl.reduce(work, inplace=True)
                torch.cuda.synchronize()
                peak_in = (torch.cuda.max_memory_allocated() - base) / rows.nbytes
                del work
            row = {"codec": name, "n": n, "d": d, "ms": 1e3 * s, "gelem_s": n * d / s / 1e9, "floor_ms": 1e3 * floor,
                   "x_floor": s / floor, "peak_extra_x_rows": peak, "peak_extra_inplace_x_rows": peak_in}
            out.append(row)
            print(f"{name:11s} n={n:5d} d={d:8d}  {row['ms']:9.2f} ms  {row['gelem_s']:7.2f} Gelem/s  "
                  f"{row['x_floor']:7.1f}x the read floor ({row['floor_ms']:.2f} ms)  peak +{peak:.2f}x rows"
                  f" (in place +{peak_in:.2f}x)", flush=True)
            if a.profile:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
                with profile(activities=acts) as prof:
                    cl.reduce(rows)
                    if dev == "cuda":
                        torch.cuda.synchronize()
                key = "self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total"
                print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=50))
    if a.out:
        write_results(a.out, "simulated", out, device=device_name(dev))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
