"""signsgd: scaled sign compression, ‖g‖₁/d · sign(g) (Bernstein et al.; Karimireddy et al.'s
EF-signSGD when wrapped in ErrorFeedback).  One bit per coordinate plus the float32 scale; zero
entries are sent as +, a deviation of at most the scale on exactly-zero coordinates.
"""

from __future__ import annotations

import torch

from ..packing import BYTE_BITS, pack, unpack
from ..kernels import cpu
from .base import (Compressor, Packet, Traits, _check_tensor, byte_rows_mean, byte_table_decode, each_tensor, into,
                   register, scratch)
from .many import MultiTensor, _cpu_float32, foreach_norms
from .. import kernels


_BITS = BYTE_BITS  # bit j of byte b: is coordinate 8i + j ≥ 0
_UNIT = torch.where(_BITS, 1.0, -1.0)  # the eight signs of each byte as ±1.0


@register("signsgd")
class SignSGD(MultiTensor, Compressor):
    traits = Traits(bits=1)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        g = tensor.detach().reshape(-1).to(torch.float32)
        if k := kernels.fused_codecs(g):
            signs, scale = k.sign_encode(g)
            return Packet({"scale": scale, "signs": signs}, tuple(tensor.shape), tensor.dtype)
        scale = (g.abs().sum() / max(1, g.numel())).reshape(1)
        return Packet({"scale": scale, "signs": pack(g >= 0, 1)}, tuple(tensor.shape), tensor.dtype)

    def tensor_scales(self, tensors, states=None):
        tensors = list(tensors)
        if tensors and _cpu_float32(tensors):  # ‖g_j‖₁ summed in float64 (torch's CPU L1 norm: in float32)
            norms = list(foreach_norms(tensors, 1).unbind())
        else:
            norms = torch._foreach_norm(tensors, 1)
        # ‖g_j‖₁ / d_j, no host→device copy
        return torch.stack(torch._foreach_div(norms, [float(max(1, t.numel())) for t in tensors])).to(torch.float32)

    def unit_roundtrip(self, u, generator=None):
        return torch.where(u >= 0, 1.0, -1.0).to(torch.float32)

    def unit_encode(self, u, generator=None):
        if k := kernels.fused_codecs(u):
            return {"signs": k.sign_encode(u, scale=False)}
        return {"signs": pack(u >= 0, 1)}

    def unit_decode(self, payload, n, out=None):
        if not payload["signs"].is_cuda:
            return into(byte_table_decode(payload["signs"], _UNIT, n, out), out)
        return into(self.decode(Packet({"scale": torch.ones(1, device=payload["signs"].device), **payload}, (n,))), out)

    def flat_encode(self, flat, tensors, segments, *, states=None, generator=None):
        # sign(g/s) = sign(g) for s > 0; s = 0 or NaN make the decoded tensor 0 or NaN either way
        return {"scales": self.tensor_scales(tensors, states), **self.unit_encode(flat)}

    def flat_feedback(self, v, tensors, segments, *, states=None, generator=None, out=None):
        """On a large CPU buffer, tensor by tensor in one loop each: the bits v ≥ 0 and
        e = v − s_j·sign(v) in place (v ∓ s_j: the same values as subtracting the decode); no
        decode is built."""
        if not cpu.wanted(v):
            return super().flat_feedback(v, tensors, segments, states=states, generator=generator, out=out)
        scales = self.tensor_scales(tensors, states)
        pos = scratch(v.numel(), torch.uint8, 3)
        for part, bits, sc in zip(v.split(segments.sizes), pos.split(segments.sizes), scales):
            each_tensor(cpu.signed_residual, part, sc, bits)
        return {"scales": scales, "signs": pack(pos.view(torch.bool), 1)}, None

    def flat_mean(self, payloads, segments, out):
        if payloads[0]["signs"].is_cuda or not cpu.wanted(out):
            return None
        return byte_rows_mean(payloads, "signs", lambda p: _UNIT * p["scales"][:, None, None], segments, out)

    def flat_decode(self, payload, segments, *, out=None):
        if not (k := kernels.fused_codecs(payload["signs"], payload["scales"])):  # ±1 into out, then × s_j
            return super().flat_decode(payload, segments, out=out)
        return k.sign_decode(payload["signs"], payload["scales"], segments.total, seg=segments.index, out=out)

    def graph_safe(self, flat, states=None) -> bool:
        return kernels.fused_codecs(flat) is not None

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        if not (k := kernels.fused_codecs(flat)):
            return super().flat_roundtrip(flat, tensors, segments, states=states, generator=generator, out=out)
        signs = k.sign_encode(flat, scale=False)
        return k.sign_decode(signs, self.tensor_scales(tensors, states), flat.numel(), seg=segments.index, out=out)

    def wire_bytes(self, numel: int) -> int:
        return 4 + (numel + 7) // 8

    def decode(self, packet: Packet) -> torch.Tensor:
        if k := kernels.fused_codecs(packet.payload["signs"], packet.payload["scale"]):
            v = k.sign_decode(packet.payload["signs"], packet.payload["scale"], packet.numel)
            return v.reshape(packet.shape).to(packet.dtype)
        signs, scale, n = packet.payload["signs"], packet.payload["scale"], packet.numel
        if signs.device.type == "cpu" and scale.numel() == 1:  # one gather: byte → its eight values ±s
            s = scale.reshape(()).to(torch.float32)
            return byte_table_decode(signs, torch.where(_BITS, s, -s), n).reshape(packet.shape).to(packet.dtype)
        s = unpack(signs, 1, n).to(torch.float32) * 2 - 1
        return (s * scale).reshape(packet.shape).to(packet.dtype)
