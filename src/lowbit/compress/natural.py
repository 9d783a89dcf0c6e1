"""natural: natural compression (Horváth, Ho, Horváth, Sahu, Canini, Richtárik), the codec of NatSGD.

C_nat(t) = sign(t)·2^⌊log₂|t|⌋·(1 + Bernoulli((|t| − 2^⌊log₂|t|⌋)/2^⌊log₂|t|⌋)): stochastic rounding
of |t| to one of the two neighbouring powers of two.  Unbiased, with E‖C(t) − t‖² ≤ ‖t‖²/8, and
9 bits per coordinate on the wire: the 8-bit float32 exponent field (0 encodes zero) plus one
sign bit.  It is exactly stochastic rounding onto the format e8m0 (no mantissa bits), which is how
it is computed.
"""

from __future__ import annotations

import torch

from ..formats import FloatFormat
from ..packing import BYTE_BITS, pack, unpack
from ..quantize import joined_words, quantize, random_blocks
from .base import Compressor, Packet, Traits, _check_tensor, into, register, scratch
from .many import MultiTensor
from .. import kernels
from ..kernels import cpu

_POW2 = FloatFormat(8, 0, 127, name="pow2")
_EXPONENT_VALUES = (torch.arange(256, dtype=torch.int32) << 23).view(torch.float32)  # field e → 2^(e − 127), 0, inf
_SIGN_FACTORS = torch.where(BYTE_BITS, -1.0, 1.0)  # a set sign bit: negative


def _sign_bytes(packed: list, n: int) -> list | None:
    """Each message's first n sign bits (packed, bit 0 first) as 0/1 bytes, in reused buffers
    (scratch slot 10 + i), by one compiled loop each; None where compilation is unavailable."""
    out = []
    for i, p in enumerate(packed):
        p = p.reshape(-1)[: (n + 7) // 8]
        b = scratch(p.numel(), torch.int64, 10 + i)
        if cpu.call(cpu.rows_into, cpu.BIT_SPREAD, p, b) is None:
            return None
        out.append(b.view(torch.uint8)[:n])
    return out


@register("natural")
class Natural(MultiTensor, Compressor):
    traits = Traits(unbiased=True, elementwise=True, omega=1 / 8, bits=9)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        t = tensor.detach().reshape(-1).to(torch.float32)
        if k := kernels.fused_codecs(t):
            e, s = k.natural_encode(t, generator)
            return Packet({"exponent": e, "sign": s}, tuple(tensor.shape), tensor.dtype)
        if cpu.wanted(t):  # the fields straight from the words, in one loop (the same values)
            blocks, bits = random_blocks(t.numel(), generator), t.view(torch.int32)
            exponent, negative = torch.empty(t.numel(), dtype=torch.uint8), scratch(t.numel(), torch.uint8, 3)
            if cpu.by_blocks(cpu.natural_fields, blocks, t.numel(), bits, cpu.WORDS, exponent, negative) is None:
                cpu.natural_fields(bits, joined_words(blocks), exponent, negative)
        else:
            q = quantize(t, _POW2, "stochastic", generator=generator).view(torch.int32)
            exponent, negative = ((q >> 23) & 0xFF).to(torch.uint8), (q < 0).to(torch.uint8)
        return Packet({"exponent": exponent, "sign": pack(negative, 1)}, tuple(tensor.shape), tensor.dtype)

    def unit_roundtrip(self, u, generator=None):
        return self.roundtrip(u, generator=generator)[0]

    def unit_encode(self, u, generator=None):
        return self.encode(u, generator=generator).payload

    def unit_decode(self, payload, n, out=None):
        if k := kernels.fused_codecs(payload["exponent"]):
            return k.natural_decode(payload["exponent"], payload["sign"], n, out=out)
        if out is not None and out.dtype == torch.float32 and out.is_contiguous():
            # 2^(e − 127) by one gather per value, times ±1 by one gather per sign byte (exact)
            o, e = out.reshape(-1), payload["exponent"].reshape(-1)[:n]
            torch.index_select(_EXPONENT_VALUES, 0, scratch(n, torch.int32).copy_(e), out=o)
            nb = (n + 7) // 8
            signs = scratch(8 * nb, torch.float32)
            torch.index_select(_SIGN_FACTORS, 0, scratch(nb, torch.int32, 1).copy_(payload["sign"].reshape(-1)[:nb]),
                               out=signs.view(nb, 8))
            return o.mul_(signs[:n]).view(out.shape)
        return into(self.decode(Packet(payload, (n,))), out)

    def flat_mean(self, payloads, segments, out):
        """(1/n)·Σ_i decode(payload_i) into ``out`` in one compiled loop (CPU, n > 1), else None."""
        if len(payloads) < 2 or payloads[0]["exponent"].is_cuda or not (out.is_contiguous() and cpu.wanted(out)):
            return None
        m = segments.total
        exponents = [p["exponent"].reshape(-1)[:m] for p in payloads]
        if (signs := _sign_bytes([p["sign"] for p in payloads], m)) is None:
            return None
        return cpu.call(cpu.natural_mean, exponents, signs, torch.tensor(float(len(payloads))), out.reshape(-1))

    def graph_safe(self, flat, states=None) -> bool:
        return kernels.fused_codecs(flat) is not None

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        if not (k := kernels.fused_codecs(flat)):
            return super().flat_roundtrip(flat, tensors, segments, states=states, generator=generator, out=out)
        e, s = k.natural_encode(flat, generator)
        return k.natural_decode(e, s, flat.numel(), out=out)

    def wire_bytes(self, numel: int) -> int:
        return numel + (numel + 7) // 8

    def decode(self, packet: Packet) -> torch.Tensor:
        n = packet.numel
        if k := kernels.fused_codecs(packet.payload["exponent"]):
            v = k.natural_decode(packet.payload["exponent"], packet.payload["sign"], n)
            return v.reshape(packet.shape).to(packet.dtype)
        if cpu.wanted(packet.payload["exponent"]) and packet.payload["exponent"].numel() == n:
            # the mean of one message: the same patterns (s ≪ 31) | (e ≪ 23), divided by 1, in one loop
            out = torch.empty(n)
            if (signs := _sign_bytes([packet.payload["sign"]], n)) is not None and cpu.call(
                    cpu.natural_mean, [packet.payload["exponent"].reshape(-1)], signs, torch.tensor(1.0), out) is not None:
                return out.reshape(packet.shape).to(packet.dtype)
        e = packet.payload["exponent"].to(torch.int32)
        s = unpack(packet.payload["sign"], 1, n).to(torch.int32)
        bits = (s << 31) | (e << 23)
        return bits.view(torch.float32).reshape(packet.shape).to(packet.dtype)
