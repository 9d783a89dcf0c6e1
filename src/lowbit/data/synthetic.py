"""Synthetic data needing no download: binary classification sets for logistic regression.

``logistic(N, d, cond, separable, seed)`` draws features a_i = z_i·S with z_i standard normal and
S diagonal with singular values spread geometrically from 1 to 1/√cond (so AᵀA/N has condition
number ≈ cond), rows scaled to unit norm on average; labels come from a random ground-truth w₀:
y_i = sign(a_iᵀw₀) when ``separable``, else drawn from the logistic model P(y=1) = σ(a_iᵀw₀).
"""

from __future__ import annotations

import torch


def logistic(N: int = 1000, d: int = 20, *, cond: float = 100.0, separable: bool = False, seed: int = 0,
             dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    if N < 2 or d < 1 or cond < 1:
        raise ValueError("need N >= 2, d >= 1, cond >= 1")
    g = torch.Generator().manual_seed(seed)
    s = torch.logspace(0, -0.5 * torch.log10(torch.tensor(float(cond))).item(), d, dtype=torch.float64)
    A = torch.randn(N, d, generator=g, dtype=torch.float64) * s
    A = A / A.norm(dim=1).mean()
    w0 = torch.randn(d, generator=g, dtype=torch.float64) * 4
    t = A @ w0
    if separable:
        y = torch.where(t >= 0, 1.0, -1.0)
    else:
        y = torch.where(torch.rand(N, generator=g, dtype=torch.float64) < torch.sigmoid(t), 1.0, -1.0)
    return A.to(dtype), y.to(dtype)
