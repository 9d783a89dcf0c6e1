"""The straight-through estimator of rounding's gradient (Bengio, Léonard and Courville, 2013):
the gradient of q = quantize(x) is taken as the identity where the rounded value stands for x."""

from __future__ import annotations

import torch


def straight_through(grad: torch.Tensor, x: torch.Tensor, fmt, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``grad`` where the rounded value stands for x — without scaling, |x| ≤ max (false for NaN
    and ±inf; q is then finite) — else zero: where the input was NaN or ±inf, where it overflowed
    (to inf, NaN or, saturating, ±max).  With scaling, ``keep`` (x and q finite)."""
    keep = (x.abs() <= fmt.max) if keep is None else keep
    return torch.where(keep, grad, torch.zeros_like(grad))


__all__ = ["straight_through"]
