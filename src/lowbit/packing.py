"""Codes and bit packing: the bytes that a quantized tensor really takes on the wire.

``pack(codes, w)`` stores non-negative integer codes of width ``w`` bits little-endian into a
uint8 tensor of ``ceil(n·w/8)`` bytes (fp4: two codes per byte, fp6: four per three bytes);
``unpack`` is its inverse.  ``float_codes``/``int_codes`` map representable values to codes;
``decode_lut`` is the 2^w-entry table that maps codes back to values.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .formats import FloatFormat, IntFormat, get_format
from .kernels import cpu
from .quantize import quantize, scaled_values
from .scaling import ScaledFormat

__all__ = ["encode", "decode", "Encoded", "pack", "unpack", "unpack_bytes", "six_bit_words", "float_codes", "int_codes", "decode_lut"]


def _group(w: int) -> tuple[int, int] | None:
    """(codes, bytes) per group whose bits fill whole bytes and fit an int64 word."""
    bits = math.lcm(w, 8)
    return (bits // w, bits // 8) if bits <= 63 or w == 32 else None


# BYTE_BITS[b, j]: bit j of byte b in pack's little-endian bit order (code 8i + j of a 1-bit pack)
BYTE_BITS = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).bool()


def pack(codes: torch.Tensor, w: int) -> torch.Tensor:
    """Pack integer codes in [0, 2^w) into a flat uint8 tensor of ceil(n·w/8) bytes."""
    if not 1 <= w <= 32:
        raise ValueError(f"code width must be 1..32 bits, got {w}")
    n = codes.numel()
    nbytes = (n * w + 7) // 8
    if w == 8:
        return codes.reshape(-1).to(torch.uint8)
    if w == 1 and codes.device.type == "cpu":  # numpy's packbits: one C loop, the same bit order
        bits = codes.reshape(-1).to(torch.bool).numpy()
        return torch.from_numpy(np.packbits(bits, bitorder="little"))
    if w == 4 and codes.device.type == "cpu" and sys.byteorder == "little":
        # two codes as one little-endian int16 c0 + 256·c1: its low byte after w | w >> 4 is c0 | c1 << 4
        c = codes.reshape(-1).to(torch.uint8)
        if n % 2:
            c = torch.nn.functional.pad(c, (0, 1))
        if c.storage_offset() % 8:  # a view that starts mid-word
            c = c.clone()
        pair = c.view(torch.int16)
        if cpu.wanted(c):  # whole int64 words of eight codes into int32, in one loop; the rest eagerly
            main = c.numel() - c.numel() % 8
            out = torch.empty(c.numel() // 2, dtype=torch.uint8)
            if cpu.call(cpu.nibble_words_into, c[:main].view(torch.int64), out[: main // 2].view(torch.int32)) is not None:
                out[main // 2 :] = cpu.nibble_bytes(pair[main // 2 :])
                return out
        return cpu.nibble_bytes(pair)
    if w in (2, 6) and codes.device.type == "cpu" and sys.byteorder == "little" and n >= 4:
        # four codes, one per byte, as one little-endian int32, packed by shifts and masks of whole
        # words into w/2 bytes; the last n mod 4 codes (whole bytes of their own) by the paths below
        c = codes.reshape(-1).to(torch.uint8)
        main = n - n % 4
        if c.storage_offset() % 4:
            c = c.clone()
        words = c[:main].view(torch.int32)
        out = torch.empty(nbytes, dtype=torch.uint8)
        body = out[: main * w // 8] if w == 2 else out[: main * w // 8].view(-1, 3)  # a word's bytes per row
        done = 0  # words packed by a compiled loop
        if cpu.wanted(c) and w == 2:
            done = main // 4 if cpu.call(cpu.PACKED_INTO[w], words, body) is not None else 0
        elif cpu.wanted(c):  # 6 bits: whole groups of four words as three int32 (12 bytes)
            g = main // 16
            groups = out[: 12 * g].view(torch.int32).view(g, 3)
            done = 4 * g if cpu.call(cpu.six_bit_groups_into, words[: 4 * g].view(g, 4), groups) is not None else 0
        if done < words.numel():
            cpu.packed_into(words[done:], body[done:], w)
        if main < n:
            out[main * w // 8 :] = pack(c[main:], w)
        return out
    if w in (1, 2, 4):  # whole codes per byte: uint8 arithmetic, no widening, one OR per slot
        per = 8 // w
        c = codes.reshape(-1).to(torch.uint8)
        pad = (-n) % per
        if pad:
            c = torch.nn.functional.pad(c, (0, pad))
        c = c.view(-1, per)
        out = c[:, 0].clone()
        for i in range(1, per):
            out |= c[:, i] << (w * i)
        return out
    g = _group(w)
    if g is not None and g[0] * w <= 64 and codes.device.type == "cpu" and sys.byteorder == "little":
        # a group of codes in the low bytes of one little-endian int32 (3, 6 bits) or int64 (5, 7, …
        # bits) word, one OR per slot
        per, nb = g
        dt, size = (torch.int32, 4) if per * w <= 32 else (torch.int64, 8)
        c = codes.reshape(-1)
        pad = (-n) % per
        if pad:
            c = torch.nn.functional.pad(c, (0, pad))
        c = c.view(-1, per)
        word = torch.empty(c.shape[0], dtype=dt).copy_(c[:, 0])
        for i in range(1, per):
            word |= c[:, i].to(dt) << (w * i)
        return word.view(torch.uint8).view(-1, size)[:, :nb].reshape(-1)[:nbytes]
    c = codes.reshape(-1).to(torch.int64)
    if g is None:  # general width: expand to bits
        bits = (c[:, None] >> torch.arange(w, device=c.device)) & 1
        bits = torch.nn.functional.pad(bits.reshape(-1), (0, nbytes * 8 - n * w))
        weights = 1 << torch.arange(8, device=c.device)
        return (bits.reshape(-1, 8) * weights).sum(1).to(torch.uint8)
    per, nb = g
    pad = (-n) % per
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.reshape(-1, per) << (torch.arange(per, device=c.device) * w)
    words = c.sum(1)
    out = (words[:, None] >> (torch.arange(nb, device=c.device) * 8)) & 0xFF
    return out.reshape(-1)[:nbytes].to(torch.uint8)


def unpack(data: torch.Tensor, w: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` codes (int64) from packed bytes."""
    if data.dtype != torch.uint8:
        raise TypeError(f"packed codes must be uint8, got {data.dtype}")
    need = (n * w + 7) // 8
    if data.numel() < need:
        raise ValueError(f"{n} codes of {w} bits need {need} bytes, got {data.numel()}")
    if w in (1, 2, 4, 8):
        return unpack_bytes(data, w, n).to(torch.int64)
    b = data.reshape(-1)[:need].to(torch.int64)
    g = _group(w)
    if g is None:
        bits = ((b[:, None] >> torch.arange(8, device=b.device)) & 1).reshape(-1)[: n * w]
        return (bits.reshape(n, w) << torch.arange(w, device=b.device)).sum(1)
    per, nb = g
    pad = (-b.numel()) % nb
    if pad:
        b = torch.nn.functional.pad(b, (0, pad))
    words = (b.reshape(-1, nb) << (torch.arange(nb, device=b.device) * 8)).sum(1)
    c = (words[:, None] >> (torch.arange(per, device=b.device) * w)) & ((1 << w) - 1)
    return c.reshape(-1)[:n]


