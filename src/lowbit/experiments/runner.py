"""The one runner: a validated config in, a run folder out.

Kinds (``RunConfig.kind``), each a function registered in ``KINDS``:

* ``convex``: l2-regularized logistic regression with SGD, Adam, SAG, SAGA, SVRG or HALP, gradients
  passed through a codec (``quant``), metrics per ``log_every`` steps (train loss,
  suboptimality F(w) − F*, test accuracy, mean shrinkage q, bits sent), optionally the Theorem 3
  bound of the slowdown paper beside the measured curve (``theory: true``).
* ``distributed``: the DIANA family over n workers (the IntSGD convex experiment): simulated in
  one process, or one worker per process under ``torchrun`` (``dist.backend``), with the same
  numbers as the simulation with ``dist.streams=per-worker``.
* ``curve``: a function of x rounded onto formats (the slowdown paper's Figure 1).

Checkpoints every ``checkpoint_every`` steps hold everything needed to continue bit for bit
(parameters, optimizer state, samplers' generator states, metrics so far), so ``resume`` after a
kill ends with the same metrics as an uninterrupted run (wall time aside).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable

import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..compress import get_compressor
from ..data import libsvm, synthetic
from ..distributed import DistributedCluster, SimulatedCluster, process_group
from ..optim import DIANA, HALP, SAG, SAGA, SVRG, QuantizedGradients, diana_stepsize, vr_diana_stepsize
from ..optim.sampling import Sampler
from ..plots import plot_run
from ..problems import LogisticRegression
from ..problems.theory import estimate_constants, theorem3
from ..quantize import quantize
from .claims import CLAIMS
from .config import RunConfig, expand
from .loop import Stop, checkpointed
from .published import compare, markdown
from .results import RunFolder, atomic_write, environment, summary_over_seeds

KINDS: dict[str, Callable] = {}


def kind(name: str):
    def deco(fn):
        KINDS[name] = fn
        return fn

    return deco


# -- data ------------------------------------------------------------------------------------------
def load_data(cfg: RunConfig):
    d = cfg.data
    if d.source == "synthetic":
        A, y = synthetic.logistic(d.n_samples, d.n_features, cond=d.cond, separable=d.separable, seed=d.seed)
    else:
        A, y = libsvm.load(d.name)
    A = A.to(torch.float64) * d.scale
    if d.normalize:
        A = A / A.norm(dim=1, keepdim=True).clamp(min=1e-30)
    if d.test_fraction > 0:
        g = torch.Generator().manual_seed(d.seed)
        perm = torch.randperm(A.shape[0], generator=g)
        n_test = int(round(d.test_fraction * A.shape[0]))
        te, tr = perm[:n_test], perm[n_test:]
        tr = tr[: max(1, int(round(d.train_fraction * tr.numel())))]  # a random share: the split's order is random
        return A[tr], y[tr], A[te], y[te]
    if d.train_fraction < 1:
        keep = torch.randperm(A.shape[0], generator=torch.Generator().manual_seed(d.seed))
        keep = keep[: max(1, int(round(d.train_fraction * A.shape[0])))].sort().values  # rows keep their order
        A, y = A[keep], y[keep]
    return A, y, None, None


# -- kind: convex -------------------------------------------------------------------------------------
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


@kind("convex")
def run_convex(cfg: RunConfig, folder: RunFolder, *, resume: bool = True, stop_after: int | None = None,
               progress=None) -> dict:
    A, y, At, yt = load_data(cfg)
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


# -- kind: distributed ------------------------------------------------------------------------------
@kind("distributed")
def run_distributed(cfg: RunConfig, folder: RunFolder, *, resume: bool = True, stop_after: int | None = None,
                    progress=None) -> dict:
    A, y, _, _ = load_data(cfg)
    dc = cfg.dist
    split = LogisticRegression(A, y, cfg.problem.lam).split(dc.workers)
    P = split.problem()
    fstar = P.fstar
    n, m = split.n, split.m
    b = max(1, (n * m) // (dc.batch_divisor * n))
    vr = dc.method.startswith("vr") or dc.method == "l-svrg"
    codec = {
        "l-svrg": lambda: get_compressor("identity"),
        "diana": lambda: get_compressor("identity"),
        "vr-natdiana": lambda: get_compressor("natural"),
        "vr-hintdiana": lambda: get_compressor("hintsgd", n_workers=n),
    }.get(dc.method, lambda: get_compressor("intsgd", n_workers=n, rule=dc.alpha_rule, beta=dc.beta,
                                           sigma_sq=dc.sigma_q**2))()
    L_batch = split.batch_smoothness(b if vr else m)
    # as the IntSGD code: VR-DIANA's stepsize for codecs of relative variance ω > 0, IntSGD's otherwise
    omega = codec.omega or 0.0
    lr = vr_diana_stepsize(P.L, omega, n) if omega > 0 else diana_stepsize(P.L, L_batch, n)
    R = cfg.seeds
    x = torch.zeros(P.d, dtype=torch.float64) if R == 1 else torch.zeros(R, P.d, dtype=torch.float64)

    oracle = split.grads
    if R > 1 and (process_group.world_size() > 1 or dc.streams == "per-worker"):
        raise ValueError("seeds > 1 runs the seeds batched in one simulated program: it needs "
                         "dist.streams=batched and no torchrun (run one seed per launch instead)")
    if process_group.world_size() > 1:  # one worker per process (torchrun)
        if process_group.world_size() != n:
            raise ValueError(f"dist.workers={n} but {process_group.world_size()} processes run: set "
                             f"dist.workers={process_group.world_size()} or start {n} processes")
        r = process_group.rank()
        cluster = DistributedCluster(codec, seed=cfg.seed)
        oracle = split.workers(slice(r, r + 1)).grads
    elif dc.streams == "per-worker":
        cluster = SimulatedCluster(n, codec, seed=cfg.seed)
    else:
        cluster = None
    gamma = 1.0 / (1.0 + codec.omega) if codec.omega is not None else 1.0  # DIANA's shift stepsize 1/(1 + ω)
    opt = DIANA([x], lr=lr, n_workers=n, codec=codec, local_n=m if vr else None, batch_size=b if vr else None,
                vr=vr, gamma=gamma, seed=cfg.seed, exact_first_step=True, cluster=cluster)
    zeros = lambda: torch.zeros(R, dtype=torch.float64)  # noqa: E731  one value per run
    rows, start, wall0, bits, wbits, grads = [], 0, 0.0, zeros(), zeros(), zeros()
    ck = folder.load_checkpoint() if resume else None
    if ck is not None:
        x.copy_(ck["x"])
        opt.load_state_dict(ck["optimizer"])
        rows, start, wall0, bits, wbits, grads = ck["rows"], ck["step"], ck["wall"], ck["bits"], ck["wbits"], ck["grads"]
    t0 = time.perf_counter() - wall0
    seeds = [cfg.seed + r for r in range(R)]

    def record(k):
        sub = P.suboptimality(x.reshape(R, -1))
        wall = time.perf_counter() - t0
        for r in range(R):
            row = {"step": k, "wall": wall, "suboptimality": sub[r], "bits": float(bits[r]),
                   "width_bits": float(wbits[r]), "grad_computations": float(grads[r])}
            rows.append(row if R == 1 else {**row, "seed": seeds[r]})

    if start == 0 and not rows:
        record(0)
    total = dc.iterations
    def tally(hist):  # the steps' bits and gradient computations, added up at logged steps only
        nonlocal bits, wbits, grads
        col = lambda get: torch.stack([torch.as_tensor(get(h), dtype=torch.float64).expand(R) for h in hist]).sum(0)  # noqa: E731
        bits = bits + col(lambda h: h["bits"])
        wbits = wbits + col(lambda h: h.get("width_bits", h["bits"]) + h.get("sum_width_bits", 0.0))
        # gradient computations: a minibatch per worker (twice with VR), plus a full pass on a new reference
        grads = grads + len(hist) * (n * b * 2 if vr else n * m)
        if vr:
            grads = grads + n * m * col(lambda h: h["new_reference"].to(torch.float64) + h.get("first", 0.0))

    st = opt.state[x]
    pending = 0

    def step(k):
        nonlocal pending
        first = "ref" not in st
        opt.step(oracle)
        if first:
            opt.history[-1]["first"] = 1.0
        pending += 1

    def flush():  # the steps since the last row or checkpoint, added up
        nonlocal pending
        if pending:
            tally(opt.history[-pending:])
            pending = 0

    def logged(done):
        flush()
        record(done)

    def state(done):
        flush()
        return {"x": x.clone(), "optimizer": opt.state_dict(), "rows": rows, "step": done,
                "wall": time.perf_counter() - t0, "bits": bits, "wbits": wbits, "grads": grads}

    checkpointed(folder, start, total, step, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                 record=logged, state=state, stop_after=stop_after, progress=progress)
    folder.write_metrics(rows)
    out = {"iterations": total, "fstar": fstar, "lr": lr, "gamma": gamma, "batch": b, "workers": n,
           "local_samples": m, "L": P.L, "L_batch": L_batch}
    if R == 1:
        return {**out, "final": rows[-1]}

    return summary_over_seeds([{**out, "final": row} for row in rows[-R:]], seeds)


# -- kind: curve ----------------------------------------------------------------------------------------
@kind("curve")
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


# -- the runner -------------------------------------------------------------------------------------------
# kinds that run all of ``seeds`` in one batched tensor program; the others run them one by one
BATCHED_SEEDS = {"distributed"}


def _run_one(args) -> tuple[str, dict]:
    label, cfg_dict, path, resume, stop_after = args
    cfg = RunConfig.model_validate(cfg_dict)
    folder = RunFolder(path)
    if resume and folder.done_everywhere():
        return label, _broadcast(folder.read_json("summary.json") if folder.writer else None)
    folder.write_yaml("config.yaml", cfg.model_dump())
    if cfg.seeds > 1 and cfg.kind not in BATCHED_SEEDS:
        summary = _seed_by_seed(cfg, folder, resume=resume, stop_after=stop_after)
    else:
        summary = KINDS[cfg.kind](cfg, folder, resume=resume, stop_after=stop_after)
    summary = {"label": label, **summary, "config": cfg.model_dump(exclude={"sweep", "quick"})}
    folder.write_json("summary.json", summary)
    return label, summary


def _seed_by_seed(cfg: RunConfig, folder: RunFolder, *, resume: bool, stop_after: int | None) -> dict:
    """``cfg.seeds`` runs one after another, each in ``seeds/seed=<s>/`` (so each resumes on its
    own); the run's metrics are theirs with a ``seed`` column, its summary their mean."""
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    summaries, frames = [], []
    for s in seeds:
        sub = RunFolder(folder.path / "seeds" / f"seed={s}")
        one = cfg.model_copy(update={"seed": s, "seeds": 1})
        if resume and sub.done_everywhere():
            summ = sub.read_json("summary.json") if sub.writer else None
        else:
            summ = KINDS[cfg.kind](one, sub, resume=resume, stop_after=stop_after)
            sub.write_json("summary.json", summ)
        summaries.append(summ)
        if sub.writer:
            frames.append(sub.metrics().assign(seed=s))
    if folder.writer:
        folder.write_metrics(pd.concat(frames, ignore_index=True).to_dict("records"))
    return summary_over_seeds(summaries, seeds) if folder.writer else summaries[0]


