"""Convergence bounds of SGD with shrunk (quantized) gradients, from "Why Does Stochastic Gradient
Descent Slow Down in Low-Precision Training?" (Yun).

Model: g̃_k = q_k·g_k + ε_k with q_k ∈ [q_min, q_max] ⊂ (0, 1] and E‖ε_k‖² ≤ σ_q², ε uncorrelated
with g.  Assumptions (Bottou, Curtis & Nocedal's SGD analysis): F is L-smooth and c-strongly
convex; ∇F(w)ᵀE[g] ≥ m‖∇F(w)‖² and E‖g‖² ≤ M + M_G‖∇F(w)‖².

The paper's full text was not available to lowbit: the bounds below are the standard
Bottou–Curtis–Nocedal bounds with the stepsize μ replaced by the effective stepsize μ·q, as the
paper's abstract and theorem titles describe (Theorem 3: strongly convex, fixed stepsize;
Theorem 4: strongly convex, diminishing stepsizes).

* Theorem 3 (0 < μ·q_max ≤ m/(L·M_G)):
  E[F(w_k) − F*] ≤ F_∞ + (1 − μ·q_min·c·m)^(k−1)·(F(w_1) − F* − F_∞),
  F_∞ = μ·q_max·L·(M + σ_q²) / (2·c·m·q_min):
  a linear rate slowed from (1 − μcm) to (1 − μ·q_min·c·m), towards a floor raised by σ_q².
* Theorem 4 (μ_k = β/(γ + k), β > 1/(c·m·q_min), μ_1·q_max ≤ m/(L·M_G)):
  E[F(w_k) − F*] ≤ ν/(γ + k),
  ν = max{β²·L·(M + σ_q²) / (2(β·c·m·q_min − 1)), (γ + 1)(F(w_1) − F*)}.

:func:`estimate_constants` measures M (with M_G = 1: E‖g‖² = ‖∇F‖² + Var g ≤ Var_max + ‖∇F‖²)
and uses m = 1 (uniform sampling makes E[g] = ∇F); L and c come exactly from the problem, q_min,
q_max and σ_q² from the run's shrinkage statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class Constants:
    L: float
    c: float
    m: float = 1.0
    M: float = 0.0
    M_G: float = 1.0
    sigma_q2: float = 0.0
    q_min: float = 1.0
    q_max: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def max_fixed_stepsize(k: Constants) -> float:
    """The largest μ Theorem 3 allows: m / (L·M_G·q_max)."""
    return k.m / (k.L * k.M_G * k.q_max)


def theorem3(k: Constants, mu: float, gap1: float, steps) -> np.ndarray:
    """Bound on E[F(w_k) − F*] for k in ``steps`` (1-based) with fixed stepsize μ."""
    if not 0 < mu * k.q_max <= k.m / (k.L * k.M_G) * (1 + 1e-12):
        raise ValueError(f"Theorem 3 needs 0 < μ·q_max ≤ m/(L·M_G) = {k.m / (k.L * k.M_G):.4g}; got {mu * k.q_max:.4g}")
    floor = mu * k.q_max * k.L * (k.M + k.sigma_q2) / (2 * k.c * k.m * k.q_min)
    rate = 1 - mu * k.q_min * k.c * k.m
    s = np.asarray(steps, dtype=np.float64)
    return floor + rate ** (s - 1) * (gap1 - floor)


def theorem4(k: Constants, beta: float, gamma: float, gap1: float, steps) -> np.ndarray:
    """Bound on E[F(w_k) − F*] with μ_k = β/(γ + k)."""
    if beta * k.c * k.m * k.q_min <= 1:
        raise ValueError(f"Theorem 4 needs β > 1/(c·m·q_min) = {1 / (k.c * k.m * k.q_min):.4g}")
    nu = max(beta**2 * k.L * (k.M + k.sigma_q2) / (2 * (beta * k.c * k.m * k.q_min - 1)), (gamma + 1) * gap1)
    return nu / (gamma + np.asarray(steps, dtype=np.float64))


def estimate_constants(problem, points: list[torch.Tensor], batch_size: int = 1, *, samples: int = 2000,
                       seed: int = 0) -> Constants:
    """L and c of the problem; M from the largest minibatch-gradient variance over ``points``."""
    g = torch.Generator().manual_seed(seed)
    var_max = 0.0
    for w in points:
        full = problem.grad(w)
        idx = torch.randint(0, problem.N, (samples, batch_size), generator=g)
        if batch_size == 1:
            per = problem.per_sample_grads(w, idx[:, 0])
        else:
            per = torch.stack([problem.grad(w, i) for i in idx])
        var_max = max(var_max, float(((per - full) ** 2).sum(1).mean()))
    return Constants(L=problem.L, c=problem.mu, m=1.0, M=var_max, M_G=1.0)
