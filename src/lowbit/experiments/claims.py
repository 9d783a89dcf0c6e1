"""The sources' findings, checked on measured data: each checker returns
[{"name", "holds", "detail"}, …] for a reproduction's summary.json."""

from __future__ import annotations

import math

from ..formats import get_format
from .results import atomic_write


def _runs(summary):
    return [r for r in summary["runs"] if "config" in r]


def _get(run, dotted):
    cur = run["config"]
    for p in dotted.split("."):
        cur = cur[p]
    return cur


def _claim(name, holds, detail):
    return {"name": name, "holds": bool(holds), "detail": detail}


def _is_fp4(codec: str) -> bool:
    return codec in ("fp4", "float4_e2m1fn", "slowdown_fp4")


def slowdown(cfg, folder, summary) -> list[dict]:
    """FP4 gradients converge slower than FP32, and FP4 has the lowest mean shrinkage q (per
    optimizer); where adaptive compensation ran, it narrows FP4's gap."""
    out = []
    runs = _runs(summary)
    for opt in sorted({_get(r, "optim.name") for r in runs}):
        mine = [r for r in runs if _get(r, "optim.name") == opt and _get(r, "optim.lr") == cfg.optim.lr]
        plain = {(_get(r, "quant.codec")): r for r in mine if _get(r, "quant.compensate") == "none"}
        if "fp32" not in plain:
            continue
        base = plain["fp32"]["final"]["loss"]
        for codec, r in plain.items():
            if not _is_fp4(codec):
                continue
            loss = r["final"]["loss"]
            out.append(_claim(f"{opt}: {codec} converges slower than fp32", loss > base,
                              f"final train loss {loss:.6g} vs fp32 {base:.6g}"))
            others = {c: p["q_mean"] for c, p in plain.items() if c != codec and not _is_fp4(c)}
            out.append(_claim(f"{opt}: {codec} has the lowest mean q", all(r["q_mean"] < q for q in others.values()),
                              f"mean q {r['q_mean']:.4f}; others " + ", ".join(f"{c} {q:.4f}" for c, q in others.items())))
            comp = [x for x in mine if _get(x, "quant.codec") == codec and _get(x, "quant.compensate") != "none"]
            for c in comp:
                cl = c["final"]["loss"]
                out.append(_claim(f"{opt}: {codec} with {_get(c, 'quant.compensate')} compensation closes part of the gap",
                                  cl < loss, f"final train loss {cl:.6g} (uncompensated {loss:.6g}, fp32 {base:.6g})"))
        bigger = [r for r in runs if _get(r, "optim.name") == opt and _get(r, "optim.lr") > cfg.optim.lr
                  and _is_fp4(_get(r, "quant.codec"))]
        for r in bigger:
            loss = r["final"]["loss"]
            slow = plain.get(_get(r, "quant.codec"), {}).get("final", {}).get("loss", math.inf)
            detail = f"final train loss {loss:.6g} vs fp32 {base:.6g} (at lr {cfg.optim.lr:g}: {slow:.6g})"
            if opt == "adam":
                # Adam's step does not scale with the gradient, so shrinkage does not shorten it: the
                # source's Adam figure shows FP4 at 5e-4 faster than at 1e-4 but above FP32 (0.034 vs
                # about 0.001 after 100 epochs), and that is what is checked
                out.append(_claim(f"adam: {_get(r, 'quant.codec')} at lr {_get(r, 'optim.lr'):g} trains faster than at "
                                  f"lr {cfg.optim.lr:g}", loss < slow, detail))
                continue
            out.append(_claim(f"{opt}: {_get(r, 'quant.codec')} at lr {_get(r, 'optim.lr'):g} trains at least as fast as "
                              f"fp32 at lr {cfg.optim.lr:g}", loss <= base * 1.01, detail))
    return out


def theory(cfg, folder, summary) -> list[dict]:
    """Every measured suboptimality curve lies under its Theorem 3 bound; the stepsize μ/q̂
    (adaptive compensation) closes at least half of the gap between FP4 and FP32."""
    out = []
    runs = _runs(summary)
    for r in runs:
        label = r["label"] or _get(r, "quant.codec")
        th = r.get("theory", {})
        if "error" in th or not th:
            out.append(_claim(f"{label}: Theorem 3 applies", False, th.get("error", "no bound recorded")))
            continue
        df = folder.sub(r["label"]).metrics() if r["label"] else folder.metrics()
        ratio = (df["suboptimality"] / df["bound"]).max()
        out.append(_claim(f"{label}: measured F(w)−F* lies under the Theorem 3 bound", ratio <= 1.0,
                          f"max measured/bound = {ratio:.3g} over {len(df)} points; rate {th['rate']:.6f}, "
                          f"floor {th['floor']:.3g}"))
    plain = {_get(r, "quant.codec"): r for r in runs if _get(r, "quant.compensate") == "none"}
    comp = [r for r in runs if _get(r, "quant.compensate") != "none"]
    if "fp32" in plain:
        base = plain["fp32"]["final"]["suboptimality"]
        for r in comp:
            codec = _get(r, "quant.codec")
            slow = plain.get(codec, {}).get("final", {}).get("suboptimality", math.inf)
            got = r["final"]["suboptimality"]
            closed = (slow - got) / (slow - base) if slow > base else float("nan")
            out.append(_claim(f"{codec}: the larger stepsize μ/q̂ recovers most of the fp32 rate",
                              closed >= 0.5,
                              f"final F−F* {got:.4g} vs fp32 {base:.4g} and {slow:.4g} at μ: "
                              f"{100 * closed:.0f}% of the gap closed"))
    return out


