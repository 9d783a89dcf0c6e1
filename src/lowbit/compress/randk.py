"""randk: k = ⌈ratio·d⌉ coordinates chosen uniformly without replacement, scaled by d/k.

Unbiased: each coordinate is kept with probability k/d, so E[C(g)] = g; variance
E‖C(g) − g‖² = (d/k − 1)‖g‖².  Indices (int32), values (float32) and one byte saying whether the
whole input was finite (so that a NaN outside the sample is not lost) travel.
"""

from __future__ import annotations

import torch

from .base import Packet, Traits, all_finite, register
from .topk import Sparsifier, index_dtype, scatter


@register("randk")
class RandK(Sparsifier):
    traits = Traits(unbiased=True)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        g, k = self._flat(tensor)
        d = g.numel()
        gdev = generator.device if generator is not None else g.device
        idx = torch.randperm(d, generator=generator, device=gdev)[:k].to(g.device)
        finite = all_finite(g).reshape(1).to(torch.uint8)
        return Packet({"indices": idx.to(index_dtype(d)), "values": g[idx], "finite": finite},
                      tuple(tensor.shape), tensor.dtype, {"scale": d / k})

    def decode(self, packet: Packet) -> torch.Tensor:
        out = scatter(packet, packet.meta["scale"])
        return torch.where(packet.payload["finite"].bool(), out, torch.full_like(out, float("nan")))
