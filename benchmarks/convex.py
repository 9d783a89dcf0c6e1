"""Speed of the convex lab on the CPU: the IntSGD a5a figure (4 methods × 20 seeds × 5020
iterations over 12 simulated workers) end to end, the step of one batched program of R seeds
against R single-seed steps, and — when their traces are given — the IntSGD authors' code as the
peer (their logistic_regression code under 12 MPI processes, one seed per method, timed by the
caller: ``--authors-seconds METHOD=SECONDS …``).

    LOWBIT_DATA=../shared/data python benchmarks/convex.py --out benchmarks/results/convex-cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from common import timer, write_results

from lowbit.compress import get_compressor
from lowbit.experiments import get, make_config
from lowbit.data.split import train_test
from lowbit.optim import DIANA, diana_stepsize
from lowbit.problems import LogisticRegression

METHODS = {"l-svrg": "identity", "vr-natdiana": "natural", "vr-hintdiana": "hintsgd", "vr-intdiana": "intsgd"}


def step_seconds(method: str, runs: int, reps: int = 200) -> float:
    """Median seconds of one DIANA step with ``runs`` seeds batched (runs = 0: one unbatched run)."""
    cfg = make_config(get("intsgd-a5a"))
    A, y, _, _ = train_test(cfg.data)
    split = LogisticRegression(A, y, cfg.problem.lam).split(12)
    P, b = split.problem(), split.m // 20
    name = METHODS[method]
    codec = get_compressor(name, n_workers=12) if name in ("intsgd", "hintsgd") else name
    x = torch.zeros(P.d, dtype=torch.float64) if runs == 0 else torch.zeros(runs, P.d, dtype=torch.float64)
    opt = DIANA([x], lr=diana_stepsize(P.L, split.batch_smoothness(b), 12), n_workers=12, codec=codec,
                local_n=split.m, batch_size=b, vr=True)
    for _ in range(20):
        opt.step(split.grads)
    return timer("cpu")(lambda: opt.step(split.grads), reps)


def figure_seconds(jobs: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lowbit", "reproduce", "intsgd-a5a", "--jobs", str(jobs), "--out", d,
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        s = json.load(open(f"{d}/summary.json"))
    return wall, s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-convex.json")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--authors-seconds", nargs="*", default=[], metavar="METHOD=SECONDS",
                    help="wall time of one seed of the authors' code per method, measured on this machine")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'':58} {'seconds':>10} {'ratio':>8}")
    for m in METHODS:
        one, many = step_seconds(m, 0), step_seconds(m, args.seeds)
        rows.append({"name": f"{m}: {args.seeds} seeds batched vs {args.seeds} single steps", "seconds": many,
                     "peer_seconds": args.seeds * one, "speedup": args.seeds * one / many})
        print(f"{rows[-1]['name']:58} {many:10.4g} {rows[-1]['speedup']:7.1f}x")
    authors = {k: float(v) for k, v in (a.split("=") for a in args.authors_seconds)}
    for jobs in (1, 2):
        wall, s = figure_seconds(jobs)
        row = {"name": f"lowbit reproduce intsgd-a5a --jobs {jobs} (4 methods x {args.seeds} seeds x 5020 it)",
               "seconds": wall, "target_seconds": 60,
               "final_suboptimality": {r["label"]: r["final"]["suboptimality"] for r in s["runs"]},
               "published": [{k: p[k] for k in ("quantity", "published", "measured", "holds")} for p in s["published"]]}
        if authors:
            # the authors' code: seconds per (method, seed), times the figure's 4 x 20
            row["peer_seconds"] = sum(authors.values()) * args.seeds
            row["speedup"] = row["peer_seconds"] / wall
        rows.append(row)
        extra = f" {row['speedup']:7.0f}x" if authors else ""
        print(f"{row['name'][:58]:58} {wall:10.4g}{extra}")
    write_results(args.out, "convex", rows, authors_seconds_per_seed=authors or None,
                  machine=f"{torch.get_num_threads()} CPU threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
