"""The ``convex`` kind: l2-regularized logistic regression with SGD, Adam, SAG, SAGA, SVRG or
HALP, gradients passed through a codec (``quant``), metrics every ``log_every`` steps (train loss,
suboptimality F(w) − F*, test accuracy, mean shrinkage q, bits sent), optionally the Theorem 3
bound of the slowdown paper beside the measured curve (``theory: true``).  Checkpoints hold the
weights, the optimizer's and the sampler's states and the metrics so far."""

from __future__ import annotations

import math
import time

import torch

from ..data.split import train_test
from ..optim import HALP, SAG, SAGA, SVRG, QuantizedGradients
from ..optim.sampling import Sampler
from ..problems import LogisticRegression
from ..problems.theory import estimate_constants, theorem3
from .config import RunConfig
from .kind import Kind, register, run_name, table
from .loop import checkpointed
from .results import RunFolder


def _optimizer(cfg: RunConfig, w, P):
    o, q = cfg.optim, cfg.quant
    codec = None if q.codec in ("fp32", "float32", "none") else q.codec
    n = P.N
    if o.name in ("sgd", "adam"):
        base = torch.optim.SGD([w], lr=o.lr, momentum=o.momentum) if o.name == "sgd" else torch.optim.Adam([w], lr=o.lr)
        if codec is None:
            return base
        comp = None if q.compensate == "none" else q.compensate
        return QuantizedGradients(base, codec, compensate=comp, q_min=q.q_min, rounding=q.rounding,
                                  generator=torch.Generator().manual_seed(cfg.seed + 1))  # its own stream: resumable
    if q.compensate != "none":
        raise ValueError("quant.compensate works with optim.name sgd or adam (it scales a torch optimizer's lr)")
    common = dict(n=n, seed=cfg.seed)
    if o.name in ("sag", "saga"):
        if o.batch_size != 1:
            raise ValueError("SAG/SAGA keep one gradient per sample: optim.batch_size must be 1")
        cls = SAG if o.name == "sag" else SAGA
        return cls([w], lr=o.lr, init=o.init, codec=codec, rounding=q.rounding, record=codec is not None, **common)
    if o.name == "svrg":
        return SVRG([w], lr=o.lr, T_epochs=o.T_epochs, batch_size=o.batch_size, codec=codec, rounding=q.rounding,
                    record=codec is not None, **common)
    if codec is not None:
        raise ValueError("HALP stores its offsets in optim.bits bits; it takes no quant.codec")
    return HALP([w], lr=o.lr, T_epochs=o.T_epochs, batch_size=o.batch_size, bits=o.bits,
                mu=o.halp_mu or P.mu, **common)


def _q_log(opt):
    return getattr(opt, "log", None)


