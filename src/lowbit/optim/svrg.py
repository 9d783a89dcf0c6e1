"""SVRG (Johnson & Zhang): every T steps take a snapshot w̃ ← w and its full gradient
μ = ∇F(w̃); in between, step along the variance-reduced direction

    v = ∇f_i(w) − ∇f_i(w̃) + μ,      w ← w − η·(v + λ·w),

which is unbiased and whose variance vanishes as w and w̃ approach the optimum, so a constant
stepsize converges linearly on strongly convex problems.  ``T`` counts steps (``T_epochs`` counts
passes: T = T_epochs · n / batch_size).  ``codec`` rounds v (the communicated vector).
"""

from __future__ import annotations

import math

import torch

from .finite_sum import FiniteSumOptimizer


def steps_per_snapshot(n: int, batch_size: int, T: int | None, T_epochs: float | None) -> int:
    if (T is None) == (T_epochs is None):
        raise ValueError("give exactly one of T (steps) or T_epochs (passes over the data)")
    T = T if T is not None else max(1, math.ceil(T_epochs * n / batch_size))
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return int(T)


class SVRG(FiniteSumOptimizer):
    def __init__(self, params, lr: float, n: int, *, T: int | None = None, T_epochs: float | None = None,
                 weight_decay: float = 0.0, batch_size: int = 1, sampling: str = "permutation", codec=None,
                 rounding: str = "nearest", seed: int = 0, record: bool = False):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay}, n, batch_size=batch_size,
                         sampling=sampling, codec=codec, rounding=rounding, seed=seed, record=record)
        self.T = steps_per_snapshot(n, batch_size, T, T_epochs)

    def _snapshot(self, closure) -> None:
        full, _ = self.grads(closure, None)
        for p, g in zip(self.params, full):
            self.state[p]["anchor"] = p.detach().clone()
            self.state[p]["full_grad"] = g

    @torch.no_grad()
    def step(self, closure, indices: torch.Tensor | None = None):
        if self.steps % self.T == 0:
            self._snapshot(closure)
        idx = self.next_indices() if indices is None else torch.as_tensor(indices).reshape(-1)
        g, loss = self.grads(closure, idx)
        ga = self.grads_at([self.state[p]["anchor"] for p in self.params], closure, idx)
        v = [gi - ai + self.state[p]["full_grad"] for p, gi, ai in zip(self.params, g, ga)]
        v = self.communicate(v)
        group = self.param_groups[0]
        for p, vi in zip(self.params, v):
            if group["weight_decay"]:
                vi = vi + group["weight_decay"] * p
            p.add_(vi, alpha=-group["lr"])
        self.steps += 1
        return loss