def run(cfg: RunConfig, out, *, resume: bool = False, jobs: int = 1, stop_after: int | None = None,
        quiet: bool = False) -> dict:
    """Run ``cfg`` (every sub-run of its sweep) into the folder ``out``; returns the summary."""
    folder = RunFolder(out)
    folder.write_yaml("config.yaml", cfg.model_dump())
    folder.write_json("env.json", environment())
    runs = expand(cfg)
    tasks = []
    for label, sub in runs:
        path = folder.path if not label else folder.sub(label).path
        tasks.append((label, sub.model_dump(), str(path), resume, stop_after))
    results: dict[str, dict] = {}
    if jobs > 1 and folder.world > 1:
        raise ValueError("--jobs runs sub-runs in parallel processes; under torchrun every process takes part "
                         "in each sub-run: leave --jobs at 1")
    if jobs > 1 and len(tasks) > 1:
        threads = max(1, torch.get_num_threads() // jobs)  # the cores shared out, not oversubscribed
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=torch.set_num_threads,
                                 initargs=(threads,)) as ex:
            for label, s in ex.map(_run_one, tasks):
                results[label] = s
    else:
        bar = _progress(len(tasks), quiet)
        for t in tasks:
            label, s = _run_one(t)
            results[label] = s
            bar(label)
    summary = {"name": cfg.name, "kind": cfg.kind, "runs": [results[t[0]] for t in tasks]}
    if not folder.writer:  # results, claims and figures are rank 0's
        return summary
    if cfg.claims:
        summary["claims"] = CLAIMS[cfg.claims](cfg, folder, summary)
    if cfg.published:
        summary["published"] = compare(cfg, folder, summary)
        table, title = folder.path / "table.md", "## The source's numbers beside lowbit's\n"
        head = table.read_text().split(title)[0].rstrip() + "\n\n" if table.exists() else ""
        atomic_write(table, (head.lstrip() + title + "\n" + markdown(summary["published"])).encode())
    folder.write_json("summary.json", summary)
    summary["figures"] = plot_run(folder.path)
    folder.write_json("summary.json", summary)
    return summary


def _broadcast(obj):
    """rank 0's ``obj`` on every rank (itself outside a multi-process run)."""
    if process_group.world_size() == 1:
        return obj

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _progress(total: int, quiet: bool):
    if quiet or total <= 1:
        return lambda label: None
    bar = tqdm(total=total, desc="runs", leave=False)

    def step(label):
        bar.set_postfix_str(label[:40])
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return step
