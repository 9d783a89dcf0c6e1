"""The DIANA family over n workers: DIANA, IntDIANA and VR-IntDIANA (Mishchenko, Wang, Kovalev,
Richtárik, "IntSGD"), with L-SVRG, VR-NatDIANA and VR-HintDIANA as the same method with another codec.

Each worker i holds a shift h_i; the server holds h̄ = (1/n)Σ h_i.  One step at x_k:

    g_i  = ∇f_i(x_k) (or a minibatch estimate; with ``vr=True`` the L-SVRG estimator
           ∇f_ij(x_k) − ∇f_ij(w) + ∇f_i(w) with one reference point w for all workers)
    Δ_i  = C(g_i − h_i)                       (sent; decoded as Δ̂_i)
    ĝ    = h̄ + (1/n)·Σ_i Δ̂_i,   h_i ← h_i + γ·Δ̂_i,   h̄ ← h̄ + γ·(1/n)·Σ_i Δ̂_i
    x_{k+1} = x_k − η·ĝ;  with ``vr``: w ← x_k with probability p (one shared coin), and the
    reference gradients ∇f_i(w) are recomputed.

With C = IntSGD's Int(α·)/α (``codec="intsgd"``), α is shared and adaptive: after each step the
codec observes ‖x_{k+1} − x_k‖² (see :mod:`lowbit.compress.intsgd`); the first step, before any
movement defines α, sends α-free exact values (``exact_first_step``), as the IntSGD code does.

The parameter is one flat vector x (the model's weights).  The gradient oracle is a function
``oracle(x, indices) -> Tensor (n, d)``: row i is worker i's gradient at x, over its local
samples ``indices[i]`` (an n × b LongTensor), or over all its local data when ``indices`` is None.
Compression goes through :class:`lowbit.distributed.SimulatedCluster`: workers are batched (no Python
loop over workers) for elementwise codecs; other codecs are applied per worker.  Pass
``cluster=SimulatedCluster(n, codec, seed=s)`` for per-worker generators, or, in a process of a
real run, ``cluster=DistributedCluster(codec, seed=s)``: this process then holds only its own
worker's row (``oracle`` returns 1 × d for it), every process draws the same minibatch indices
and reference coins, and both give the same iterates.

Batched runs: a parameter of shape (R, d) holds R independent runs (seeds) stepped together in one
tensor program.  The oracle then takes x (R, d) and indices (R, n, b) and returns (R, n, d); every
run draws its own minibatches, reference coin and codec randomness (from the optimizer's and the
cluster's generators), keeps its own shifts and, with IntSGD, its own α from its own steps
(:meth:`lowbit.distributed.SimulatedCluster.reduce_runs`).  The runs are independent, but run r of a
batch is not the run that seed alone would give.
"""

from __future__ import annotations

import torch

from ..compress import Compressor, get_compressor, resolve_codec
from ..distributed.simulated import SimulatedCluster


