"""The ``distributed`` kind: the DIANA family over n workers (the IntSGD convex experiment),
simulated in one process or one worker per process under ``torchrun`` (``dist.backend``), with the
numbers of the simulation with ``dist.streams=per-worker``; several seeds run batched in one
program."""

from __future__ import annotations

import time

import torch

from ..compress import get_compressor
from ..data.split import train_test
from ..distributed import DistributedCluster, SimulatedCluster, process_group
from ..optim import DIANA, diana_stepsize, vr_diana_stepsize
from ..problems import LogisticRegression
from .config import RunConfig
from .kind import Kind, register, table
from .loop import checkpointed
from .results import RunFolder, summary_over_seeds


def run_distributed(cfg: RunConfig, folder: RunFolder, *, resume: bool = True, stop_after: int | None = None,
                    progress=None) -> dict:
    A, y, _, _ = train_test(cfg.data)
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
        "vr-hintdiana": lambda: get_compressor("hintsgd", n_workers=n, bits=dc.bits),
    }.get(dc.method, lambda: get_compressor("intsgd", n_workers=n, rule=dc.alpha_rule, beta=dc.beta,
                                           sigma_sq=dc.sigma_q**2, bits=dc.bits))()
    L_batch = split.batch_smoothness(b if vr else m)
    # as the IntSGD code: VR-DIANA's stepsize for codecs of relative variance ω > 0, IntSGD's otherwise
    omega = codec.traits.omega or 0.0
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
    gamma = 1.0 / (1.0 + codec.traits.omega) if codec.traits.omega is not None else 1.0  # DIANA's shift stepsize 1/(1 + ω)
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


def report(runs: list) -> list[str]:
    return table(runs, [("run", 28, lambda r: r["label"]), ("f(x)-f*", 10, lambda r: f"{r['final']['suboptimality']:.3g}"),
                        ("Mbit (payload)", 14, lambda r: f"{r['final']['bits'] / 1e6:.3f}"),
                        ("Mbit (IntSGD count)", 19, lambda r: f"{r['final']['width_bits'] / 1e6:.3f}")])


KIND = register(Kind("distributed", run_distributed, report, figure="distributed", batched_seeds=True))
