"""The ``curve`` kind: a function of x rounded onto formats (the slowdown paper's Figure 1)."""

from __future__ import annotations

import torch

from ..quantize import quantize
from .config import RunConfig
from .kind import Kind, register
from .results import RunFolder


def run_curve(cfg: RunConfig, folder: RunFolder, **_) -> dict:
    c = cfg.curve
    x = torch.linspace(0, c.x_max, c.points, dtype=torch.float64)
    g = torch.exp(c.rate * x).to(torch.float32)
    rows, summary = [], {}
    for fmt in c.formats:
        v = g if fmt in ("float32", "fp32") else quantize(g, fmt)
        for xi, gi, vi in zip(x.tolist(), g.tolist(), v.tolist()):
            rows.append({"x": xi, "format": fmt, "g": gi, "quantized": vi})
        nz = (v != 0).nonzero()
        summary[fmt] = {
            "distinct_values": int(torch.unique(v).numel()),
            "last_nonzero_x": float(x[int(nz[-1])]) if nz.numel() else None,
            "zero_fraction": float((v == 0).double().mean()),
            "q": float(v.double().norm() / g.double().norm()),
        }
    folder.write_metrics(rows)
    return {"formats": summary}


def report(runs: list) -> list[str]:
    return [f"{fmt:14} distinct values {v['distinct_values']:4}  last non-zero x {v['last_nonzero_x']}  q {v['q']:.4f}"
            for r in runs for fmt, v in r["formats"].items()]


KIND = register(Kind("curve", run_curve, report, figure="curve"))