class DIANA(torch.optim.Optimizer):
    def __init__(self, params, lr: float, n_workers: int, codec="identity", *, local_n: int | None = None,
                 batch_size: int | None = None, vr: bool = False, p: float | None = None, gamma: float = 1.0,
                 exact_first_step: bool = True, seed: int = 0, record: bool = True, cluster=None):
        super().__init__(params, {"lr": lr})
        ps = [q for g in self.param_groups for q in g["params"]]
        if len(ps) != 1 or ps[0].dim() not in (1, 2):
            raise ValueError("the DIANA family optimizes one flat parameter vector (d,) or R batched runs (R, d)")
        if batch_size is not None and local_n is None:
            raise ValueError("minibatches need local_n, the number of samples per worker")
        if vr and batch_size is None:
            raise ValueError("vr=True needs batch_size (the L-SVRG estimator samples minibatches)")
        self.x = ps[0]
        self.runs = tuple(self.x.shape[:-1])  # () for one run, (R,) for R batched runs
        if self.runs and cluster is not None and not hasattr(cluster, "reduce_runs"):
            raise ValueError("batched runs need every worker's row in this process (a SimulatedCluster)")
        self.n = n_workers
        self.codec: Compressor = resolve_codec(codec) if cluster is None else cluster.codec
        if cluster is not None and cluster.n != n_workers:
            raise ValueError(f"the cluster has {cluster.n} workers, n_workers is {n_workers}")
        self.local_n = local_n
        self.batch_size = batch_size
        self.vr = vr
        self.p = p if p is not None else (batch_size / local_n if vr else 0.0)
        self.gamma = gamma
        self.exact_first_step = exact_first_step
        self.record = record
        self.history: list[dict] = []
        self._gen = torch.Generator().manual_seed(seed)
        self._cgen = torch.Generator().manual_seed(seed + 1)
        st = self.state[self.x]
        self.cluster = cluster if cluster is not None else SimulatedCluster(n_workers, self.codec, generator=self._cgen)
        rows = range(n_workers)[self.cluster.rows]
        d = self.x.shape[-1]
        st["h"] = torch.zeros(*self.runs, len(rows), d, dtype=self.x.dtype, device=self.x.device)
        st["h_mean"] = torch.zeros(*self.runs, d, dtype=self.x.dtype, device=self.x.device)
        st["step"] = torch.zeros((), dtype=torch.int64)

    # -- pieces ---------------------------------------------------------------------------
    def _indices(self):
        if self.batch_size is None:
            return None
        idx = torch.randint(0, self.local_n, (*self.runs, self.n, self.batch_size), generator=self._gen)  # every worker's
        return idx[..., self.cluster.rows, :].to(self.x.device)

    # -- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, oracle):
        st = self.state[self.x]
        k = int(st["step"])
        x = self.x.detach().clone()
        idx = self._indices()
        g = oracle(x, idx)
        if self.vr:
            if "ref" not in st:
                st["ref"] = x.clone()
                st["ref_grad"] = oracle(x, None)
            g = g - oracle(st["ref"], idx) + st["ref_grad"]
        delta = g - st["h"]
        reduce = self.cluster.reduce_runs if self.runs else self.cluster.reduce
        dhat, mean, info = reduce(delta, exact=k == 0 and self.exact_first_step)
        ghat = st["h_mean"] + mean
        st["h"].add_(dhat, alpha=self.gamma)
        st["h_mean"].add_(mean, alpha=self.gamma)
        lr = self.param_groups[0]["lr"]
        self.x.add_(ghat, alpha=-lr)
        if self.vr:
            coin = torch.rand(self.runs, generator=self._gen) < self.p  # one shared coin per run
            if not self.runs and coin:
                st["ref"] = x.clone()
                st["ref_grad"] = oracle(x, None)
            elif self.runs and coin.any():
                j = coin.nonzero().reshape(-1).to(x.device)
                st["ref"][j] = x[j]
                st["ref_grad"][j] = oracle(x[j], None)
            info["new_reference"] = coin
        if getattr(self.codec, "adaptive", False):  # IntSGD: α from the step just taken (public)
            if self.cluster.state is None:
                self.cluster.state = self.codec.init_state(x)
            self.cluster.state.d = self.x.shape[-1]
            sq = ((self.x - x) ** 2).sum(-1)
            self.codec.observe(self.cluster.state, lr, sq if self.runs else float(sq))
        st["step"] += 1
        if self.record:
            self.history.append({"step": k, **info})
        return ghat

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["lowbit"] = {"rng": self._gen.get_state(), "crng": self._cgen.get_state(),
                        "cluster": self.cluster.state_dict(), "history": list(self.history)}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        sd = dict(state_dict)
        extra = sd.pop("lowbit")
        super().load_state_dict(sd)
        self._gen.set_state(extra["rng"])
        self._cgen.set_state(extra["crng"])
        self.cluster.load_state_dict(extra["cluster"])
        self.history = list(extra["history"])


def IntDIANA(params, lr, n_workers, *, rounding: str = "stochastic", rule: str = "adaptive", sigma_sq: float = 1e-6,
             beta: float = 0.0, **kw) -> DIANA:
    """DIANA with IntSGD's integer codec and its adaptive shared scale α (σ_Q² = ``sigma_sq``
    sets α_0 = √d/σ_Q and, for ``rule="moving_avg_const"``, bounds α)."""
    codec = get_compressor("intsgd", rounding=rounding, n_workers=n_workers, rule=rule, sigma_sq=sigma_sq, beta=beta)
    return DIANA(params, lr, n_workers, codec, **kw)


def VRIntDIANA(params, lr, n_workers, *, local_n: int, batch_size: int, p: float | None = None, **kw) -> DIANA:
    """IntDIANA with the L-SVRG estimator (the IntSGD paper's method for convex finite sums)."""
    return IntDIANA(params, lr, n_workers, local_n=local_n, batch_size=batch_size, vr=True, p=p, **kw)


def diana_stepsize(L: float, L_batch: float, n: int) -> float:
    """The IntSGD experiments' stepsize η = 1 / (2(L + 3L_b/(2n) + 3L_b/(16n))) for VR-IntDIANA,
    VR-HintDIANA and L-SVRG, with L_b the minibatch smoothness
    (:meth:`lowbit.problems.logistic.WorkerSplit.batch_smoothness`)."""
    return 1.0 / (2 * (L + 3 * L_batch / (2 * n) + 3 * L_batch / (16 * n)))


def vr_diana_stepsize(L: float, omega: float, n: int) -> float:
    """VR-DIANA's stepsize for a compressor of relative variance ω (Horváth, Kovalev, Mishchenko,
    Stich, Richtárik, "Stochastic Distributed Learning with Gradient Quantization and Variance
    Reduction"): η = 1 / (L·(1 + 36(1 + ω)/n)), the stepsize of the IntSGD code's VR-NatDIANA
    (ω = 1/8); its shift stepsize is γ = 1/(1 + ω)."""
    return 1.0 / (L * (1 + 36 * (1 + omega) / n))


__all__ = ["DIANA", "IntDIANA", "VRIntDIANA", "diana_stepsize", "vr_diana_stepsize"]
