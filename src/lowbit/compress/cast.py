"""cast: rounding a gradient onto a number format — the FP16/FP8/FP4 gradients of the
low-precision SGD slowdown paper — with optional per-tensor or per-block (MX) scaling.

g̃ = Q(g) (``scaling=None``), s·Q(g/s) with s = max|g|/max (``"tensor"``), or X_b·Q(g/X_b) per
block of ``block`` values with X_b a power of two (``"block"``).  Nearest rounding is biased;
stochastic rounding is unbiased inside the format's range (always so with scaling).  An integer
format with ``scaling="tensor"`` is the symmetric uniform quantizer (q_max = 2^(b−1) − 1) of the
slowdown reproduction's ResNet path, applied here to every parameter.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import torch

from ..formats import FloatFormat, get_format
from ..packing import decode, float_codes, int_codes, pack
from ..quantize import quantize, scaled_values, stochastic_codes
from ..scaling import ScaledFormat
from ..kernels import cpu as compiled
from .base import Compressor, all_finite, Packet, _check_tensor, byte_rows_mean, into, register, scratch
from . import many
from .many import MultiTensor
from .. import kernels

_NATIVE = {name: getattr(torch, name) for name in
           ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
           if hasattr(torch, name)}


_FUSED_ROUNDINGS = ("nearest", "stochastic")
_ONE = torch.tensor(1.0)  # the mean of one message: table_mean's division, exact
_TRUE = torch.ones(1, dtype=torch.bool)
_FP4 = get_format("fp4")  # the fused kernels' roundings; "zero" runs as torch code


@functools.lru_cache(maxsize=None)
def _byte_values(dtype: torch.dtype) -> torch.Tensor:
    """The float32 value of each of the 256 codes of an 8-bit torch dtype: decoding on the CPU is
    one gather (torch's own conversion loop is slower).  NaNs are quiet: torch converts the fnuz
    formats' NaN to a signalling one, which any arithmetic (the compiled decode's division by n)
    would quiet, so the eager and the compiled decodes give the same bits."""
    v = torch.arange(256, dtype=torch.uint8).view(dtype).to(torch.float32)
    bits = v.view(torch.int32)
    return torch.where(torch.isnan(v), bits | 0x400000, bits).view(torch.float32)


# The fields of each 8-bit format's decode loop, read from a module global: torch.compile makes
# the integers of a global constants of the loop (those of a closure or an argument: symbols).
_FLOAT8_FIELDS: dict = {}


def _float8_mean(codes: list, n: torch.Tensor, out: torch.Tensor, key: str) -> torch.Tensor:
    """(Σ_i value(codes_i)) / n into ``out``: the 8-bit codes' float32 values computed from their
    fields — sign, exponent e and mantissa f of M bits: (1.f)·2^(e − bias) as a bit pattern,
    f·2^(1 − bias − M) for e = 0, and the format's NaN and infinity codes — the values of
    :func:`_byte_values` bit for bit (checked on all 256 codes before the loop is used), 2× faster
    than gathering them from the table."""
    m, bias, kind, nan_pos, nan_neg = _FLOAT8_FIELDS[key]
    acc = None
    for c in codes:
        c = c.to(torch.int32)
        sign = (c >> 7) << 31
        e, f = (c >> m) & ((1 << (7 - m)) - 1), c & ((1 << m) - 1)
        normal = (sign | ((e + (127 - bias)) << 23) | (f << (23 - m))).view(torch.float32)
        sub = f.to(torch.float32) * (2.0 ** (1 - bias - m))
        v = torch.where(e == 0, torch.where(sign != 0, -sub, sub), normal)
        if kind == "ieee":  # the top exponent: ±inf (f = 0) and quiet NaNs
            special = (sign | 0x7F800000 | (f << (23 - m)) | ((f != 0).to(torch.int32) << 22)).view(torch.float32)
            v = torch.where(e == (1 << (7 - m)) - 1, special, v)
        elif kind == "fn":  # all ones but the sign: NaN
            nan = torch.where(sign != 0, nan_neg, nan_pos).to(torch.int32).view(torch.float32)
            v = torch.where((c & 0x7F) == 0x7F, nan, v)
        else:  # fnuz: the negative zero's code is NaN (its bits built from c = 0x80: a constant's
            # bits would be folded into the compiler's canonical NaN)
            v = torch.where(c == 0x80, ((c >> 7) * nan_pos).view(torch.float32), v)
        acc = v if acc is None else acc + v
    return out.copy_(acc / n)


@functools.lru_cache(maxsize=None)
def _float8_loop(dtype: torch.dtype):
    """:func:`_float8_mean` for torch's 8-bit float ``dtype``, a code object of its own (torch.compile
    keeps at most 8 compilations per code object), or None where its values are not those of
    :func:`_byte_values` on every code (then the table's gather runs)."""
    table, name = _byte_values(dtype), str(dtype)
    m = int(name.split("m")[-1][0]) if "_e" in name else 0  # float8_e4m3fn: 3
    bias = 1 - round(math.log2(torch.finfo(dtype).smallest_normal))
    kind = "fnuz" if torch.isnan(table[0x80]) else "ieee" if torch.isinf(table).any() else "fn"
    bits = table.view(torch.int32)
    nans = (0x80, 0x80) if kind == "fnuz" else (0x7F, 0xFF)
    key = name
    _FLOAT8_FIELDS[key] = (m, bias, kind, int(bits[nans[0]]), int(bits[nans[1]]))

    def float8_mean(codes, n, out):
        return _float8_mean(codes, n, out, key)

    loop = compiled.own_code(float8_mean)
    every = torch.arange(256, dtype=torch.uint8)
    got = loop([every], _ONE, torch.empty(256))
    return loop if torch.equal(got.view(torch.int32), (table / _ONE).view(torch.int32)) else None


def _codes_mean(dtype: torch.dtype, codes: list, n: torch.Tensor, out: torch.Tensor):
    """(Σ_i value(codes_i)) / n of 8-bit ``dtype`` codes in one compiled loop — the values computed
    (:func:`_float8_loop`), else gathered from :func:`_byte_values` — or None without a compiler."""
    loop = _float8_loop(dtype)
    if loop is not None and (r := compiled.call(loop, codes, n, out)) is not None:
        return r
    return compiled.call(compiled.table_mean, _byte_values(dtype), codes, n, out)


@functools.lru_cache(maxsize=None)
def _fp4_table() -> torch.Tensor:
    """The fp4 (e2m1) code of every float32 whose top 16 bits are i, with bit 0 of i also set when
    any of the low 16 bits is (the sticky bit): every fp4 rounding decision lies at bit 21 or above,
    so values that share i round alike; the codes are those of the binade formula, bit for bit."""
    i = torch.arange(1 << 16, dtype=torch.int32)
    x = (i << 16).view(torch.float32)
    a = x.abs()
    m = torch.where(a < 2, torch.round(a * 2), torch.where(a < 4, torch.round(a).add_(2), torch.round(a * 0.5).add_(4)))
    return m.clamp_(max=7).nan_to_num_(0).to(torch.uint8) | (torch.signbit(x).to(torch.uint8) << 3)


def _fp4_codes(t: torch.Tensor) -> torch.Tensor:
    """fp4 codes (one per byte) of float32 ``t`` rounded to nearest, ties to even: a gather from
    :func:`_fp4_table` indexed by the top 16 bits and the sticky bit of the low 16."""
    v = t.reshape(-1).view(torch.int32)
    idx = torch.bitwise_right_shift(v, 16, out=scratch(v.numel(), torch.int32)).bitwise_and_(0xFFFF)
    idx.bitwise_or_(torch.bitwise_and(v, 0xFFFF, out=scratch(v.numel(), torch.int32, 1)).ne_(0))  # stays int32
    return _fp4_table().index_select(0, idx)


def _int_index(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes as an int32 index for a gather, in a reused buffer (see :func:`scratch`)."""
    return scratch(codes.numel(), torch.int32).copy_(codes)


@register("cast")
class Cast(MultiTensor, Compressor):
    def __init__(self, format="fp8", rounding: str = "nearest", scaling: str | None = None, block: int = 32,
                 saturate: bool = False):
        self.fmt = get_format(format)
        self.format = self.fmt.label
        self.rounding = rounding
        self.scaling = scaling
        self.block = block
        self.saturate = saturate
        bits = self.fmt.code_bits + (8 / block if scaling == "block" else 0)  # an E8M0 exponent per block
        self.traits = replace(self.traits, unbiased=rounding == "stochastic", elementwise=scaling is None, bits=bits)
        rule = "fit" if rounding == "stochastic" else "ocp"  # no clipping keeps stochastic unbiased
        self._scaled = ScaledFormat(self.fmt, scaling, block, rule) if scaling else None
        self._native = _NATIVE.get(self.fmt.label) if isinstance(self.fmt, FloatFormat) else None
        if self._native is not None and get_format(self.fmt.label) != self.fmt:
            self._native = None
        self._overflow = self._nan_code = self._pairs = None
        # the fused kernels: 4- and 8-bit float codes, nearest or stochastic rounding ("zero" runs as torch code)
        self._coded = (isinstance(self.fmt, FloatFormat) and self.fmt.code_bits in (4, 8)
                       and kernels.has_kernels(self.fmt))
        self._fusable = self._scaled is None and self.rounding in _FUSED_ROUNDINGS and self._coded
        self._block_fusable = scaling == "block" and self.rounding in _FUSED_ROUNDINGS and kernels.has_kernels(self.fmt)
        if self._native is not None and not self.fmt.has_inf and self.fmt.has_nan:
            # the largest |x| that rounds to a finite value: the midpoint past max, if it rounds down
            mid = float(torch.tensor(self.fmt.max + 2.0 ** (math.floor(math.log2(self.fmt.max)) - self.fmt.man_bits) / 2))
            finite = bool(torch.isfinite(quantize(torch.tensor([mid]), self.fmt, "nearest")).all())
            self._overflow = mid if finite else float(torch.nextafter(torch.tensor(mid), torch.tensor(0.0)))
            self._nan_code = int(torch.tensor([float("nan")]).to(self._native).view(torch.uint8)) & 0x7F


    def _codes(self, q: torch.Tensor) -> torch.Tensor:
        if self._native is not None:
            return q.reshape(-1).to(self._native).view(torch.uint8)
        if isinstance(self.fmt, FloatFormat):
            c = float_codes(q, self.fmt, quantized=True, nan_ok=True)
        else:
            c = int_codes(q, self.fmt, quantized=True)
        return pack(c, self.fmt.code_bits)

    def _direct_codes(self, t: torch.Tensor, generator=None) -> torch.Tensor | None:
        """The codes of round-to-nearest on the CPU in a few passes, or None where this does not
        apply (stochastic rounding onto torch's 8-bit formats: one loop from the values to the
        codes, :func:`lowbit.quantize.stochastic_codes`): torch's own conversion for native formats (it saturates float8_e4m3fn, so values
        that round past the largest finite one are set to NaN unless ``saturate``), and the
        binades of fp4 (e2m1) for MX fp4.  Bit-exact with :func:`lowbit.quantize` (tested)."""
        if t.device.type != "cpu":
            return None
        if self.rounding == "stochastic" and self._native is not None and torch.finfo(self._native).bits == 8:
            return stochastic_codes(t, self.fmt, self._native, saturate=self.saturate, generator=generator)
        if self.rounding != "nearest":
            return None
        if self._native is not None:
            c = t.to(self._native).view(torch.uint8)
            if self.fmt.has_inf or self.saturate or self._overflow is None:
                return c
            lo, hi = torch.aminmax(t)  # one fast pass; the fix-up below only where something overflows
            if -self._overflow <= float(lo) and float(hi) <= self._overflow:
                return c
            over = (t > self._overflow) | (t < -self._overflow)  # inf too; NaN stays NaN
            return torch.where(over, c | self._nan_code, c)
        if self.fmt == _FP4 and t.dtype == torch.float32:
            flat = t.reshape(-1)
            if compiled.wanted(flat) and flat.numel() % 2 == 0:
                codes = compiled.call(compiled.fp4_pack, flat, _fp4_table())
                if codes is not None:
                    return codes
            return pack(_fp4_codes(t), 4)
        return None

    def _values(self, codes: torch.Tensor, n: int, finite=None, out=None) -> torch.Tensor:
        """The n decoded values (NaN everywhere when ``finite`` says the input was not), written
        into ``out`` (flat, contiguous float32) where that saves a copy."""
        if out is not None and not (out.is_contiguous() and out.dtype == torch.float32):
            out = None
        if k := kernels.fused_codecs(codes, when=self._coded):
            return k.cast_decode(codes, self.fmt, n, finite, out=out)
        if finite is not None and finite.device.type == "cpu":  # read on the host: free here
            if not bool(finite.all()):
                return torch.full((n,), float("nan")) if out is None else out.fill_(float("nan"))
            finite = None
        v = self._native_or_table(codes, n, out)
        if finite is not None:
            v = torch.where(finite.bool(), v, torch.full_like(v, float("nan")))
        return v

    def _native_or_table(self, codes: torch.Tensor, n: int, out=None) -> torch.Tensor:
        """Codes → values: on the CPU one gather from a table (8-bit: the 256 values; fp4: each
        byte's two values), into ``out`` when given; else the native conversion or the format."""
        flat = None if out is None else out.reshape(-1)
        cpu = codes.device.type == "cpu"
        if self._native is not None and cpu and torch.finfo(self._native).bits == 8:
            if compiled.wanted(codes):  # one compiled gather, 10× faster than index_select
                into_ = torch.empty(n) if flat is None else flat
                r = _codes_mean(self._native, [codes.reshape(-1)[:n]], _ONE, into_)
                if r is not None:
                    return r
            return torch.index_select(_byte_values(self._native), 0, _int_index(codes.reshape(-1)[:n]), out=flat)
        if self._native is not None:
            v = codes.reshape(-1).view(self._native)[:n]
            return v.to(torch.float32) if flat is None else flat.copy_(v)  # converted in the copy
        if self.fmt.code_bits == 4 and cpu:
            if self._pairs is None:  # each byte's two values as one 8-byte word: a 1-D gather, 4× a (256, 2) one
                pairs = decode(torch.arange(256, dtype=torch.uint8), self.fmt, (512,)).reshape(256, 2)
                self._pairs = pairs.contiguous().view(torch.int64).reshape(-1)
            idx = _int_index(codes.reshape(-1))
            if flat is not None and n == 2 * idx.numel() and flat.storage_offset() % 2 == 0:
                torch.index_select(self._pairs, 0, idx, out=flat.view(torch.int64))
                return flat
            return self._pairs.index_select(0, idx).view(torch.float32)[:n]
        return decode(codes, self.fmt, (n,))

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        t = tensor.detach().reshape(-1).to(torch.float32)
        if k := kernels.fused_codecs(t, when=self._fusable):
            codes, finite = k.cast_encode(t, self.fmt, self.rounding, self.saturate, generator)
            payload = {"codes": codes} if self.fmt.has_nan else {"codes": codes, "finite": finite}
            return Packet(payload, tuple(tensor.shape), tensor.dtype)
        if (k := kernels.fused_codecs(t, when=self._block_fusable)) and k.block_fusable(self.fmt, self.block):
            codes, scales, finite = k.cast_block_encode(t, self.fmt, self.rounding, self.block, self._scaled.rule,
                                                      generator)
            return Packet({"codes": codes, "scales": scales, "finite": finite}, tuple(tensor.shape), tensor.dtype)
        if self._scaled is None:
            codes = self._direct_codes(t, generator)
            if codes is None:
                codes = self._codes(quantize(t, self.fmt, self.rounding, saturate=self.saturate, generator=generator))
            payload = {"codes": codes}
        else:
            scales, y = scaled_values(self._scaled, t, self.rounding, generator)
            payload = {"codes": self._codes(y), "scales": scales}
        if not self.fmt.has_nan or self._scaled is not None:  # one byte: was the input finite?
            payload["finite"] = all_finite(t).reshape(1).to(torch.uint8)
        return Packet(payload, tuple(tensor.shape), tensor.dtype)

    def roundtrip(self, tensor, *, state=None, generator=None):
        """The rounded tensor and the packet size, without packing codes (no scaling only)."""
        _check_tensor(tensor)
        t = tensor.detach().to(torch.float32)
        if self._scaled is not None or kernels.fused_codecs(t, when=self._fusable):
            return super().roundtrip(tensor, state=state, generator=generator)
        q = quantize(t, self.fmt, self.rounding, saturate=self.saturate, generator=generator)
        nbytes = self.fmt.nbytes(t.numel()) + (0 if self.fmt.has_nan else 1)
        if not self.fmt.has_nan:  # as decode does: NaN everywhere when the input was not finite
            q = torch.where(all_finite(t), q, torch.full_like(q, float("nan")))
        return q.to(tensor.dtype), nbytes

    def batchable(self, states=None) -> bool:
        return self._scaled is None

    def unit_roundtrip(self, u, generator=None):
        return self.roundtrip(u, generator=generator)[0]

    def unit_encode(self, u, generator=None):
        return self.encode(u, generator=generator).payload

    def unit_decode(self, payload, n, out=None):
        return into(self._values(payload["codes"], n, payload.get("finite"), out=out), out)

    def flat_mean(self, payloads, segments, out):
        """(1/n)·Σ_i decode(payload_i) into ``out`` in one compiled loop — CPU, n > 1, 8-bit native
        codes without finite flags (formats with NaN), or unscaled 4-bit codes whose inputs were
        all finite (their flags are on the host here) — or None (the caller decodes and adds)."""
        n = segments.total
        if (len(payloads) > 1 and self.fmt.code_bits == 4 and self._native is None and self._scaled is None
                and compiled.wanted(out) and out.is_contiguous() and not payloads[0]["codes"].is_cuda
                and all(p.keys() <= {"codes", "finite"} and bool(p.get("finite", _TRUE).all()) for p in payloads)):
            table = decode(torch.arange(256, dtype=torch.uint8), self.fmt, (512,)).reshape(1, 256, 2)
            loop = None
            if self.fmt == _FP4:  # the values computed, not gathered

                def loop(codes, index, j, k, o):
                    return None if (pairs := compiled.as_pairs(o)) is None else compiled.call(compiled.fp4_mean, codes, k, pairs)

            # one table for every tensor: the whole buffer as one segment
            return byte_rows_mean(payloads, "codes", lambda p: table, many.segments([n], "cpu"), out.reshape(-1), loop)
        if not (len(payloads) > 1 and self._native is not None and torch.finfo(self._native).bits == 8
                and all(p.keys() == {"codes"} for p in payloads) and out.is_contiguous() and compiled.wanted(out)):
            return None
        codes = [p["codes"].reshape(-1)[:n] for p in payloads]
        k = torch.tensor(float(len(payloads)))
        return _codes_mean(self._native, codes, k, out.reshape(-1))

    def graph_safe(self, flat, states=None) -> bool:
        return kernels.fused_codecs(flat, when=self._fusable) is not None

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        if not (k := kernels.fused_codecs(flat, when=self._fusable)):
            return super().flat_roundtrip(flat, tensors, segments, states=states, generator=generator, out=out)
        codes, finite = k.cast_encode(flat, self.fmt, self.rounding, self.saturate, generator)
        return k.cast_decode(codes, self.fmt, flat.numel(), finite, out=out)

    def wire_bytes(self, numel: int) -> int:
        if self._scaled is None:  # the codes, and a finite flag where the format has no NaN code
            return self.fmt.nbytes(numel) + (0 if self.fmt.has_nan else 1)
        if self.scaling == "block":  # codes of whole blocks, one E8M0 exponent per block, the flag
            blocks = -(-numel // self.block)
            return self.fmt.nbytes(blocks * self.block) + blocks + 1
        return self.fmt.nbytes(numel) + 4 + 1  # one float32 scale, the flag

    def decode(self, packet: Packet) -> torch.Tensor:
        n = packet.numel
        p = packet.payload
        if self._scaled is None:  # a non-finite input decodes to NaN everywhere
            v = self._values(p["codes"], n, p.get("finite"))
        elif (k := kernels.fused_codecs(p["codes"], when=self._block_fusable)) and k.block_fusable(self.fmt, self.block):
            v = k.cast_decode(p["codes"], self.fmt, n, p["finite"], scales=p["scales"], block=self.block)
        else:
            count = n if self.scaling == "tensor" else p["scales"].numel() * self.block
            v = self._scaled.unscale(self._values(p["codes"], count), p["scales"], (count,))[:n]
            v = torch.where(p["finite"].bool(), v, torch.full_like(v, float("nan")))
        return v.reshape(packet.shape).to(packet.dtype)