def unpack_bytes(data: torch.Tensor, w: int, n: int) -> torch.Tensor:
    """:func:`unpack` for widths 1, 2, 4 and 8, as uint8 codes (no widening)."""
    need = (n * w + 7) // 8
    data = data.reshape(-1)[:need]
    if w == 8:
        return data[:n]
    if w == 1 and data.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(data.numpy(), count=n, bitorder="little"))
    per, mask = 8 // w, (1 << w) - 1
    out = torch.empty(need, per, dtype=torch.uint8, device=data.device)
    for i in range(per):
        torch.bitwise_and(data >> (w * i), mask, out=out[:, i])
    return out.reshape(-1)[:n]


def six_bit_words(data: torch.Tensor, n: int) -> torch.Tensor | None:
    """The little-endian 24-bit words (int32) of n packed 6-bit codes, four codes per word, the
    first in the low bits (the last group zero-padded); one compiled loop on large CPU buffers."""
    groups = (n + 3) // 4
    b = data.reshape(-1)[: 3 * groups]
    if b.numel() < 3 * groups:
        b = torch.nn.functional.pad(b, (0, 3 * groups - b.numel()))
    words = cpu.call(cpu.six_bit_words, b) if cpu.wanted(b) else None
    return words if words is not None else cpu.six_bit_words(b)


