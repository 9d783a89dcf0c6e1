"""Figures from run folders, laid out like the sources' figures.

``plot_run(path)`` reads a run folder (and its sweep's sub-runs) and writes PNGs into
``<run>/figures/``; the layout follows the run's kind (or ``figure`` in its config):

* ``convex``: (A) train loss and (B) test accuracy per epoch, (C) suboptimality F(w) − F* on a log
  scale (with the Theorem 3 bound dashed, where recorded; left out where F* is unknown), (D) the
  shrinkage factor q — the slowdown reproduction's panels; one colour per codec, one line style
  per compensation.
* ``distributed``: F(x) − F* against iterations, bits sent and gradient computations (the IntSGD
  paper's three panels).
* ``curve``: g(x) and its rounding onto each format (the slowdown paper's Figure 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def _subruns(path: Path):
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    subs = sorted((path / "runs").glob("*/metrics.csv")) if (path / "runs").exists() else []
    if subs:
        return cfg, [(p.parent.name, p.parent) for p in subs]
    return cfg, [(cfg.get("name", path.name), path)]


def _figure(ncols: int, nrows: int = 1, size=(5.0, 3.6)):
    """A figure of its own (matplotlib's object interface: no pyplot state, no backend switched
    for the caller; PNGs are written through Agg).  matplotlib takes 0.5 s to import: it is
    imported where a figure is drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.reshape(-1)


def _seeds_note(fig, cfg: dict, notes=()) -> None:
    lines = list(notes)
    if cfg.get("seeds", 1) > 1:
        lines.insert(0, f"mean of {cfg['seeds']} seeds, band ±1 sd across seeds (log axes: geometric mean ×/÷ e^sd "
                        "of the logs)")
    if lines:
        fig.suptitle("\n".join(lines), fontsize=9)


def _save(fig, path: Path, name: str) -> str:
    out = path / "figures" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")  # legends placed beside the panels included
    return str(out.relative_to(path))


def _curve(ax, df, x: str, y: str, *, label=None, log: bool = False, scale: float = 1.0, **kw):
    """y against x.  With several seeds (a ``seed`` column): their mean at each logged step and a
    band of ±1 standard deviation across seeds — in log space on log axes (geometric mean ×/÷
    e^sd, as the IntSGD figures draw it)."""
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


def _parts(label: str) -> dict:
    """A sub-run's label ``codec=fp8,compensate=none`` as {codec: fp8, compensate: none}."""
    return dict(kv.split("=", 1) for kv in label.split(",") if "=" in kv)


def _ordered(cfg: dict, subs):
    """The sub-runs in the config's sweep order (fp32, fp16, fp8, fp4 as listed), the extra runs
    after them, instead of the folders' alphabetical order."""
    sweep = {k.split(".")[-1]: [str(v) for v in vals] for k, vals in (cfg.get("sweep") or {}).items()}

    def key(item):
        parts = _parts(item[0])
        extra = any(k not in sweep for k in parts)
        return (extra, [sweep[k].index(parts[k]) if k in sweep and parts.get(k) in sweep[k] else len(sweep.get(k, ()))
                        for k in sweep])

    return sorted(subs, key=key)


_LINESTYLES = ["-", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
_MARKERS = ["o", "s", "^", "v", "D"]


def _styles(subs) -> dict:
    """label → line keywords: one colour per codec (or per value of the first key that varies), one
    line style per compensation (or per value of the next varying key), and thinner lines for
    later colours, so that curves lying on each other (fp32, fp16, fp8) stay visible."""
    parts = [_parts(label) for label, _ in subs]
    varying = [k for k in dict.fromkeys(k for p in parts for k in p) if len({p.get(k) for p in parts}) > 1]
    colour_key = "codec" if "codec" in varying else (varying[0] if varying else None)
    rest = [k for k in varying if k != colour_key]
    style_key = "compensate" if "compensate" in rest else (rest[0] if rest else None)
    rest = [k for k in rest if k != style_key]
    marker_key = rest[0] if rest else None  # a third key (an extra run's stepsize, say): markers
    colours = list(dict.fromkeys(p.get(colour_key) for p in parts))
    styles = list(dict.fromkeys(p.get(style_key) for p in parts))
    marks = list(dict.fromkeys(p.get(marker_key) for p in parts))
    out = {}
    for (label, _), p in zip(subs, parts):
        c = colours.index(p.get(colour_key))
        out[label] = {"color": f"C{c % 10}", "linestyle": _LINESTYLES[styles.index(p.get(style_key)) % len(_LINESTYLES)],
                      "linewidth": max(0.9, 2.8 - 0.5 * c)}
        m = marks.index(p.get(marker_key))
        if m:
            out[label].update(marker=_MARKERS[(m - 1) % len(_MARKERS)], markevery=0.1, markersize=4)
    return out


def _legend(fig, ax) -> None:
    """The legend in the first panel, or beside the figure when it has many entries."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) <= 8:
        ax.legend(fontsize=7)
    else:
        fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))


def plot_convex(path: Path, cfg: dict, subs) -> list[str]:
    """Panels (A) train loss, (B) test accuracy, (C) F(w) − F* with the Theorem 3 bound dashed where
    recorded, (D) q.  (C) is left out, and the figure says so, when F* is not known (λ = 0: the
    unregularized loss need not attain its infimum), as is (B) without held-out rows."""
    subs = _ordered(cfg, subs)
    frames = {label: pd.read_csv(p / "metrics.csv") for label, p in subs}
    has_sub = any(df["suboptimality"].notna().any() for df in frames.values())
    has_acc = any(df["test_accuracy"].notna().any() for df in frames.values())
    has_bound = any("bound" in df and df["bound"].notna().any() and "seed" not in df for df in frames.values())
    panels = [("loss", "(A) train loss")]
    if has_acc:
        panels.append(("test_accuracy", "(B) test accuracy (%)"))
    if has_sub:
        panels.append(("suboptimality", "(C) F(w) − F*" + ("  (dashed: Theorem 3 bound)" if has_bound else "")))
    panels.append(("q", "(D) shrinkage q = ‖g̃‖/‖g‖"))
    fig, ax = _figure(2, 2) if len(panels) == 4 else _figure(len(panels))
    styles = _styles(subs)
    for label, df in frames.items():
        kw = styles[label]
        for a, (col, _) in zip(ax, panels):
            if col == "suboptimality":
                d = df.assign(suboptimality=df["suboptimality"].clip(lower=1e-16))
                _curve(a, d, "epoch", col, label=label, log=True, **kw)
                a.set_yscale("log")
                if has_bound and "bound" in df and df["bound"].notna().any():
                    a.semilogy(df["epoch"], df["bound"], "--", color=kw["color"], linewidth=1.0, alpha=0.7)
            elif col == "test_accuracy":
                _curve(a, df, "epoch", col, label=label, scale=100, **kw)
            else:
                _curve(a, df, "epoch", col, label=label, **kw)
    for a, (_, t) in zip(ax, panels):
        a.set_title(t, fontsize=10)
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    _legend(fig, ax[0])
    notes = []
    if not has_sub:
        notes.append("F(w) − F* is not drawn: with λ = 0 the loss need not attain its infimum, so F* is not known")
    if not has_acc:
        notes.append("no test accuracy: no held-out rows (data.test_fraction = 0)")
    _seeds_note(fig, cfg, notes)
    return [_save(fig, path, "curves.png")]


def plot_distributed(path: Path, cfg: dict, subs) -> list[str]:
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
