"""topk: keep the k = ⌈ratio·d⌉ largest-magnitude entries (indices + float32 values).

Biased, contractive: ‖C(g) − g‖² ≤ (1 − k/d)·‖g‖².  Indices travel as int32 (int64 beyond 2^31
entries).  Use with ErrorFeedback for convergence.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .base import Compressor, Packet, _check_tensor, register


def k_of(ratio: float, d: int) -> int:
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return max(1, min(d, math.ceil(ratio * d)))


def index_dtype(d: int) -> torch.dtype:
    return torch.int32 if d < 2**31 else torch.int64


def scatter(packet: Packet, scale: float = 1.0) -> torch.Tensor:
    out = torch.zeros(packet.numel, dtype=torch.float32, device=packet.payload["values"].device)
    out[packet.payload["indices"].long()] = packet.payload["values"] * scale
    return out.reshape(packet.shape).to(packet.dtype)


class Sparsifier(Compressor):
    """A codec that sends k = ⌈ratio·d⌉ of a tensor's d entries (their indices and values)."""

    def __init__(self, ratio: float = 0.01):
        k_of(ratio, 1)
        self.ratio = ratio
        self.traits = replace(self.traits, bits=64 * ratio)  # an int32 index and a float32 value per kept entry

    def _flat(self, tensor) -> tuple[torch.Tensor, int]:
        """(the tensor as a flat float32 vector, k)."""
        _check_tensor(tensor)
        g = tensor.detach().reshape(-1).to(torch.float32)
        return g, k_of(self.ratio, g.numel())


@register("topk")
class TopK(Sparsifier):
    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        g, k = self._flat(tensor)
        _, idx = torch.topk(torch.nan_to_num(g.abs(), nan=float("inf")), k, sorted=False)
        return Packet({"indices": idx.to(index_dtype(g.numel())), "values": g[idx]}, tuple(tensor.shape), tensor.dtype)

    def decode(self, packet: Packet) -> torch.Tensor:
        return scatter(packet)