def unpack_sixes(data: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`unpack` for 6-bit codes, as uint8 codes: each 3 bytes, read as one little-endian
    24-bit word, hold four codes, the first in the low bits (no widening to int64)."""
    word = six_bit_words(data, n)
    groups = word.numel()
    out = torch.empty(groups, 4, dtype=torch.uint8, device=data.device)
    for k in range(4):
        torch.bitwise_and(word >> (6 * k), 63, out=out[:, k])
    return out.reshape(-1)[:n]


def float_codes(x: torch.Tensor, fmt: FloatFormat, *, quantized: bool = False, nan_ok: bool = False) -> torch.Tensor:
    """Codes (int64) of ``x`` rounded to nearest in ``fmt``: sign | exponent field | mantissa.

    ``quantized=True`` skips the rounding (x already holds representable values).  NaN in a format
    without a NaN code raises ValueError, unless ``nan_ok`` (then its code is unspecified and the
    caller carries the information, as the ``cast`` compressor does)."""
    q = (x if quantized else quantize(x, fmt)).reshape(-1).to(torch.float32)
    if q.device.type == "cpu" and _grid_scalable(fmt) and bool(torch.isfinite(q).all()):  # a free host read here
        return _grid_codes(q, fmt)
    b = q.view(torch.int32).to(torch.int64)
    sign = (b >> 31) & 1
    a = b & 0x7FFFFFFF
    m, ef = fmt.man_bits, fmt.exp_field_bits
    normal = a >= (127 + fmt.emin) << 23
    field = torch.where(normal, (a >> 23) - 127 + fmt.bias, torch.zeros_like(a))
    mant_n = (a & 0x7FFFFF) >> (23 - m)
    mant_s = torch.round(q.abs().double() * 2.0 ** (m - fmt.emin)).to(torch.int64)
    mant = torch.where(normal, mant_n, mant_s)
    isinf, isnan = torch.isinf(q), torch.isnan(q)
    top = (1 << fmt.exp_bits) - 1
    field = torch.where(isinf, torch.full_like(field, top), field)
    mant = torch.where(isinf, torch.zeros_like(mant), mant)
    # NaN-less formats with nan_ok: NaN entries keep whatever code they got (the caller flags them)
    if not (fmt.nan_style == "none" and nan_ok) and bool(isnan.any()):
        if fmt.nan_style == "none":
            raise ValueError(f"{fmt.label} has no NaN: cannot encode NaN values")
        if fmt.nan_style == "ieee":
            field = torch.where(isnan, torch.full_like(field, top), field)
            mant = torch.where(isnan, torch.full_like(mant, max(1, 1 << (m - 1))), mant)
        elif fmt.nan_style == "fn":
            field = torch.where(isnan, torch.full_like(field, top), field)
            mant = torch.where(isnan, torch.full_like(mant, (1 << m) - 1), mant)
        else:  # fnuz: the negative-zero code
            sign = torch.where(isnan, torch.ones_like(sign), sign)
            field = torch.where(isnan, torch.zeros_like(field), field)
            mant = torch.where(isnan, torch.zeros_like(mant), mant)
    return (sign << (ef + m)) | (field << m) | mant


def _grid_scalable(fmt: FloatFormat) -> bool:
    """Formats whose codes :func:`_grid_codes` computes: subnormals, the IEEE bias 1 − emin, a
    smallest normal binade at or above float32's, and a mantissa narrower than float32's."""
    return fmt.subnormals and fmt.emin == 1 - fmt.bias and fmt.emin >= -126 and fmt.man_bits < 23


def _grid_codes(q: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Codes (int64) of finite float32 values on ``fmt``'s grid, as the kernels compute them: scaled
    by 2^(−126 − emin) the format's smallest normal binade lands on float32's and its subnormals on
    float32's subnormals (exactly: every value is a multiple of 2^(emin − m)), so the top bits of
    the pattern, shifted right by 23 − m, are the exponent field and mantissa; then the sign bit."""
    m, ef = fmt.man_bits, fmt.exp_field_bits
    mag = (q.abs() * 2.0 ** (-126 - fmt.emin)).view(torch.int32) >> (23 - m)
    sign = (q.view(torch.int32) >> 31) & 1
    return (mag | (sign << (ef + m))).to(torch.int64)


def int_codes(x: torch.Tensor, fmt: IntFormat, *, quantized: bool = False) -> torch.Tensor:
    """Two's-complement codes of ``x`` rounded to nearest integers of ``fmt`` (NaN is an error,
    unless ``quantized``: then the caller has dealt with it)."""
    q = (x if quantized else quantize(x, fmt)).reshape(-1)
    if not quantized and bool(torch.isnan(q).any()):
        raise ValueError(f"{fmt.label} has no NaN: cannot encode NaN values")
    return torch.nan_to_num(q, nan=0.0).to(torch.int64) & ((1 << fmt.code_bits) - 1)


@functools.lru_cache(maxsize=64)
def decode_lut(fmt: FloatFormat, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Value of every code of ``fmt`` (2^code_bits entries; formats of at most 16 bits)."""
    if fmt.code_bits > 16:
        raise ValueError(f"{fmt.label}: {fmt.code_bits}-bit codes are decoded directly, not by table")
    return code_values(torch.arange(1 << fmt.code_bits, dtype=torch.int64), fmt).to(dtype=dtype, device=device)


def code_values(c: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """float64 value of each int64 code ``c`` of ``fmt``."""
    w, m, ef = fmt.code_bits, fmt.man_bits, fmt.exp_field_bits
    sign = (c >> (ef + m)) & 1
    field = (c >> m) & ((1 << ef) - 1)
    mant = c & ((1 << m) - 1)
    mag = torch.where(
        field == 0,
        mant.double() * 2.0 ** (fmt.emin - m),
        (1 + mant.double() / 2**m) * torch.pow(2.0, (field - fmt.bias).double()),
    )
    if not fmt.subnormals:
        mag = torch.where((field == 0) & (mant != 0), torch.full_like(mag, float("nan")), mag)
    top = (1 << fmt.exp_bits) - 1
    if fmt.nan_style == "ieee":
        special = field == top
        mag = torch.where(special & (mant == 0), torch.full_like(mag, float("inf")), mag)
        mag = torch.where(special & (mant != 0), torch.full_like(mag, float("nan")), mag)
    elif fmt.nan_style == "fn":
        mag = torch.where((field == top) & (mant == (1 << m) - 1), torch.full_like(mag, float("nan")), mag)
    val = torch.where(sign == 1, -mag, mag)
    if fmt.nan_style == "fnuz":
        val = torch.where(c == (1 << (w - 1)), torch.full_like(val, float("nan")), val)
    return val


@dataclass
class Encoded:
    """Packed codes plus their scales: what a scaled tensor takes on the wire."""

    codes: torch.Tensor  # uint8, packed element codes
    scales: torch.Tensor  # float32 (tensor scaling) or uint8 E8M0 exponents (block scaling)
    shape: tuple

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + self.scales.numel() * self.scales.element_size()


def encode(x: torch.Tensor, fmt, rounding: str = "nearest", *, generator=None):
    """The bytes of ``x`` in ``fmt`` (a name, a FloatFormat or IntFormat, or a ScaledFormat).

    An element format takes values it represents (quantize first) and gives uint8 packed codes,
    ``code_bits`` each, little-endian; NaN is an error in a format without a NaN code.  A
    ScaledFormat rounds ``x`` here (``rounding``, ``generator``) and gives an :class:`Encoded`:
    the packed codes of x / scale and the scales."""
    if isinstance(fmt, ScaledFormat):
        scales, y = scaled_values(fmt, x, rounding, generator)
        return Encoded(encode(y.reshape(-1), fmt.fmt), scales, tuple(x.shape))
    fmt = get_format(fmt)
    if isinstance(fmt, IntFormat):
        return pack(int_codes(x, fmt), fmt.code_bits)
    return pack(float_codes(x, fmt), fmt.code_bits)


def decode(codes, fmt, shape=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The inverse of :func:`encode`: values of ``shape`` from packed codes, or from an
    :class:`Encoded` of a ScaledFormat (its own shape)."""
    if isinstance(fmt, ScaledFormat):
        n = math.prod(codes.shape)
        count = n if fmt.scaling == "tensor" else codes.scales.numel() * fmt.block
        return fmt.unscale(decode(codes.codes, fmt.fmt, (count,), dtype), codes.scales, codes.shape)
    fmt = get_format(fmt)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    c = unpack(codes, fmt.code_bits, math.prod(shape))
    if isinstance(fmt, IntFormat):
        c = c.to(torch.int32)
        b = fmt.bits_
        return torch.where(c >= 2 ** (b - 1), c - 2**b, c).to(dtype).reshape(shape)  # two's complement
    if fmt.code_bits <= 16:
        return decode_lut(fmt, codes.device, dtype)[c].reshape(shape)
    return code_values(c, fmt).to(dtype).reshape(shape)
