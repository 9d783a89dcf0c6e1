"""Figures from run folders, laid out like the sources' figures.

``plot_run(path)`` reads a run folder (and its sweep's sub-runs) and writes PNGs into
``<run>/figures/``; the layout follows the run's kind (or ``figure`` in its config):

* ``convex``: (A) train loss and (B) test accuracy per epoch, (C) suboptimality F(w) − F* on a log
  scale (with the Theorem 3 bound dashed, where recorded), (D) the shrinkage factor q — the
  slowdown reproduction's panels.
* ``distributed``: F(x) − F* against iterations, bits sent and gradient computations (the IntSGD
  paper's three panels).
* ``curve``: g(x) and its rounding onto each format (the slowdown paper's Figure 1).
"""

from __future__ import annotations

from pathlib import Path

import yaml


def _subruns(path: Path):
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    subs = sorted((path / "runs").glob("*/metrics.csv")) if (path / "runs").exists() else []
    if subs:
        return cfg, [(p.parent.name, p.parent) for p in subs]
    return cfg, [(cfg.get("name", path.name), path)]


def _figure(ncols: int, nrows: int = 1, size=(5.0, 3.6)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes.reshape(-1)


def _seeds_note(fig, cfg: dict) -> None:
    if cfg.get("seeds", 1) > 1:
        fig.suptitle(f"mean of {cfg['seeds']} seeds, band ±1 sd across seeds (log axes: geometric mean ×/÷ e^sd of "
                     "the logs)", fontsize=9)


def _save(fig, path: Path, name: str) -> str:
    out = path / "figures" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(out.relative_to(path))


def _curve(ax, df, x: str, y: str, *, label=None, log: bool = False, scale: float = 1.0, **kw):
    """y against x.  With several seeds (a ``seed`` column): their mean at each logged step and a
    band of ±1 standard deviation across seeds — in log space on log axes (geometric mean ×/÷
    e^sd, as the IntSGD figures draw it)."""
    import numpy as np

    if "seed" not in df or df["seed"].nunique() <= 1:
        line, = ax.plot(df[x], scale * df[y], label=label, **kw)
        return line
    key = "step" if "step" in df else "epoch"
    vals = df[y].clip(lower=1e-300).map(np.log) if log else df[y]
    g = df.assign(_v=vals).groupby(key, sort=True)
    xs, mean, sd = g[x].mean(), g["_v"].mean(), g["_v"].std(ddof=0).fillna(0.0)
    lo, mid, hi = (mean - sd, mean, mean + sd) if not log else (np.exp(mean - sd), np.exp(mean), np.exp(mean + sd))
    n = int(df["seed"].nunique())
    line, = ax.plot(xs, scale * mid, label=f"{label} (mean of {n} seeds)" if label else None, **kw)
    ax.fill_between(xs, scale * lo, scale * hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def plot_convex(path: Path, cfg: dict, subs) -> list[str]:
    import pandas as pd

    fig, ax = _figure(2, 2)
    for label, p in subs:
        df = pd.read_csv(p / "metrics.csv")
        _curve(ax[0], df, "epoch", "loss", label=label)
        if df["test_accuracy"].notna().any():
            _curve(ax[1], df, "epoch", "test_accuracy", label=label, scale=100)
        df["suboptimality"] = df["suboptimality"].clip(lower=1e-16)
        line = _curve(ax[2], df, "epoch", "suboptimality", label=label, log=True)
        ax[2].set_yscale("log")
        if "bound" in df and df["bound"].notna().any() and "seed" not in df:
            ax[2].semilogy(df["epoch"], df["bound"], "--", color=line.get_color(), alpha=0.7)
        _curve(ax[3], df, "epoch", "q", label=label)
    titles = ["(A) train loss", "(B) test accuracy (%)", "(C) F(w) − F*  (dashed: Theorem 3 bound)",
              "(D) shrinkage q = ‖g̃‖/‖g‖"]
    for a, t in zip(ax, titles):
        a.set_title(t, fontsize=10)
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    _seeds_note(fig, cfg)
    return [_save(fig, path, "curves.png")]


def plot_distributed(path: Path, cfg: dict, subs) -> list[str]:
    import pandas as pd

    fig, ax = _figure(3)
    for label, p in subs:
        df = pd.read_csv(p / "metrics.csv")
        df["suboptimality"] = df["suboptimality"].clip(lower=1e-16)
        for a, x in zip(ax, ["step", "width_bits", "grad_computations"]):
            _curve(a, df, x, "suboptimality", label=label, log=True)
    for a, xl in zip(ax, ["iteration", "bits sent (IntSGD count)", "gradient computations"]):
        a.set_xlabel(xl)
        a.set_ylabel("f(x) − f*")
        a.set_yscale("log")
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    _seeds_note(fig, cfg)
    return [_save(fig, path, "suboptimality.png")]


def plot_curve(path: Path, cfg: dict, subs) -> list[str]:
    import pandas as pd

    fig, ax = _figure(2)
    df = pd.read_csv(subs[0][1] / "metrics.csv")
    for fmt, d in df.groupby("format", sort=False):
        ax[0].plot(d["x"], d["quantized"], label=fmt, drawstyle="steps-post")
        ax[1].semilogy(d["x"], d["quantized"].clip(lower=1e-12), label=fmt, drawstyle="steps-post")
    ax[0].set_title("g(x) = e^{−0.2x} rounded, no scaling", fontsize=10)
    ax[1].set_title("log scale: the tail flushes to zero", fontsize=10)
    for a in ax:
        a.set_xlabel("x")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return [_save(fig, path, "quantized_curve.png")]


def plot_deep(path: Path, cfg: dict, subs) -> list[str]:
    """Train loss and test accuracy (test loss for VAEs) per epoch, and accuracy against bits sent
    (the slowdown paper's Fig. 2 panels; the IntSGD and ISGQ accuracy-versus-communication view)."""
    import pandas as pd

    fig, ax = _figure(3)
    for label, p in subs:
        df = pd.read_csv(p / "metrics.csv")
        metric = "test_accuracy" if "test_accuracy" in df else "test_loss"
        scale = 100 if metric == "test_accuracy" else 1
        _curve(ax[0], df, "epoch", "train_loss", label=label, log=True)
        _curve(ax[1], df, "epoch", metric, label=label, scale=scale)
        _curve(ax[2], df.assign(mb=df["bits"] / 8e6), "mb", metric, label=label, scale=scale, marker="o", ms=3)
    ax[0].set(xlabel="epoch", ylabel="train loss", yscale="log")
    ax[1].set(xlabel="epoch", ylabel="test accuracy (%)" if metric == "test_accuracy" else "test loss")
    ax[2].set(xlabel="MB sent (all workers)", ylabel=ax[1].get_ylabel())
    ax[0].legend(fontsize=7)
    _seeds_note(fig, cfg)
    return [_save(fig, path, "curves.png")]


LAYOUTS = {"convex": plot_convex, "distributed": plot_distributed, "curve": plot_curve, "deep": plot_deep}


def plot_run(path) -> list[str]:
    """Write the run's figures; returns their paths relative to the run folder."""
    path = Path(path)
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
    cfg, subs = _subruns(path)
    subs = [(label, p) for label, p in subs if (p / "metrics.csv").exists()]
    if not subs:
        raise FileNotFoundError(f"{path} has no metrics yet")
    layout = cfg.get("figure") or cfg.get("kind", "convex")
    return LAYOUTS[layout](path, cfg, subs)
