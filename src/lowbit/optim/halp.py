"""HALP (De Sa, Leszczynski, Zhang, Marzoev, Aberger, Olukotun, Ré: "High-Accuracy Low-Precision
Training"): SVRG with bit-centering.

The iterate is w = w̃ + z: a full-precision anchor w̃ and an offset z stored in b-bit fixed point,
z = δ·k with integers |k| ≤ 2^(b−1) − 1.  Every T steps (the epoch length):

    w̃ ← w̃ + z,  z ← 0,  g̃ ← ∇F(w̃),  δ ← ‖g̃‖ / (μ·(2^(b−1) − 1)),

so the b-bit grid covers the ball ‖z‖ ≤ ‖g̃‖/μ, which contains the optimum for a μ-strongly
convex F.  Inner steps:

    z ← Q_δ,b( z − η·(∇f_i(w̃ + z) − ∇f_i(w̃) + g̃) ),

with Q_δ,b stochastic rounding onto δ·{−(2^(b−1)−1), …, 2^(b−1)−1} (saturating; ``rounding=
"nearest"`` for a deterministic variant).  As g̃ shrinks, δ shrinks with it: precision is
re-centred around the optimum, and HALP converges linearly despite b-bit offsets — which plain
low-precision SGD cannot.  ``mu`` is HALP's μ hyperparameter (an estimate of strong convexity).
"""

from __future__ import annotations

import torch

from ..quantize import round_integer
from .finite_sum import FiniteSumOptimizer
from .svrg import steps_per_snapshot


class HALP(FiniteSumOptimizer):
    def __init__(self, params, lr: float, n: int, *, bits: int = 8, mu: float = 1.0, T: int | None = None,
                 T_epochs: float | None = None, weight_decay: float = 0.0, batch_size: int = 1,
                 sampling: str = "permutation", rounding: str = "stochastic", seed: int = 0):
        if not 2 <= bits <= 32:
            raise ValueError(f"bits must be in 2..32, got {bits}")
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
        if mu <= 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay}, n, batch_size=batch_size,
                         sampling=sampling, seed=seed)
        self.bits, self.mu, self.rounding = bits, mu, rounding
        self.T = steps_per_snapshot(n, batch_size, T, T_epochs)
        self.levels = 2 ** (bits - 1) - 1
        self._rounding_seed = seed + 1
        device = self.params[0].device if self.params else torch.device("cpu")
        self._rounding_gen = torch.Generator(device=device).manual_seed(self._rounding_seed)
        self._flat = False  # δ = 0: the anchor is stationary, nothing to represent

    def _recentre(self, closure) -> None:
        full, _ = self.grads(closure, None)  # at w = w̃ + z: the new anchor
        group = self.param_groups[0]
        if group["weight_decay"]:
            full = [g + group["weight_decay"] * p for p, g in zip(self.params, full)]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in full))
        delta = norm / (self.mu * self.levels)
        self._flat = float(delta) == 0.0  # one host sync per re-centring
        for p, g in zip(self.params, full):
            st = self.state[p]
            st["anchor"] = p.detach().clone()
            st["full_grad"] = g
            st["k"] = torch.zeros_like(p, dtype=torch.int64)
            st["delta"] = delta.to(p.dtype)

    @torch.no_grad()
    def step(self, closure, indices: torch.Tensor | None = None):
        if self.steps % self.T == 0:
            self._recentre(closure)
        idx = self.next_indices() if indices is None else torch.as_tensor(indices).reshape(-1)
        g, loss = self.grads(closure, idx)
        anchors = [self.state[p]["anchor"] for p in self.params]
        ga = self.grads_at(anchors, closure, idx)
        group = self.param_groups[0]
        for p, gi, ai in zip(self.params, g, ga):
            st = self.state[p]
            v = gi - ai + st["full_grad"]
            if group["weight_decay"]:
                v = v + group["weight_decay"] * (p - st["anchor"])  # λw̃ is already inside g̃
            delta = st["delta"]
            if self._flat:  # at a stationary anchor: nothing to represent
                continue
            z = st["k"].to(p.dtype) * delta - group["lr"] * v
            k = round_integer(z / delta, self.rounding, generator=self._rounding_gen).clamp(-self.levels, self.levels)
            st["k"] = k.to(torch.int64)
            p.copy_(st["anchor"] + k * delta)
        self.steps += 1
        return loss

    def _extra_state(self) -> dict:
        return {"rounding_rng": self._rounding_gen.get_state(), "flat": self._flat}

    def _load_extra_state(self, extra: dict) -> None:
        self._rounding_gen.set_state(extra["rounding_rng"])
        self._flat = extra.get("flat", False)
