"""Scaling: a separate, named option around any format, never hidden inside one.

* ``"tensor"``: one float32 scale s = max|x| / fmt.max per tensor; x ≈ s · Q(x / s).
* ``"block"``: the tensor is flattened (row-major) into blocks of k values (default 32, as in the
  OCP Microscaling (MX) formats); each block shares a power-of-two scale
  X = 2^(⌊log₂ max|x_block|⌋ − e_max), with e_max the exponent of the element format's largest
  value, stored as an 8-bit biased exponent (E8M0, bias 127).  Elements Q(x / X) saturate at ±max,
  as the MX specification prescribes.

Scaled values are finite approximations; NaN in a block makes that block's scale NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .formats import Format, get_format

__all__ = ["ScaledFormat", "Encoded", "scaled_quantize", "SCALINGS"]

SCALINGS = ("tensor", "block")


@dataclass
class Encoded:
    """Packed codes plus their scales: what a scaled tensor takes on the wire."""

    codes: torch.Tensor  # uint8, packed element codes
    scales: torch.Tensor  # float32 (tensor scaling) or uint8 E8M0 exponents (block scaling)
    shape: tuple

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + self.scales.numel() * self.scales.element_size()


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
    """A format with per-tensor or per-block scaling: ``quantize``, ``encode``, ``decode``."""

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

    def _scales(self, x: torch.Tensor):
        if self.scaling == "tensor":
            amax = x.abs().amax().float()
            s = torch.where((amax > 0) & torch.isfinite(amax), amax / self.fmt.max, torch.ones_like(amax))
            return s.reshape(1)
        xb, _ = _block_view(x, self.block)
        return _block_exponents(xb, self.fmt, self.rule).to(torch.uint8)

    def _scaled_values(self, x: torch.Tensor, rounding: str, generator):
        """(scales, x / scale rounded onto the element format) — in blocks for block scaling."""
        from .quantize import quantize

        scales = self._scales(x)
        v = x / scales.to(x.dtype) if self.scaling == "tensor" else _block_view(x, self.block)[0] / _mult(scales, x)[:, None]
        return scales, quantize(v, self.fmt, rounding, saturate=True, generator=generator)

    def _unscale(self, y: torch.Tensor, scales: torch.Tensor, shape) -> torch.Tensor:
        n = math.prod(shape)
        if self.scaling == "tensor":
            return (y.reshape(-1) * scales.to(y.dtype)).reshape(shape)
        return (y.reshape(-1, self.block) * _mult(scales, y)[:, None]).reshape(-1)[:n].reshape(shape)

    def quantize(self, x: torch.Tensor, rounding: str = "nearest", *, generator=None) -> torch.Tensor:
        if x.numel() == 0:
            return x.clone()
        if x.dtype in (torch.float16, torch.bfloat16):
            return self.quantize(x.float(), rounding, generator=generator).to(x.dtype)
        scales, y = self._scaled_values(x, rounding, generator)
        return self._unscale(y, scales, x.shape)

    def encode(self, x: torch.Tensor, rounding: str = "nearest", *, generator=None) -> Encoded:
        scales, y = self._scaled_values(x, rounding, generator)
        return Encoded(self.fmt.encode(y.reshape(-1)), scales, tuple(x.shape))

    def decode(self, enc: Encoded, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = math.prod(enc.shape)
        count = n if self.scaling == "tensor" else enc.scales.numel() * self.block
        return self._unscale(self.fmt.decode(enc.codes, (count,), dtype), enc.scales, enc.shape)

    def nbytes(self, numel: int) -> int:
        if self.scaling == "tensor":
            return self.fmt.nbytes(numel) + 4
        nb = -(-numel // self.block)
        return self.fmt.nbytes(nb * self.block) + nb


def scaled_quantize(x, fmt, scaling, *, block=32, rounding="nearest", generator=None):
    """Scaled rounding; stochastic rounding takes block scales that never clip (``rule="fit"``)."""
    rule = "fit" if rounding == "stochastic" else "ocp"
    return ScaledFormat(fmt, scaling, block, rule).quantize(x, rounding, generator=generator)
