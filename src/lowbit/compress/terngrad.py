"""terngrad: TernGrad (Wen, Xu, Yan, Wu, Wang, Chen, Li), ternary gradients with a scale.

s = max|g| (per tensor, after optional clipping of g to ±c·σ with σ the standard deviation of g);
g̃ = s·sign(g)∘b with b_i ~ Bernoulli(|g_i|/s).  Unbiased without clipping (E g̃ = g); 2 bits per
coordinate plus the float32 scale.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..packing import unpack_bytes
from .qsgd import fixed_codes, flat_fixed_codes
from ..kernels import cpu
from .base import Compressor, Packet, _check_tensor, byte_codes, byte_rows_mean, byte_table_decode, into, register
from .many import MultiTensor, foreach_norms
from .. import kernels


@register("terngrad")
class TernGrad(MultiTensor, Compressor):
    def __init__(self, clip: float | None = None):
        self.clip = clip
        self.traits = replace(self.traits, unbiased=clip is None, bits=2)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        g = tensor.detach().reshape(-1).to(torch.float32)
        if self.clip is not None and g.numel() > 1:
            c = self.clip * g.std()
            g = torch.maximum(torch.minimum(g, c), -c)
        s = (foreach_norms([g], float("inf")).reshape(1) if g.numel()  # max|g| in one pass, NaN propagates
             else torch.zeros(1, device=g.device))
        return self._encode_scaled(g, s, generator, tuple(tensor.shape), tensor.dtype)

    def _encode_scaled(self, g, s, generator, shape, dtype) -> Packet:
        if k := kernels.fused_codecs(g):  # one level: code = sign << 1 | Bernoulli(|g|/s), as below
            return Packet({"scale": s, "codes": k.levels_encode(g, s, 1, 1, generator)}, shape, dtype)
        safe = torch.where(s > 0, s, torch.ones_like(s))
        # one level: code = sign << 1 | Bernoulli(|g|/s), so 0 → 0, 1 → +s, 3 → −s
        return Packet({"scale": s, "codes": fixed_codes(g, safe, 1, 1, generator)}, shape, dtype)

    def batchable(self, states=None) -> bool:
        return self.clip is None

    def tensor_scales(self, tensors, states=None):
        return foreach_norms(tensors, float("inf"))

    def unit_roundtrip(self, u, generator=None):
        return self.decode(self._encode_scaled(u, torch.ones(1, device=u.device), generator, tuple(u.shape), u.dtype))

    def unit_encode(self, u, generator=None):
        return {"codes": self._encode_scaled(u, torch.ones(1, device=u.device), generator, (u.numel(),), u.dtype).payload["codes"]}

    def unit_decode(self, payload, n, out=None):
        if not payload["codes"].is_cuda:
            return byte_table_decode(payload["codes"], self._byte_table(torch.ones(1)), n, out)
        return into(self.decode(Packet({"scale": torch.ones(1, device=payload["codes"].device), **payload}, (n,))), out)

    @staticmethod
    def _byte_table(scale: torch.Tensor) -> torch.Tensor:
        """Each byte's four values (256 × 4): code 0 → 0, 1 → +s, 3 → −s."""
        k = torch.arange(4)
        values = (k & 1).to(torch.float32) * (1 - (k >> 1).to(torch.float32) * 2) * scale
        return values[byte_codes(2)]

    def flat_encode(self, flat, tensors, segments, *, states=None, generator=None):
        if not (k := kernels.fused_codecs(flat)):
            if cpu.wanted(flat):
                s = self.tensor_scales(tensors, states)
                codes = flat_fixed_codes(flat, segments.sizes, s, 1, 1, generator)
                if codes is not None:
                    return {"scales": s, "codes": codes}
            return super().flat_encode(flat, tensors, segments, states=states, generator=generator)
        s = self.tensor_scales(tensors, states)
        return {"scales": s, "codes": k.levels_encode(flat, s, 1, 1, generator, seg=segments.index)}

    def flat_mean(self, payloads, segments, out):
        if payloads[0]["codes"].is_cuda or not cpu.wanted(out):
            return None
        unit = self._byte_table(torch.ones(1))  # tensor j of message i: unit · s_ij, the decode's products
        return byte_rows_mean(payloads, "codes", lambda p: unit * p["scales"][:, None, None], segments, out)

    def flat_decode(self, payload, segments, *, out=None):
        if not (k := kernels.fused_codecs(payload["codes"], payload["scales"])):
            return super().flat_decode(payload, segments, out=out)
        return k.levels_decode(payload["codes"], payload["scales"], 1, 1, segments.total, seg=segments.index, out=out)

    def graph_safe(self, flat, states=None) -> bool:
        return kernels.fused_codecs(flat) is not None

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        if not (k := kernels.fused_codecs(flat)):
            return super().flat_roundtrip(flat, tensors, segments, states=states, generator=generator, out=out)
        s = self.tensor_scales(tensors, states)
        codes = k.levels_encode(flat, s, 1, 1, generator, seg=segments.index)
        return k.levels_decode(codes, s, 1, 1, flat.numel(), seg=segments.index, out=out)

    def wire_bytes(self, numel: int) -> int:
        return 4 + (2 * numel + 7) // 8

    def decode(self, packet: Packet) -> torch.Tensor:
        if k := kernels.fused_codecs(packet.payload["codes"], packet.payload["scale"]):
            v = k.levels_decode(packet.payload["codes"], packet.payload["scale"], 1, 1, packet.numel)
            return v.reshape(packet.shape).to(packet.dtype)
        if not packet.payload["codes"].is_cuda:  # the same products, from a byte → four values table
            v = byte_table_decode(packet.payload["codes"], self._byte_table(packet.payload["scale"].reshape(1)), packet.numel)
            return v.reshape(packet.shape).to(packet.dtype)
        c = unpack_bytes(packet.payload["codes"], 2, packet.numel)
        v = (c & 1).to(torch.float32) * (1 - (c >> 1).to(torch.float32) * 2) * packet.payload["scale"]
        return v.reshape(packet.shape).to(packet.dtype)
