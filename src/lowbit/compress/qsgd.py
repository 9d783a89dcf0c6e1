"""qsgd: QSGD (Alistarh, Grubic, Li, Tomioka, Vojnovic), s quantization levels on the L2 norm.

Q_s(v)_i = ‖v‖₂ · sign(v_i) · ξ_i / s, with ξ_i = l + Bernoulli(s|v_i|/‖v‖ − l) for the level l with
|v_i|/‖v‖ ∈ [l/s, (l+1)/s]: unbiased, E‖Q(v) − v‖² ≤ min(d/s², √d/s)·‖v‖².

Wire: the norm (float32) plus per coordinate either a fixed-width code (sign bit + ⌈log₂(s+1)⌉
level bits) or, with ``coding="elias"``, the Elias-gamma code of ξ_i + 1 followed by a sign bit
for non-zero levels — much shorter when most levels are zero (small s).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..packing import pack, six_bit_words, unpack, unpack_bytes, unpack_sixes
from ..kernels import cpu
from ..quantize import _Bits, _stochastic_integers, joined_words, random_blocks, random_words, round_integer
from . import elias
from .base import (Compressor, Packet, Traits, _check_tensor, byte_codes, byte_rows_mean, byte_table_decode, into,
                   register, scratch)
from .many import MultiTensor, foreach_norms, norm_float64
from .. import kernels


def l2norm(v: torch.Tensor) -> torch.Tensor:
    """‖v‖₂ without overflow or underflow of the squares (float64 accumulation for float32 input,
    scaling by max|v| for float64)."""
    if v.dtype == torch.float32:
        if k := kernels.fused_codecs(v):
            return k.l2norm(v)
        if cpu.wanted(v):
            return norm_float64(v).to(torch.float32)
        return torch.linalg.vector_norm(v, dtype=torch.float64).to(torch.float32)
    amax = v.abs().max() if v.numel() else torch.zeros((), device=v.device)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    return torch.linalg.vector_norm(v / safe) * amax


def _signed_levels(v: torch.Tensor, level: torch.Tensor, levels: int, dtype: torch.dtype):
    """(ξ clamped to [0, levels] with NaN → 0, as ``dtype``; the sign bit of v where ξ > 0)."""
    level = torch.nan_to_num_(level, nan=0.0).clamp_(0, levels).to(dtype)
    return level, ((v < 0) & (level > 0)).to(dtype)


def fixed_codes(v: torch.Tensor, safe: torch.Tensor, levels: int, lbits: int, generator) -> torch.Tensor:
    """QSGD's (and TernGrad's, levels = lbits = 1) packed fixed-width codes sign << lbits | ξ with
    ξ = Int(|v|/safe · levels) by stochastic rounding; on large CPU buffers the codes come from one
    compiled loop on the random words drawn (the same codes as the passes below)."""
    if lbits < 8 and v.dtype == torch.float32 and v.dim() == 1 and cpu.wanted(v):
        blocks, n = random_blocks(v.numel(), generator), v.numel()
        lv = torch.tensor([float(levels), float(1 << lbits)])
        codes = torch.empty(n, dtype=torch.uint8)
        if cpu.by_blocks(cpu.level_codes_into, blocks, n, v, safe.reshape(()), cpu.WORDS, lv[0], lv[1], codes) is not None:
            return pack(codes, 1 + lbits)
        level = _stochastic_integers(v.abs() / safe * levels, _Bits(torch.float32), None, joined_words(blocks))  # no compiler
    else:
        level = round_integer(v.abs() / safe * levels, "stochastic", generator=generator)
    level, sign = _signed_levels(v, level, levels, torch.uint8 if levels <= 127 else torch.int64)  # a byte: no widening
    return pack((sign << lbits) | level, 1 + lbits)


def flat_fixed_codes(flat: torch.Tensor, sizes, scales: torch.Tensor, levels: int, lbits: int, generator):
    """:func:`fixed_codes` of a CPU multi-tensor buffer, tensor j scaled by its s_j (s_j = 0: 1)
    inside the loop: the codes of the default multi-tensor encode, which first writes u = g_j/s_j
    and codes |u|/1·levels — the same values a = |g_j|/s_j·levels (IEEE division is
    sign-symmetric and /1 exact; −0 and NaN give level 0 either way) and the same words, one
    pass fewer.  None where the compiled loops are off (the caller then takes the default path)."""
    if not (cpu.wanted(flat) and lbits < 8 and flat.dim() == 1):
        return None
    words = random_words(flat.numel(), generator)
    codes = scratch(flat.numel(), torch.uint8, 3)
    lv = torch.tensor([float(levels), float(1 << lbits)])
    safe = torch.where(scales == 0, 1.0, scales)
    for part, w, c, s in zip(flat.split(sizes), words.split(sizes), codes.split(sizes), safe):
        cpu.each_tensor(cpu.level_codes_into, part, s, w, lv[0], lv[1], c)
    return pack(codes, 1 + lbits)


def _six_bit_decode(codes: torch.Tensor, norm: torch.Tensor, levels: int, n: int, out=None) -> torch.Tensor | None:
    """n 6-bit codes decoded in two compiled loops (each word's two 12-bit halves, then the values
    two at a time), the values of the table path, into ``out`` (contiguous float32) when given;
    None where the compiled loops are unavailable."""
    unit = (norm.reshape(1) / levels).reshape(())  # the table's norm/s, the same float32 division
    o, m = (torch.empty(n) if out is None else out.reshape(-1)), n // 4
    if m:
        halves = scratch(m, torch.int64)
        if cpu.call(cpu.six_bit_halves, codes.reshape(-1)[: 3 * m], halves) is None:
            return None
        pairs = cpu.as_pairs(o[: 4 * m])
        tmp = torch.empty(4 * m) if pairs is None else None  # an odd offset in the caller's buffer
        if cpu.call(cpu.six_bit_pair_levels, halves.view(torch.int32), unit,
                    pairs if tmp is None else tmp.view(torch.int64)) is None:
            return None
        if tmp is not None:
            o[: 4 * m] = tmp
    if n > 4 * m:  # the last word's first n mod 4 codes, by the same formula eagerly
        word = six_bit_words(codes.reshape(-1)[3 * m :], n - 4 * m)
        c = (word >> torch.arange(0, 6 * (n - 4 * m), 6, dtype=torch.int32)) & 63
        o[4 * m :] = cpu.signed_level(c, 32, unit)
    return o


def _six_bit_codes_at(codes: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The 6-bit codes of values ``q`` (int64 positions) of packed codes (four to each
    little-endian 24-bit word, the first in the low bits; the last word may be cut short)."""
    at = 3 * (q // 4)[:, None] + torch.arange(3)
    b = torch.where(at < codes.numel(), codes[at.clamp(max=codes.numel() - 1)], 0).to(torch.uint8)
    return (cpu.six_bit_words(b.reshape(-1)) >> (6 * (q % 4)).to(torch.int32)) & 63


def _six_bit_mean(payloads: list, segments, levels: int, out: torch.Tensor) -> torch.Tensor | None:
    """(1/n)·Σ_i of n messages of 6-bit codes with per-tensor norms, summed in list order, into
    ``out``: the values of decoding each (±(level·(1/s))·‖g_j‖) and adding, without the decoded
    messages.  Each message's words are split into their 12-bit halves (two codes each), then one
    loop per run of :meth:`~lowbit.compress.many.Segments.byte_runs` (2 values per half) writes the
    mean; values in a half that the tensor before starts, and those of the last word, by the same
    formula eagerly.  None where the compiled loops are unavailable."""
    total = segments.total
    m = total // 4  # whole 24-bit words
    pairs = cpu.as_pairs(out[: 4 * m]) if 4 * m >= cpu.LOOP_MIN else None
    if pairs is None:
        return None
    inv = (torch.ones(1) / levels).reshape(())  # the decode's unit with norm 1, then × ‖g_j‖
    n = torch.tensor(float(len(payloads)))
    halves = []
    for i, p in enumerate(payloads):
        h = scratch(m, torch.int64, 10 + i)
        if cpu.call(cpu.six_bit_halves, p["codes"][: 3 * m], h) is None:
            return None
        halves.append(h.view(torch.int32))
    for b0, b1, j, index in segments.byte_runs(2):
        b1 = min(b1, 2 * m)
        if b1 <= b0:
            continue
        scales = [p["scales"] if index is not None else p["scales"][j : j + 1] for p in payloads]
        if cpu.call(cpu.six_bit_levels_mean, [h[b0:b1] for h in halves], scales,
                    None if index is None else index[: b1 - b0], inv, n, pairs[b0:b1]) is None:
            return None
    pos = 0
    for j, size in enumerate(segments.sizes):
        end = pos + size
        fix = [(pos, min(end, pos + 1))] if pos % 2 and pos < 4 * m else []  # in a half of the tensor before
        if end > 4 * m:
            fix.append((max(pos, 4 * m), end))
        for lo, hi in fix:
            q = torch.arange(lo, hi)
            acc = None
            for p in payloads:
                v = cpu.signed_level(_six_bit_codes_at(p["codes"], q), 32, inv) * p["scales"][j]
                acc = v if acc is None else acc + v
            out[lo:hi] = acc / n
        pos = end
    return out


@register("qsgd")
class QSGD(MultiTensor, Compressor):
    traits = Traits(unbiased=True, sent_meta=("nbits",))  # Elias coding: the exact bit count travels

    def __init__(self, levels: int = 16, coding: str = "fixed"):
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if coding not in ("fixed", "elias"):
            raise ValueError(f"coding is 'fixed' or 'elias', got {coding!r}")
        self.levels = int(levels)
        self.coding = coding
        self._lbits = max(1, math.ceil(math.log2(self.levels + 1)))
        self._fusable = coding == "fixed" and 1 + self._lbits in (2, 4, 6, 8)  # the kernels' code widths
        self.traits = replace(self.traits, bits=1 + self._lbits if coding == "fixed" else None)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        v = tensor.detach().reshape(-1).to(torch.float32)
        norm = l2norm(v).reshape(1)
        return self._encode_scaled(v, norm, generator, tuple(tensor.shape), tensor.dtype)

    def _encode_scaled(self, v, norm, generator, shape, dtype) -> Packet:
        if k := kernels.fused_codecs(v, when=self._fusable):
            codes = k.levels_encode(v, norm, self.levels, self._lbits, generator)
            return Packet({"norm": norm, "codes": codes}, shape, dtype)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        if self.coding == "fixed":
            return Packet({"norm": norm, "codes": fixed_codes(v, safe, self.levels, self._lbits, generator)}, shape, dtype)
        level = round_integer(v.abs() / safe * self.levels, "stochastic", generator=generator)
        level, sign = _signed_levels(v, level, self.levels, torch.int64)
        data, nbits = elias.encode(level + 1, sign)
        return Packet({"norm": norm, "codes": data}, shape, dtype, {"nbits": nbits})

    def batchable(self, states=None) -> bool:
        return self.coding == "fixed"

    def tensor_scales(self, tensors, states=None):
        return foreach_norms(tensors, 2)

    def unit_roundtrip(self, u, generator=None):
        return self.decode(self._encode_scaled(u, torch.ones(1, device=u.device), generator, tuple(u.shape), u.dtype))

    def unit_encode(self, u, generator=None):
        return {"codes": self._encode_scaled(u, torch.ones(1, device=u.device), generator, (u.numel(),), u.dtype).payload["codes"]}

    def unit_decode(self, payload, n, out=None):
        codes = payload["codes"]
        if self.coding == "fixed" and not codes.is_cuda and 1 + self._lbits in (2, 4, 8):
            return byte_table_decode(codes, self._byte_table(torch.ones(1)), n, out)
        if (self.coding == "fixed" and self._lbits == 5 and cpu.wanted(codes) and out is not None
                and out.dtype == torch.float32 and out.is_contiguous()):  # 6-bit codes straight into out
            if _six_bit_decode(codes, torch.ones(1), self.levels, n, out) is not None:
                return out
        return into(self.decode(Packet({"norm": torch.ones(1, device=codes.device), **payload}, (n,))), out)

    def _code_values(self, norm: torch.Tensor) -> torch.Tensor:
        """The value of each of the 2^w fixed-width codes: ±level · (norm/s)."""
        k = torch.arange(1 << (1 + self._lbits))
        lvl = (k & ((1 << self._lbits) - 1)).to(torch.float32) * (norm / self.levels)
        return torch.where((k >> self._lbits).bool(), -lvl, lvl)

    def _byte_table(self, norm: torch.Tensor) -> torch.Tensor:
        """Each byte's 8/w values (256 × 8/w) for codes of w = 2, 4 or 8 bits."""
        return self._code_values(norm)[byte_codes(1 + self._lbits)]

    def flat_encode(self, flat, tensors, segments, *, states=None, generator=None):
        if not (k := kernels.fused_codecs(flat, when=self._fusable)):
            if self.coding == "fixed" and cpu.wanted(flat):
                norms = self.tensor_scales(tensors, states)
                codes = flat_fixed_codes(flat, segments.sizes, norms, self.levels, self._lbits, generator)
                if codes is not None:
                    return {"scales": norms, "codes": codes}
            return super().flat_encode(flat, tensors, segments, states=states, generator=generator)
        norms = self.tensor_scales(tensors, states)
        return {"scales": norms, "codes": k.levels_encode(flat, norms, self.levels, self._lbits, generator, seg=segments.index)}

    def flat_mean(self, payloads, segments, out):
        if payloads[0]["codes"].is_cuda or not cpu.wanted(out) or self.coding != "fixed":
            return None
        if self._lbits == 5:
            return _six_bit_mean(payloads, segments, self.levels, out)
        if 1 + self._lbits not in (2, 4, 8):
            return None
        unit = self._byte_table(torch.ones(1))  # tensor j of message i: unit · s_ij, the decode's products
        loop = None
        if self._lbits == 3:  # 4-bit codes: the same products computed, not gathered
            inv = (torch.ones(1) / self.levels).reshape(())  # the table's norm/s with norm 1

            def loop(codes, index, j, n, o):
                if (pairs := cpu.as_pairs(o)) is None:
                    return None
                scales = [p["scales"] if index is not None else p["scales"][j : j + 1] for p in payloads]
                return cpu.call(cpu.nibble_levels_mean, codes, scales, index, inv, n, pairs)

        return byte_rows_mean(payloads, "codes", lambda p: unit * p["scales"][:, None, None], segments, out, loop)

    def flat_decode(self, payload, segments, *, out=None):
        if not (k := kernels.fused_codecs(payload["codes"], payload["scales"], when=self._fusable)):
            return super().flat_decode(payload, segments, out=out)
        return k.levels_decode(payload["codes"], payload["scales"], self.levels, self._lbits, segments.total,
                             seg=segments.index, out=out)

    def graph_safe(self, flat, states=None) -> bool:
        return kernels.fused_codecs(flat, when=self._fusable) is not None

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        if not (k := kernels.fused_codecs(flat, when=self._fusable)):
            return super().flat_roundtrip(flat, tensors, segments, states=states, generator=generator, out=out)
        norms = self.tensor_scales(tensors, states)
        codes = k.levels_encode(flat, norms, self.levels, self._lbits, generator, seg=segments.index)
        return k.levels_decode(codes, norms, self.levels, self._lbits, flat.numel(), seg=segments.index, out=out)

    def wire_bytes(self, numel: int) -> int:
        return 4 + (numel * (1 + self._lbits) + 7) // 8

    def decode(self, packet: Packet) -> torch.Tensor:
        n = packet.numel
        codes = packet.payload["codes"]
        if k := kernels.fused_codecs(codes, packet.payload["norm"], when=self._fusable):
            v = k.levels_decode(codes, packet.payload["norm"], self.levels, self._lbits, n)
            return v.reshape(packet.shape).to(packet.dtype)
        if self.coding == "fixed" and not codes.is_cuda and 1 + self._lbits in (2, 4, 8):
            # each byte's values from a table of the codes' values (the same products), one gather
            v = byte_table_decode(codes, self._byte_table(packet.payload["norm"].reshape(1)), n)
            return v.reshape(packet.shape).to(packet.dtype)
        if self.coding == "fixed" and not codes.is_cuda and 1 + self._lbits == 6:
            if cpu.wanted(codes) and (v := _six_bit_decode(codes, packet.payload["norm"], self.levels, n)) is not None:
                return v.reshape(packet.shape).to(packet.dtype)
            table = self._code_values(packet.payload["norm"])
            v = torch.index_select(table, 0, scratch(n, torch.int32).copy_(unpack_sixes(codes, n)))
            return v.reshape(packet.shape).to(packet.dtype)
        if self.coding == "fixed":
            w = 1 + self._lbits
            c = unpack_bytes(packet.payload["codes"], w, n) if w in (2, 4, 8) else unpack(packet.payload["codes"], w, n)
            level, sign = c & ((1 << self._lbits) - 1), c >> self._lbits
        else:
            vals, sign = elias.decode(packet.payload["codes"], packet.meta["nbits"], n, with_tail=True)
            level = vals - 1
        mag = level.to(torch.float32) * (packet.payload["norm"] / self.levels)
        out = torch.where(sign.bool(), -mag, mag)
        return out.reshape(packet.shape).to(packet.dtype)
