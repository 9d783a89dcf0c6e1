"""Scaling: a separate, named option around any format, never hidden inside one.

* ``"tensor"``: one float32 scale s = max|x| / fmt.max per tensor; x ≈ s · Q(x / s).
* ``"block"``: the tensor is flattened (row-major) into blocks of k values (default 32, as in the
  OCP Microscaling (MX) formats); each block shares a power-of-two scale
  X = 2^(⌊log₂ max|x_block|⌋ − e_max), with e_max the exponent of the element format's largest
  value, stored as an 8-bit biased exponent (E8M0, bias 127).  Elements Q(x / X) saturate at ±max,
  as the MX specification prescribes.

Scaled values are finite approximations; NaN in a block makes that block's scale NaN.

This module holds the definition and the scale arithmetic; rounding with a scale is
:func:`lowbit.quantize` (``scaling=…``, or :func:`lowbit.quantize.scaled_values`), its codes on the
wire :func:`lowbit.packing.encode` / :func:`lowbit.packing.decode`.
"""

from __future__ import annotations

import math

import torch

from .formats import Format, get_format

__all__ = ["ScaledFormat", "SCALINGS"]

SCALINGS = ("tensor", "block")


def _block_view(x: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    flat = x.reshape(-1)
    pad = (-flat.numel()) % block
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return flat.reshape(-1, block), pad


def _block_exponents(xb: torch.Tensor, fmt: Format, rule: str = "ocp") -> torch.Tensor:
    """Biased E8M0 exponent (int32, 0..254) of each block's shared scale: ``"ocp"``,
    ⌊log₂ amax⌋ − e_max (the MX specification), or ``"fit"``, the smallest X with amax ≤ max·X
    (no clipping, so stochastic rounding stays unbiased)."""
    amax = xb.abs().amax(dim=1).float()
    _, e = torch.frexp(amax)
    e = torch.where(amax > 0, e - 1 - fmt.emax, torch.full_like(e, -127))
    if rule == "fit":
        top = torch.ldexp(torch.full_like(amax, fmt.max), e)
        e = e + (amax > top).to(e.dtype)
    return (e + 127).clamp(0, 254)


def _mult(scales: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """2^(e − 127) for E8M0 exponents e, in like's dtype and device."""
    ones = torch.ones(scales.shape, dtype=like.dtype, device=like.device)
    return torch.ldexp(ones, scales.to(device=like.device, dtype=torch.int32) - 127)


class ScaledFormat:
    """A format with per-tensor or per-block scaling (``rule``: how a block's exponent is chosen,
    see :func:`_block_exponents`)."""

    def __init__(self, fmt, scaling: str = "block", block: int = 32, rule: str = "ocp"):
        if rule not in ("ocp", "fit"):
            raise ValueError(f"rule must be 'ocp' or 'fit', got {rule!r}")
        self.rule = rule
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.fmt = get_format(fmt)
        self.scaling = scaling
        self.block = int(block)

    def __repr__(self) -> str:
        extra = f", block={self.block}" if self.scaling == "block" else ""
        return f"ScaledFormat({self.fmt.label!r}, {self.scaling!r}{extra})"

    def bits_per_value(self) -> float:
        if self.scaling == "block":
            return self.fmt.code_bits + 8 / self.block
        return float(self.fmt.code_bits)

    def scales(self, x: torch.Tensor) -> torch.Tensor:
        """The scales of ``x``: one float32 s = max|x|/max (tensor), or each block's E8M0 exponent
        as uint8 (block)."""
        if self.scaling == "tensor":
            amax = x.abs().amax().float()
            s = torch.where((amax > 0) & torch.isfinite(amax), amax / self.fmt.max, torch.ones_like(amax))
            return s.reshape(1)
        xb, _ = _block_view(x, self.block)
        return _block_exponents(xb, self.fmt, self.rule).to(torch.uint8)

    def divide(self, x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """x / scale: flat for tensor scaling, (blocks × block) for block scaling (zero-padded)."""
        if self.scaling == "tensor":
            return x / scales.to(x.dtype)
        return _block_view(x, self.block)[0] / _mult(scales, x)[:, None]

    def unscale(self, y: torch.Tensor, scales: torch.Tensor, shape) -> torch.Tensor:
        """y · scale in ``shape`` (the inverse of :meth:`divide`, padding dropped)."""
        n = math.prod(shape)
        if self.scaling == "tensor":
            return (y.reshape(-1) * scales.to(y.dtype)).reshape(shape)
        return (y.reshape(-1, self.block) * _mult(scales, y)[:, None]).reshape(-1)[:n].reshape(shape)

    def nbytes(self, numel: int) -> int:
        if self.scaling == "tensor":
            return self.fmt.nbytes(numel) + 4
        nb = -(-numel // self.block)
        return self.fmt.nbytes(nb * self.block) + nb
