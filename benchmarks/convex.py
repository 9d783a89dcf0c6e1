"""Speed of the convex lab on the CPU: time per iteration of the simulated 12-worker DIANA family
on a5a, and the whole `lowbit reproduce intsgd-a5a` (5020 iterations × 4 methods) end to end.

    LOWBIT_DATA=../shared/data python benchmarks/convex.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import torch

from lowbit.experiments import get, make_config
from lowbit.experiments.runner import load_data


def per_iteration(method: str, iters: int = 400) -> float:
    from lowbit.compress import get_compressor
    from lowbit.optim import DIANA, diana_stepsize
    from lowbit.problems import LogisticRegression

    cfg = make_config(get("intsgd-a5a"))
    A, y, _, _ = load_data(cfg)
    split = LogisticRegression(A, y, cfg.problem.lam).split(12)
    P = split.problem()
    b = max(1, split.m // 20)
    codec = {"l-svrg": "identity", "vr-natdiana": "natural", "vr-hintdiana": get_compressor("hintsgd", n_workers=12),
             "vr-intdiana": get_compressor("intsgd", n_workers=12)}[method]
    x = torch.zeros(P.d, dtype=torch.float64)
    opt = DIANA([x], lr=diana_stepsize(P.L, split.batch_smoothness(), 12), n_workers=12, codec=codec,
                local_n=split.m, batch_size=b, vr=True)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        opt.step(split.grads)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[50:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-convex.json")
    args = ap.parse_args(argv)
    rows = []
    for m in ("l-svrg", "vr-natdiana", "vr-hintdiana", "vr-intdiana"):
        t = per_iteration(m)
        rows.append({"name": f"{m} step (12 workers, a5a)", "seconds": t})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lowbit", "reproduce", "intsgd-a5a", "--out", d, "--quiet"], check=True,
                       stdout=subprocess.DEVNULL)
        e2e = time.perf_counter() - t0
        runs = json.load(open(f"{d}/summary.json"))["runs"]
    rows.append({"name": "lowbit reproduce intsgd-a5a (5020 it × 4 methods)", "seconds": e2e, "target_seconds": 60})
    print(f"{'':52} {'seconds':>10}")
    for r in rows:
        print(f"{r['name']:52} {r['seconds']:10.4g}")
    print("final suboptimality: " + ", ".join(f"{r['label']} {r['final']['suboptimality']:.2e}" for r in runs))
    meta = {"benchmark": "convex", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.machine(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
