"""l2-regularized logistic regression, with exact constants and an exact optimum.

    F(w) = (1/N)·Σ_i log(1 + exp(−y_i·a_iᵀw)) + (λ/2)·‖w‖²,    y_i ∈ {−1, +1}

(labels {0, 1} are mapped to {−1, +1}: the same function as the {0,1} cross-entropy).

* ∇f_i(w) = φ_i'(a_iᵀw)·a_i + λ·w with φ_i'(t) = −y_i·σ(−y_i·t), σ the logistic function.
* Smoothness L = λ_max(AᵀA)/(4N) + λ (the Hessian is at most AᵀA/(4N) + λI; tight at w = 0);
  per-sample smoothness L_i = ‖a_i‖²/4 + λ; strong convexity μ = λ.
* F* by Newton's method in float64 (backtracking line search) until ‖∇F‖ stops decreasing or
  falls below 1e-13·max(1, ‖∇F(0)‖): F(w) − F* is then below 1e-12 relative.
* ``split(n)``: the IntSGD experiments' heterogeneous split — rows kept in order, truncated to
  n·⌊N/n⌋, n contiguous equal parts — with batched per-worker gradients for the DIANA family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def _to_pm1(y: torch.Tensor) -> torch.Tensor:
    y = y.to(torch.float64).reshape(-1)
    vals = torch.unique(y)
    if len(vals) > 2:
        raise ValueError(f"binary labels expected, got {len(vals)} distinct values")
    if set(vals.tolist()) <= {-1.0, 1.0}:
        return y
    lo = vals.min()
    return torch.where(y == lo, -1.0, 1.0).to(torch.float64)


@dataclass
class LogisticRegression:
    A: torch.Tensor
    y: torch.Tensor
    lam: float = 0.0
    _fstar: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.A.dim() != 2 or self.A.shape[0] != self.y.numel():
            raise ValueError(f"A must be N × d with N = len(y); got {tuple(self.A.shape)} and {self.y.numel()}")
        self.A = self.A.to(torch.float64)
        self.y = _to_pm1(self.y).to(self.A.device)

    @property
    def N(self) -> int:
        return self.A.shape[0]

    @property
    def d(self) -> int:
        return self.A.shape[1]

    # -- values -------------------------------------------------------------------------------
    def _rows(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, y) of the selected samples (all: idx None)."""
        return (self.A, self.y) if idx is None else (self.A[idx], self.y[idx])

    @staticmethod
    def _margins(A: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dim() == 2:
            return y * (w.to(A.dtype) @ A.T)
        return y * (A @ w.to(A.dtype))

    def margins(self, w: torch.Tensor, idx=None) -> torch.Tensor:
        """y_i·a_iᵀw for the selected samples; for R points w (R × d), an R × N table."""
        return self._margins(*self._rows(idx), w)

    def loss(self, w: torch.Tensor, idx=None) -> torch.Tensor:
        """F(w); for R points w (R × d), the R values."""
        m = self.margins(w, idx)
        return torch.nn.functional.softplus(-m).mean(-1) + 0.5 * self.lam * (w.to(torch.float64) ** 2).sum(-1)

    @classmethod
    def _derivative(cls, A: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return -y * torch.sigmoid(-cls._margins(A, y, w))

    def derivative(self, w: torch.Tensor, idx=None) -> torch.Tensor:
        """φ_i'(a_iᵀw) = −y_i·σ(−y_i·a_iᵀw) for the selected samples."""
        return self._derivative(*self._rows(idx), w)

    def grad(self, w: torch.Tensor, idx=None) -> torch.Tensor:
        A, y = self._rows(idx)  # the samples' rows gathered once (a step at batch size 1 is mostly such calls)
        s = self._derivative(A, y, w)
        return A.T @ s / s.numel() + self.lam * w.to(torch.float64)

    def per_sample_grads(self, w: torch.Tensor, idx=None) -> torch.Tensor:
        A, y = self._rows(idx)
        return self._derivative(A, y, w)[:, None] * A + self.lam * w.to(torch.float64)

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.margins(w))
        D = s * (1 - s)
        return (self.A.T * D) @ self.A / self.N + self.lam * torch.eye(self.d, dtype=torch.float64, device=self.A.device)

    def accuracy(self, w: torch.Tensor, A: torch.Tensor | None = None, y: torch.Tensor | None = None) -> float:
        A = self.A if A is None else A.to(torch.float64)
        y = self.y if y is None else _to_pm1(y)
        # predict +1 where a·w > 0, else −1 (scikit-learn's rule: a tie, as everywhere at w = 0, is −1)
        pred = torch.where(A @ w.to(torch.float64) > 0, 1.0, -1.0)
        return float((pred == y).double().mean())

    # -- constants ------------------------------------------------------------------------------
    @property
    def L(self) -> float:
        top = torch.linalg.eigvalsh(self.A.T @ self.A / self.N)[-1] if self.d <= 4096 else self._power()
        return float(top) / 4 + self.lam

    def _power(self, iters: int = 200) -> float:
        v = torch.ones(self.d, dtype=torch.float64, device=self.A.device) / math.sqrt(self.d)
        for _ in range(iters):
            v = self.A.T @ (self.A @ v) / self.N
            v = v / v.norm()
        return float(v @ (self.A.T @ (self.A @ v)) / self.N)

    @property
    def L_max(self) -> float:
        """Largest per-sample smoothness max_i ‖a_i‖²/4 + λ."""
        return float((self.A**2).sum(1).max()) / 4 + self.lam

    @property
    def mu(self) -> float:
        return float(self.lam)

    # -- the optimum ----------------------------------------------------------------------------
    def solve(self, tol: float = 1e-13, max_iter: int = 100) -> tuple[torch.Tensor, float]:
        """(w*, F*) by damped Newton in float64."""
        if self._fstar is not None:
            return self._fstar
        w = torch.zeros(self.d, dtype=torch.float64, device=self.A.device)
        g0 = float(self.grad(w).norm())
        f = float(self.loss(w))
        for _ in range(max_iter):
            g = self.grad(w)
            gn = float(g.norm())
            if gn <= tol * max(1.0, g0):
                break
            H = self.hessian(w)
            try:
                step = torch.linalg.solve(H, g)
            except RuntimeError:
                step = torch.linalg.lstsq(H, g).solution
            t = 1.0
            while t > 1e-12:
                w_new = w - t * step
                f_new = float(self.loss(w_new))
                if f_new <= f - 1e-4 * t * float(g @ step) or f_new <= f:
                    break
                t *= 0.5
            if f_new > f:
                break
            w, f = w_new, f_new
        self._fstar = (w, float(self.loss(w)))
        return self._fstar

    @property
    def fstar(self) -> float:
        return self.solve()[1]

    def suboptimality(self, w: torch.Tensor):
        """F(w) − F* (a float; for R points w (R × d), a list of R floats)."""
        if w.dim() == 2:
            return (self.loss(w) - self.fstar).tolist()
        return float(self.loss(w)) - self.fstar

    # -- torch closures ---------------------------------------------------------------------------
    def closure(self, w: torch.nn.Parameter):
        """closure(indices) for lowbit's finite-sum optimizers: mean loss of the components,
        backward into w.grad."""

        def fn(indices):
            m = self.margins(w) if indices is None else self.margins(w, indices)
            loss = torch.nn.functional.softplus(-m).mean() + 0.5 * self.lam * (w.to(torch.float64) ** 2).sum()
            loss.backward()
            return loss

        return fn

    def scalar_closure(self, w: torch.Tensor):
        """closure(indices) returning φ_i'(a_iᵀw) (SAG/SAGA's memory-light table)."""
        return lambda indices: self.derivative(w.detach(), indices)

    # -- workers ------------------------------------------------------------------------------------
    def split(self, n: int) -> "WorkerSplit":
        m = self.N // n
        if m < 1:
            raise ValueError(f"{self.N} samples cannot be split over {n} workers")
        A = self.A[: n * m].reshape(n, m, self.d)
        y = self.y[: n * m].reshape(n, m)
        return WorkerSplit(A, y, self.lam)


@dataclass
class WorkerSplit:
    """n workers with m local samples each: A (n × m × d), y (n × m)."""

    A: torch.Tensor
    y: torch.Tensor
    lam: float

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def m(self) -> int:
        return self.A.shape[1]

    def problem(self) -> LogisticRegression:
        """The global problem over the kept (truncated) rows."""
        return LogisticRegression(self.A.reshape(-1, self.A.shape[2]), self.y.reshape(-1), self.lam)

    def grads(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Row i: worker i's gradient at x over ``indices[i]`` (n × b) or all its samples.

        With a leading run dimension — x of shape (R, d), ``indices`` (R, n, b) — the gradients of
        R independent runs come back as (R, n, d) in one batched call."""
        x = x.to(self.A.dtype)
        if x.dim() == 1:
            return self.grads(x[None], None if indices is None else indices[None])[0]
        R, (n, m, d) = x.shape[0], self.A.shape
        cols, ya = self._ell()
        if indices is None:  # every local sample: the whole table, shared by the R runs
            b, c, ya = m, (None if cols is None else cols.reshape(1, n, m, -1)), ya.reshape(1, n, m, -1)
        else:
            b = indices.shape[2]
            c, ya = self._rows(indices)  # y_j·a_j of every sampled row j: dense (R, n, b, d) or sparse
        if c is None:
            s = torch.sigmoid(-torch.einsum("rnbd,rd->rnb", ya, x)) / -b
            return torch.einsum("rnb,rnbd->rnd", s, ya) + self.lam * x[:, None, :]
        # sparse rows (LIBSVM data): the k stored entries of each row, gathered and scattered
        k = ya.shape[-1]
        c = c.expand(R, n, b, k)
        s = torch.sigmoid(-(torch.gather(x, 1, c.reshape(R, -1)).reshape(R, n, b, k) * ya).sum(-1)) / -b
        out = (self.lam * x)[:, None, :].repeat(1, n, 1)
        return out.scatter_add_(2, c.reshape(R, n, b * k), (ya * s[..., None]).reshape(R, n, b * k))

    def _rows(self, indices: torch.Tensor):
        """(columns or None, y_j·a_j) of the sampled rows ``indices`` (R × n × b), kept for the
        next call with the same index tensor (the VR estimator evaluates x and w on one batch)."""
        cached = getattr(self, "_rows_cache", None)
        if cached is not None and cached[0] is indices:
            return cached[1]
        R, n, b = indices.shape
        rows = (indices + torch.arange(n, device=indices.device)[:, None] * self.m).reshape(-1)
        cols, ya = self._ell()
        if cols is None:
            out = None, ya.index_select(0, rows).reshape(R, n, b, -1)
        else:
            out = cols.index_select(0, rows).reshape(R, n, b, -1), ya.index_select(0, rows).reshape(R, n, b, -1)
        self._rows_cache = (indices, out)
        return out

    def _ell(self):
        """The rows y_j·a_j as (column, value) lists of k = max nonzeros per row (ELLPACK,
        zero-padded) when that saves at least 4×, else (None, the dense rows)."""
        if not hasattr(self, "_ell_cache"):
            flat = (self.y[..., None] * self.A).reshape(-1, self.A.shape[2])
            nz = flat != 0
            k = int(nz.sum(1).max()) if flat.numel() else 0
            if k == 0 or 4 * k > flat.shape[1]:
                self._ell_cache = (None, flat)
            else:
                cols = torch.sort(nz.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
                self._ell_cache = (cols, torch.gather(flat, 1, cols))
        return self._ell_cache

    def workers(self, rows: slice) -> "WorkerSplit":
        """The workers ``rows`` alone (a process of a real run holds its own: ``slice(r, r + 1)``)."""
        return WorkerSplit(self.A[rows], self.y[rows], self.lam)

    def batch_smoothness(self, batch_size: int = 1) -> float:
        """L_b: the smoothness of a worker's minibatch gradient for minibatches of ``batch_size``
        local samples, the largest over workers — the expected-smoothness constant of b-nice
        sampling (Gower et al., "SGD: General Analysis and Improved Rates"), which the IntSGD code
        uses for its stepsize:

            L_b,i = m/(m−1)·(1 − 1/b)·L_i + (m/b − 1)/(m−1)·L_max,i

        with L_i = λ_max(A_iᵀA_i)/(4m) + λ and L_max,i = max_j ‖a_ij‖²/4 + λ over worker i's m
        samples.  b = 1 gives max_i L_max,i, the bound for any single sample."""
        m, b = self.m, int(batch_size)
        if not 1 <= b <= m:
            raise ValueError(f"batch_size must be in 1..{m} (the local samples), got {b}")
        l_max = (self.A**2).sum(2).amax(1) / 4 + self.lam
        if m == 1:
            return float(l_max.max())
        l_i = torch.tensor([LogisticRegression(a, y, self.lam).L for a, y in zip(self.A, self.y)],
                           dtype=l_max.dtype, device=l_max.device)
        l_b = m / (m - 1) * (1 - 1 / b) * l_i + (m / b - 1) / (m - 1) * l_max
        return float(l_b.max())