def intsgd(cfg, folder, summary) -> list[dict]:
    """VR-IntDIANA converges linearly to a small suboptimality while sending integers."""
    runs = {_get(r, "dist.method"): r for r in _runs(summary)}
    out = []
    target = 1e-10 if cfg.dist.iterations >= 5000 else 1e-5  # quick: 1500 iterations
    if "vr-intdiana" in runs:
        r = runs["vr-intdiana"]
        sub = r["final"]["suboptimality"]
        out.append(_claim(f"VR-IntDIANA reaches f(x)−f* ≤ {target:g}", sub <= target,
                          f"{sub:.3g} after {r['iterations']} iterations"))
        if "l-svrg" in runs:
            a, b = r["final"]["bits"], runs["l-svrg"]["final"]["bits"]
            out.append(_claim("VR-IntDIANA sends fewer bits than L-SVRG's floats", a < b,
                              f"{a:.4g} vs {b:.4g} payload bits"))
    return out


def fig1(cfg, folder, summary) -> list[dict]:
    """Without scaling, low precision flushes the slowly decaying tail to zero and turns the
    curve into a staircase; the lower the precision, the earlier and coarser."""
    f = summary["runs"][0]["formats"]
    out = []
    order = [k for k in cfg.curve.formats if k in f]
    last = {k: f[k]["last_nonzero_x"] if f[k]["last_nonzero_x"] is not None else -1.0 for k in order}
    bits = {k: get_format(k).code_bits for k in order}
    holds = all(last[a] >= last[b] for a in order for b in order if bits[a] > bits[b])
    out.append(_claim("fewer bits flush the tail earlier", holds,
                      ", ".join(f"{k} ({bits[k]} bits): last non-zero at x={last[k]}" for k in order)))
    low = min(order, key=lambda k: (bits[k], f[k]["distinct_values"]))
    out.append(_claim(f"{low} turns the curve into a staircase", f[low]["distinct_values"] <= 16,
                      f"{f[low]['distinct_values']} distinct values over {cfg.curve.points} points"))
    return out


def slowdown_deep(cfg, folder, summary) -> list[dict]:
    """The slowdown paper's Fig. 2: with FP4 gradients at the base stepsize the network trains
    slower than with FP32; at the larger stepsize FP4 comes close (closes ≥ half the gap in final
    train loss)."""
    runs = _runs(summary)
    base_lr = cfg.deep.lr
    at = {(_get(r, "quant.codec"), _get(r, "deep.lr")): r["final"]["train_loss"] for r in runs}
    out = []
    f32 = at.get(("fp32", base_lr))
    if f32 is None:
        return out
    for (codec, lr), loss in at.items():
        if not _is_fp4(codec) or lr != base_lr:
            continue
        out.append(_claim(f"{codec} at lr {lr:g} trains slower than fp32", loss > f32,
                          f"final train loss {loss:.4f} vs fp32 {f32:.4f}"))
        for (c2, lr2), l2 in at.items():
            if c2 == codec and lr2 > lr:
                gap, left = loss - f32, l2 - f32
                out.append(_claim(f"{codec} at lr {lr2:g} comes close to fp32", gap > 0 and left <= 0.5 * gap,
                                  f"final train loss {l2:.4f}: gap to fp32 {left:+.4f} vs {gap:+.4f} at lr {lr:g}"))
    return out


def intsgd_deep(cfg, folder, summary) -> list[dict]:
    """IntSGD's deep experiments: IntSGD reaches SGD's (uncompressed) test accuracy within 0.5
    points while sending at least 4× fewer bits."""
    runs = {_get(r, "quant.codec"): r["final"] for r in _runs(summary)}
    sgd, ints = runs.get("identity"), runs.get("intsgd")
    if sgd is None or ints is None:
        return []
    da = 100 * (sgd["test_accuracy"] - ints["test_accuracy"])
    ratio = sgd["bits"] / max(ints["bits"], 1.0)
    return [_claim("intsgd matches sgd's test accuracy within 0.5 points", da <= 0.5,
                   f"intsgd {100 * ints['test_accuracy']:.2f}% vs sgd {100 * sgd['test_accuracy']:.2f}%"),
            _claim("intsgd sends at least 4x fewer bits than sgd", ratio >= 4, f"{ratio:.2f}x fewer bits")]