def run_convex(cfg: RunConfig, folder: RunFolder, *, resume: bool = True, stop_after: int | None = None,
               progress=None) -> dict:
    A, y, At, yt = train_test(cfg.data)
    P = LogisticRegression(A, y, cfg.problem.lam)
    fstar = P.fstar if cfg.problem.lam > 0 else float("nan")  # unregularized: F* may not be attained
    w = torch.nn.Parameter(torch.zeros(P.d, dtype=torch.float64))
    opt = _optimizer(cfg, w, P)
    o = cfg.optim
    finite_sum = o.name not in ("sgd", "adam")
    sampler = Sampler(P.N, o.batch_size, cfg.seed)
    total = max(1, math.ceil(cfg.epochs * P.N / o.batch_size))

    def closure(idx):
        w.grad = P.grad(w.detach(), idx)
        return None

    rows, start, wall0, consumed, bits = [], 0, 0.0, 0, 0.0
    ck = folder.load_checkpoint() if resume else None
    if ck is not None:
        with torch.no_grad():
            w.copy_(ck["w"])
        opt.load_state_dict(ck["optimizer"])
        sampler.load_state_dict(ck["sampler"])
        rows, start, wall0, consumed, bits = ck["rows"], ck["step"], ck["wall"], ck["consumed"], ck["bits"]
    t0 = time.perf_counter() - wall0
    log = _q_log(opt)
    qs_all = [r["q"] for r in log.rows()] if log is not None else []

    def record(step):
        nonlocal consumed, bits
        qs = []
        if log is not None:
            new = log.rows()[consumed:]
            consumed += len(new)
            qs = [r["q"] for r in new]
            qs_all.extend(qs)
            bits += sum(r["bits"] for r in new)
        wd = w.detach()
        rows.append({
            "step": step, "epoch": step * o.batch_size / P.N, "wall": time.perf_counter() - t0,
            "loss": float(P.loss(wd)), "suboptimality": float(P.loss(wd)) - fstar,
            "test_accuracy": P.accuracy(wd, At, yt) if At is not None else float("nan"),
            "train_accuracy": P.accuracy(wd),
            "q": sum(qs) / len(qs) if qs else (float("nan") if step == 0 else 1.0), "bits": bits,
        })

    def step(k):
        if o.schedule == "diminishing":
            for g in opt.param_groups:
                g["lr"] = o.lr * o.gamma / (o.gamma + k)
        if finite_sum:
            opt.step(closure)
        else:
            idx = sampler.next()
            opt.zero_grad()
            closure(idx)
            opt.step()

    def state(done):
        return {"w": w.detach().clone(), "optimizer": opt.state_dict(), "sampler": sampler.state_dict(), "rows": rows,
                "step": done, "wall": time.perf_counter() - t0, "consumed": consumed, "bits": bits}

    if start == 0 and not rows:
        record(0)
    checkpointed(folder, start, total, step, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                 record=record, state=state, stop_after=stop_after, progress=progress)
    summary = {"steps": total, "final": rows[-1], "fstar": fstar, "L": P.L, "mu": P.mu, "N": P.N, "d": P.d,
               "wall": rows[-1]["wall"],
               "q_mean": sum(qs_all) / len(qs_all) if qs_all else 1.0,
               "q_min": min(qs_all) if qs_all else 1.0, "q_max": max(qs_all) if qs_all else 1.0}
    if cfg.theory:
        summary["theory"] = _theory(cfg, P, w.detach(), rows, qs_all, log)
    folder.write_metrics(rows)
    return summary


def _theory(cfg, P, w_end, rows, qs, log) -> dict:
    """Theorem 3's bound for this run's constants, as a column beside the measured curve.

    q_min and q_max are the extremes of q averaged over each logging interval; σ_q² is the
    largest measured ‖g̃ − q·g‖²; M is estimated at the start and end points (M_G = 1, m = 1)."""
    k = estimate_constants(P, [torch.zeros(P.d, dtype=torch.float64), w_end], cfg.optim.batch_size, seed=cfg.seed)
    if log is not None and len(log):
        # q over each logging interval (the effective shrinkage of that run of steps): a single
        # step can flush a whole per-sample gradient (q = 0), which makes the worst case vacuous
        interval_q = [r["q"] for r in rows[1:]]
        k.q_min, k.q_max = min(interval_q), max(interval_q)
        k.sigma_q2 = max(x["residual"] ** 2 for x in log.rows())
    mu = cfg.optim.lr
    gap1 = rows[0]["suboptimality"]
    if k.q_min <= 0:
        return {"constants": k.as_dict(), "error": "q_min = 0: Theorem 3 gives no rate"}
    try:
        bound = theorem3(k, mu, gap1, [r["step"] + 1 for r in rows])
    except ValueError as e:
        return {"constants": k.as_dict(), "error": str(e)}
    for r, b in zip(rows, bound):
        r["bound"] = float(b)
    return {"constants": k.as_dict(), "rate": 1 - mu * k.q_min * k.c * k.m,
            "floor": mu * k.q_max * k.L * (k.M + k.sigma_q2) / (2 * k.c * k.m * k.q_min)}


def report(runs: list) -> list[str]:
    return table(runs, [("run", 36, run_name), ("train loss", 11, lambda r: f"{r['final']['loss']:.6f}"),
                        ("F(w)-F*", 10, lambda r: f"{r['final']['suboptimality']:.3g}"),
                        ("test acc", 8, lambda r: f"{r['final']['test_accuracy']:.4f}"),
                        ("mean q", 7, lambda r: f"{r['q_mean']:.3f}"),
                        ("Mbit sent", 9, lambda r: f"{r['final']['bits'] / 1e6:.2f}")])


KIND = register(Kind("convex", run_convex, report, figure="convex"))
