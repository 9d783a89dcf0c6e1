"""isgq: Indirect Stochastic Gradient Quantization (Abdi & Fekri, AAAI 2020).

A fully-connected layer's weight gradient over a batch factors as G = Δᵀ X (torch's ``weight``
layout, out × in; the paper writes XᵀΔ), with X (B × m) the layer's inputs and Δ (B × n) the
back-propagated errors at its outputs.  ISGQ quantizes the factors instead of G, sends Q(X) and
Q(Δ), and the receiver forms Ĝ = Q(Δ)ᵀ Q(X).  With B < m·n/(m + n) this sends fewer numbers.

Quantizers: uniform symmetric grids with L = 2^(b−1) − 1 levels on each side, step a (X) and
b (Δ), values clipped to ±L·step and stochastically rounded (unbiased inside the clip range).
Algorithm 1 (empirical MSE-ISGQ) chooses the two steps by alternating minimization of the exact
expected error E‖Q(Δ)ᵀQ(X) − ΔᵀX‖²_F: fix a, search b over a grid; fix b, search a; a few rounds.
The expectation has a closed form (bias of clipping plus independent rounding variances v):

    ‖Δ'ᵀX' − ΔᵀX‖²_F + Σ_b [ ‖δ'_b‖²·Σ_i vX_bi + ‖x'_b‖²·Σ_j vΔ_bj + Σ_i vX_bi · Σ_j vΔ_bj ],

with X', Δ' the clipped factors; the bias term is computed from B × B Gram matrices.

Input: a :class:`Factored` gradient (plain tensors are refused: ISGQ needs the factors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..packing import pack, unpack
from ..quantize import round_integer
from .base import Compressor, Packet, Traits, register


@dataclass
class Factored:
    """G = deltaᵀ @ x with x (B × m) and delta (B × n); ``dense()`` gives G (n × m)."""

    x: torch.Tensor
    delta: torch.Tensor

    @property
    def shape(self) -> tuple:
        return (self.delta.shape[1], self.x.shape[1])

    def dense(self) -> torch.Tensor:
        return self.delta.T @ self.x


def _side(v: torch.Tensor, steps: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each candidate step s (k values): v clipped to ±L·s (k × B × m) and the row sums of the
    rounding variances s²·f(1 − f), f the fractional part of |v'|/s (k × B)."""
    s = steps.reshape(-1, 1, 1)
    clipped = torch.maximum(torch.minimum(v, s * L), -s * L)
    f = torch.frac(clipped.abs() / s)
    return clipped, (s**2 * f * (1 - f)).sum(2)


def expected_errors(x, d, a, b, L_x, L_d, *, base=None) -> torch.Tensor:
    """E‖Q_b(Δ)ᵀ Q_a(X) − ΔᵀX‖²_F for candidate steps a (X) and b (Δ): vectors of k values (or
    one value, broadcast), all k in one batched product.  ``base``: ‖ΔᵀX‖²_F = Σ (ΔΔᵀ ∘ XXᵀ)
    when known (it does not depend on the steps)."""
    xc, sx = _side(x, torch.as_tensor(a, device=x.device).reshape(-1), L_x)
    dc, sd = _side(d, torch.as_tensor(b, device=d.device).reshape(-1), L_d)
    if base is None:
        base = ((d @ d.T) * (x @ x.T)).sum()
    gram = ((dc @ dc.transpose(1, 2)) * (xc @ xc.transpose(1, 2))).sum((1, 2))
    cross = ((dc @ d.T) * (xc @ x.T)).sum((1, 2))
    var = ((dc**2).sum(2) * sx + (xc**2).sum(2) * sd + sx * sd).sum(1)
    return (gram - 2 * cross + base).clamp(min=0) + var


def expected_error(x, d, a, b, L_x, L_d) -> torch.Tensor:
    """E‖Q_b(Δ)ᵀ Q_a(X) − ΔᵀX‖²_F for steps a (X) and b (Δ)."""
    return expected_errors(x, d, a, b, L_x, L_d)[0]


@register("isgq")
class ISGQ(Compressor):
    traits = Traits(factored=True)  # takes Factored(x, delta), not a gradient tensor

    def __init__(self, bits: int = 4, bits_delta: int | None = None, iters: int = 2, grid: int = 10):
        if bits < 2:
            raise ValueError(f"bits must be >= 2, got {bits}")
        self.bits = bits
        self.bits_delta = bits_delta or bits
        self.iters = iters
        self.grid = grid

    def steps(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1: alternating minimization of the expected error over grid steps."""
        Lx, Ld = 2 ** (self.bits - 1) - 1, 2 ** (self.bits_delta - 1) - 1
        mx = x.abs().max().clamp(min=1e-30) / Lx
        md = d.abs().max().clamp(min=1e-30) / Ld
        fracs = torch.logspace(-1.5, 0, self.grid, device=x.device)
        base = ((d @ d.T) * (x @ x.T)).sum()
        a, b = mx, md
        for _ in range(self.iters):  # each half: the whole grid in one batched evaluation, no host sync
            b = md * fracs[torch.argmin(expected_errors(x, d, a, md * fracs, Lx, Ld, base=base))]
            a = mx * fracs[torch.argmin(expected_errors(x, d, mx * fracs, b, Lx, Ld, base=base))]
        return a, b

    def _q(self, v: torch.Tensor, step: torch.Tensor, L: int, bits: int, generator) -> torch.Tensor:
        k = round_integer((v / step).clamp(-L, L), "stochastic", generator=generator)
        return pack((torch.nan_to_num(k, nan=0.0).to(torch.int64) + L).reshape(-1), bits)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        if not isinstance(tensor, Factored):
            raise TypeError("isgq compresses a gradient in factored form: pass "
                            "lowbit.compress.isgq.Factored(x, delta) (layer inputs and output errors)")
        x = tensor.x.detach().to(torch.float32)
        d = tensor.delta.detach().to(torch.float32)
        a, b = self.steps(x, d)
        Lx, Ld = 2 ** (self.bits - 1) - 1, 2 ** (self.bits_delta - 1) - 1
        payload = {
            "x": self._q(x, a, Lx, self.bits, generator),
            "delta": self._q(d, b, Ld, self.bits_delta, generator),
            "steps": torch.stack([a, b]).to(torch.float32),
        }
        return Packet(payload, tensor.shape, torch.float32, {"x_shape": tuple(x.shape), "delta_shape": tuple(d.shape)})

    def decode(self, packet: Packet) -> torch.Tensor:
        Lx, Ld = 2 ** (self.bits - 1) - 1, 2 ** (self.bits_delta - 1) - 1
        xs, ds = packet.meta["x_shape"], packet.meta["delta_shape"]
        a, b = packet.payload["steps"]
        x = (unpack(packet.payload["x"], self.bits, xs[0] * xs[1]) - Lx).to(torch.float32).reshape(xs) * a
        d = (unpack(packet.payload["delta"], self.bits_delta, ds[0] * ds[1]) - Ld).to(torch.float32).reshape(ds) * b
        return d.T @ x