def intsgd_vae(cfg, folder, summary) -> list[dict]:
    """IntSGD trains the VAE as well as SGD: test loss (negative ELBO) within 2% of SGD's."""
    runs = {_get(r, "quant.codec"): r["final"] for r in _runs(summary)}
    sgd, ints = runs.get("identity"), runs.get("intsgd")
    if sgd is None or ints is None:
        return []
    rel = (ints["test_loss"] - sgd["test_loss"]) / abs(sgd["test_loss"])
    return [_claim("intsgd's VAE test loss is within 2% of sgd's", rel <= 0.02,
                   f"intsgd {ints['test_loss']:.3f} vs sgd {sgd['test_loss']:.3f} ({100 * rel:+.2f}%)"),
            _claim("intsgd sends fewer bits than sgd", ints["bits"] < sgd["bits"],
                   f"{sgd['bits'] / max(ints['bits'], 1):.2f}x fewer")]


def halp(cfg, folder, summary) -> list[dict]:
    """The HALP notebook's findings: 8- and 4-bit HALP reach SVRG's test accuracy within 2 points,
    2-bit HALP is clearly worse (more than 2 points below 8-bit), and 8-bit HALP's accuracy does
    not rise as the epoch length T grows."""
    runs = _runs(summary)
    acc = {}
    for r in runs:
        key = (_get(r, "optim.name"), _get(r, "optim.bits"), _get(r, "optim.T_epochs"))
        acc[key] = r["final"]["test_accuracy"]
    svrg = [a for (name, _, _), a in acc.items() if name == "svrg"]
    halp_at = lambda b: [a for (name, bits, T), a in sorted(acc.items(), key=lambda kv: kv[0][2])  # noqa: E731
                         if name == "halp" and bits == b]
    out = []
    if svrg:
        for b in (8, 4):
            if halp_at(b):
                a = max(halp_at(b))
                out.append(_claim(f"{b}-bit HALP comes within 2 points of SVRG", 100 * (svrg[0] - a) <= 2,
                                  f"{100 * a:.2f}% vs SVRG {100 * svrg[0]:.2f}%"))
    if halp_at(2) and halp_at(8):
        a2, a8 = max(halp_at(2)), max(halp_at(8))
        out.append(_claim("2-bit HALP is clearly worse than 8-bit", 100 * (a8 - a2) > 2,
                          f"{100 * a2:.2f}% vs {100 * a8:.2f}%"))
    t_sweep = sorted((T, a) for (name, bits, T), a in acc.items() if name == "halp" and bits == 8)
    if len(t_sweep) > 1:
        (t0, a0), (t1, a1) = t_sweep[0], t_sweep[-1]
        out.append(_claim("8-bit HALP's accuracy does not rise with T", a1 <= a0 + 0.005,
                          ", ".join(f"T={T:g}N: {100 * a:.2f}%" for T, a in t_sweep)))
    return out


_ISGQ_NAMES = {"identity": "32-bit", "onebit": "1-bit SGD", "terngrad": "TernGrad", "qsgd": "QSGD", "isgq": "ISGQ"}


def isgq(cfg, folder, summary) -> list[dict]:
    """ISGQ's table: per model and method, test accuracy and bits sent per worker per iteration
    (written to ``table.md``).  Claims: ISGQ sends fewer bits than 32-bit, TernGrad and QSGD, and
    its test accuracy is within 1 point of the 32-bit run's."""
    runs = _runs(summary)
    rows = []
    for r in runs:
        codec = _get(r, "quant.codec")
        rows.append({"model": _get(r, "deep.model"), "method": _ISGQ_NAMES.get(codec, codec), "codec": codec,
                     "accuracy": r["final"]["test_accuracy"], "bits": r["bits_per_worker_step"]})
    lines = ["| model | method | test accuracy | bits per worker per iteration | vs 32-bit |", "|---|---|---:|---:|---:|"]
    out = []
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = {row["codec"]: row for row in rows if row["model"] == model}
        full = mine.get("identity")
        for row in mine.values():
            ratio = f"{full['bits'] / row['bits']:.1f}x fewer" if full and row is not full and row["bits"] else ""
            lines.append(f"| {model} | {row['method']} | {100 * row['accuracy']:.2f}% | {row['bits']:,.0f} | {ratio} |")
        ours = mine.get("isgq")
        if ours is None:
            continue
        for peer in ("identity", "terngrad", "qsgd"):
            if peer in mine:
                out.append(_claim(f"{model}: isgq sends fewer bits than {_ISGQ_NAMES[peer]}", ours["bits"] < mine[peer]["bits"],
                                  f"{ours['bits']:,.0f} vs {mine[peer]['bits']:,.0f} bits per worker per iteration"))
        if full is not None:
            da = 100 * (full["accuracy"] - ours["accuracy"])
            out.append(_claim(f"{model}: isgq's test accuracy is within 1 point of 32-bit", da <= 1.0,
                              f"{100 * ours['accuracy']:.2f}% vs {100 * full['accuracy']:.2f}%"))

    atomic_write(folder.path / "table.md", ("\n".join(lines) + "\n").encode())
    summary["table"] = rows
    return out


CLAIMS = {"halp": halp, "isgq": isgq, "slowdown": slowdown, "theory": theory, "intsgd": intsgd, "fig1": fig1, "slowdown-deep": slowdown_deep,
          "intsgd-deep": intsgd_deep, "intsgd-vae": intsgd_vae}
