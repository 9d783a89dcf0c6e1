"""Fused Triton kernels for the compressors' encode and decode on CUDA float32 tensors.

Each kernel reads its input once and writes its output once:

* ``cast_encode``: rounding (the quantize kernel's ``_round_bits``) and the format's codes in one
  pass, 8-bit codes one per byte, 4-bit codes two per byte; ``cast_decode``: codes → values by
  arithmetic on the code's fields (no table gathers).
* ``natural_encode`` / ``natural_decode``: stochastic rounding to a power of two, the exponent byte
  and the sign bit packed eight to a byte.
* ``sign_encode`` / ``sign_decode``: sign bits packed eight to a byte with per-block partial sums of
  |g| (summed in a fixed order: deterministic), and the scaled decode.
* ``int8_encode`` / ``int8_decode``: IntSGD's Int(α·g) into int8, saturating at ±lim.

Stochastic rounding draws from Philox-4x32 (``PHILOX_ROUNDS`` rounds, seeded from the caller's
generator); its probabilities are exact to 2^−23 (float32 mantissa bits; IntSGD's uniform u is a
multiple of 2^−23).  Per-tensor quantities of a flat buffer of many tensors (scales, α) are read
through its segment index (``SEG = TABLE``), so no per-coordinate copy of them is made.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FloatFormat
from .quantize_triton import _constants, _grid_count

BLOCK = 4096
WARPS = 8
# Philox-4x32 with 7 rounds: Salmon et al. ("Parallel random numbers: as easy as 1, 2, 3", SC'11)
# find 7 rounds free of BigCrush failures (10, cuRAND's choice, adds a safety margin); the
# stochastic kernels are compute-bound and 7 rounds make them ~15% faster (BENCHMARKS.md).
PHILOX_ROUNDS = 7


VALUE, POINTER, TABLE = 0, 1, 2  # how a kernel gets a per-tensor quantity (the SEG argument)


@triton.jit
def _segment_value(ptr, seg_ptr, o, n, SEG: tl.constexpr):
    """A per-tensor quantity at coordinates ``o``: ``ptr`` itself (SEG = VALUE), ``*ptr``
    (POINTER), or ``ptr[seg[o]]`` (TABLE: one value per segment of a flat buffer of many
    tensors, ``seg_ptr`` holding each coordinate's segment)."""
    if SEG == 2:
        return tl.load(ptr + tl.load(seg_ptr + o, mask=o < n, other=0))
    elif SEG == 1:
        return tl.load(ptr)
    else:
        return ptr


@triton.jit
def _round_code(b, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr, LOW_EXP: tl.constexpr,
                SUB_SHIFT: tl.constexpr, MAX_BITS: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                M: tl.constexpr, EF: tl.constexpr, BIAS: tl.constexpr, OVER_CODE: tl.constexpr,
                INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr):
    """The format's code of float32 bits ``b`` rounded as the quantize kernel's ``_round_bits``
    does, computed on codes directly: in the normal range the rounded float32 pattern shifted down
    is the code plus a constant; below it the integer count k of steps 2^LOW_EXP is the code
    (shifted by SUB_SHIFT where the format has no subnormals)."""
    a = b & 0x7FFFFFFF
    e = a >> 23
    if MODE == 0:
        res = (a + ((1 << (S - 1)) - 1) + ((a >> S) & 1)) & ~((1 << S) - 1)
    else:
        res = (a + (rnd & ((1 << S) - 1))) & ~((1 << S) - 1)
    mag = (res >> S) - ((127 - BIAS) << M)
    if LOW:
        mag = tl.where(e < EMIN_FIELD, _grid_count(a, e, rnd, LOW_EXP, MODE) << SUB_SHIFT, mag)
    mag = tl.where(res > MAX_BITS, OVER_CODE, mag)
    mag = tl.where(a >= 0x7F800000, tl.where(a == 0x7F800000, INF_CODE, NAN_CODE), mag)
    sign = (b >> 31) & 1
    if FNUZ:
        sign = tl.where(mag == 0, 0, sign)
    return mag | (sign << (EF + M))


@triton.jit
def _cast_encode_kernel(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                        LOW: tl.constexpr, LOW_EXP: tl.constexpr, SUB_SHIFT: tl.constexpr, MAX_BITS: tl.constexpr,
                        MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr,
                        BIAS: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr,
                        FLAG: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """8-bit codes one per byte; 4-bit codes two per byte (neighbouring codes paired in registers)."""
    Q: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, Q)
    if MODE == 1:
        r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + offs).to(tl.int32), ROUNDS)
        r0 = r0.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        r1 = r1.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        r2 = r2.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        r3 = r3.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    finite = 1
    for j in tl.static_range(4):
        o = pid * BLOCK + j * Q + offs
        b = tl.load(x_ptr + o, mask=o < n, other=0).to(tl.int32, bitcast=True)
        if MODE == 1:
            rnd = r0 if j == 0 else (r1 if j == 1 else (r2 if j == 2 else r3))
        else:
            rnd = b
        if FLAG:  # only formats without a NaN code send whether the input was finite
            finite = finite & ((b & 0x7F800000) != 0x7F800000).to(tl.int32)
        c = _round_code(b, rnd, S, EMIN_FIELD, LOW, LOW_EXP, SUB_SHIFT, MAX_BITS, MODE, FNUZ, M, EF, BIAS,
                        OVER_CODE, INF_CODE, NAN_CODE)
        if WIDTH == 8:
            tl.store(out_ptr + o, c.to(tl.uint8), mask=o < n)
        else:
            lo, hi = tl.split(tl.reshape(c, (Q // 2, 2)))
            ob = (pid * BLOCK + j * Q) // 2 + tl.arange(0, Q // 2)
            tl.store(out_ptr + ob, (lo | (hi << 4)).to(tl.uint8), mask=ob < (n + 1) // 2)
    if FLAG:
        tl.store(fin_ptr + pid, tl.min(finite, axis=0).to(tl.uint8))


@triton.jit
def _value_bits(c, M: tl.constexpr, EF: tl.constexpr, BIAS: tl.constexpr, LOW_EXP: tl.constexpr,
                SPECIAL: tl.constexpr, TOP: tl.constexpr):
    """float32 bit pattern of codes: sign | exponent field | mantissa (arithmetic, no table)."""
    W: tl.constexpr = 1 + EF + M
    sign = (c >> (EF + M)) & 1
    field = (c >> M) & ((1 << EF) - 1)
    mant = c & ((1 << M) - 1)
    normal = ((field - BIAS + 127) << 23) | (mant << (23 - M))
    sub = (mant.to(tl.float32) * (2.0 ** LOW_EXP)).to(tl.int32, bitcast=True)
    bits = tl.where(field == 0, sub, normal) | (sign << 31)
    if SPECIAL == 1:  # ieee: top field is inf (mantissa 0) or NaN
        bits = tl.where(field == TOP, tl.where(mant == 0, (sign << 31) | 0x7F800000, 0x7FC00000), bits)
    elif SPECIAL == 2:  # fn: all-ones exponent and mantissa is NaN
        bits = tl.where((field == TOP) & (mant == (1 << M) - 1), 0x7FC00000, bits)
    elif SPECIAL == 3:  # fnuz: the negative-zero code is NaN
        bits = tl.where(c == (1 << (W - 1)), 0x7FC00000, bits)
    return bits


@triton.jit
def _cast_decode_kernel(c_ptr, fin_ptr, out_ptr, n, M: tl.constexpr, EF: tl.constexpr, BIAS: tl.constexpr,
                        LOW_EXP: tl.constexpr, SPECIAL: tl.constexpr, TOP: tl.constexpr, WIDTH: tl.constexpr,
                        FLAG: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    if WIDTH == 8:
        o = pid * BLOCK + tl.arange(0, BLOCK)
        c = tl.load(c_ptr + o, mask=o < n, other=0).to(tl.int32)
        v = _value_bits(c, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
    else:
        ob = pid * (BLOCK // 2) + tl.arange(0, BLOCK // 2)
        byte = tl.load(c_ptr + ob, mask=ob < (n + 1) // 2, other=0).to(tl.int32)
        lo = _value_bits(byte & 15, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
        hi = _value_bits(byte >> 4, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
        v = tl.reshape(tl.join(lo, hi), (BLOCK,))
        o = pid * BLOCK + tl.arange(0, BLOCK)
    if FLAG:  # the input held NaN/inf: everything decodes to NaN
        v = tl.where(tl.load(fin_ptr) == 0, 0x7FC00000, v)
    tl.store(out_ptr + o, v.to(tl.float32, bitcast=True), mask=o < n)


@triton.jit
def _natural_encode_kernel(x_ptr, exp_ptr, sign_ptr, n, seed_ptr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, Q)
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + offs).to(tl.int32), ROUNDS)
    for j in tl.static_range(4):
        r = r0 if j == 0 else (r1 if j == 1 else (r2 if j == 2 else r3))
        o = pid * BLOCK + j * Q + offs
        b = tl.load(x_ptr + o, mask=o < n, other=0).to(tl.int32, bitcast=True)
        a = b & 0x7FFFFFFF
        e = ((a + (r.to(tl.int32, bitcast=True) & 0x7FFFFF)) >> 23) & 0xFF  # up with probability frac
        e = tl.where(a >= 0x7F800000, 255, e)
        tl.store(exp_ptr + o, e.to(tl.uint8), mask=o < n)
        sb = tl.reshape((b >> 31) & 1, (Q // 8, 8))
        byte = tl.sum(sb << tl.arange(0, 8)[None, :], axis=1)
        ob = (pid * BLOCK + j * Q) // 8 + tl.arange(0, Q // 8)
        tl.store(sign_ptr + ob, byte.to(tl.uint8), mask=ob < (n + 7) // 8)


@triton.jit
def _natural_decode_kernel(exp_ptr, sign_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    e = tl.load(exp_ptr + o, mask=o < n, other=0).to(tl.int32)
    ob = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    byte = tl.load(sign_ptr + ob, mask=ob < (n + 7) // 8, other=0).to(tl.int32)
    s = tl.reshape((byte[:, None] >> tl.arange(0, 8)[None, :]) & 1, (BLOCK,))
    tl.store(out_ptr + o, ((s << 31) | (e << 23)).to(tl.float32, bitcast=True), mask=o < n)


@triton.jit
def _sign_encode_kernel(x_ptr, sign_ptr, part_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + o, mask=o < n, other=0.0)
    tl.store(part_ptr + pid, tl.sum(tl.abs(x), axis=0))
    s = tl.reshape(((x >= 0) & (o < n)).to(tl.int32), (BLOCK // 8, 8))
    byte = tl.sum(s << tl.arange(0, 8)[None, :], axis=1)
    ob = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    tl.store(sign_ptr + ob, byte.to(tl.uint8), mask=ob < (n + 7) // 8)


@triton.jit
def _sign_decode_kernel(sign_ptr, scale_ptr, seg_ptr, out_ptr, n, SEG: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    ob = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    byte = tl.load(sign_ptr + ob, mask=ob < (n + 7) // 8, other=0).to(tl.int32)
    s = tl.reshape((byte[:, None] >> tl.arange(0, 8)[None, :]) & 1, (BLOCK,))
    o = pid * BLOCK + tl.arange(0, BLOCK)
    scale = _segment_value(scale_ptr, seg_ptr, o, n, SEG)
    tl.store(out_ptr + o, (s.to(tl.float32) * 2 - 1) * scale, mask=o < n)


@triton.jit
def _int8_encode_kernel(x_ptr, out_ptr, fin_ptr, n, alpha, seg_ptr, lim, seed_ptr, STOCHASTIC: tl.constexpr,
                        SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Int(α·x) saturated at ±lim, with full-rate float adds only: t is clamped first (rounding
    is monotone, lim an integer), then M = 1.5·2^23 rounds |t| < 2^22 to the nearest integer,
    ties to even, in (t + M) − M, and the low byte of the pattern of k + M is k as an int8.
    SEG: ``alpha`` points at one α per segment, ``seg_ptr`` at each coordinate's segment."""
    Q: tl.constexpr = BLOCK // 4
    MAGIC: tl.constexpr = 12582912.0
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, Q)
    if STOCHASTIC:
        r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + offs).to(tl.int32), ROUNDS)
    finite = tl.full((Q,), 1, tl.int32)
    for j in tl.static_range(4):
        o = pid * BLOCK + j * Q + offs
        x = tl.load(x_ptr + o, mask=o < n, other=0.0)
        finite = finite & ((x.to(tl.int32, bitcast=True) & 0x7F800000) != 0x7F800000).to(tl.int32)
        t = tl.minimum(tl.maximum(x * _segment_value(alpha, seg_ptr, o, n, SEG), -lim), lim)
        k = (t + MAGIC) - MAGIC
        if STOCHASTIC:  # ⌊t⌋ + Bernoulli(t − ⌊t⌋), u a multiple of 2^-23 in [0, 1)
            r = r0 if j == 0 else (r1 if j == 1 else (r2 if j == 2 else r3))
            fl = k - tl.where(k > t, 1.0, 0.0)
            u = (((r.to(tl.int32, bitcast=True) >> 9) & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True) - 1.0
            k = fl + tl.where(u < t - fl, 1.0, 0.0)
        tl.store(out_ptr + o, (k + MAGIC).to(tl.int32, bitcast=True).to(tl.int8), mask=o < n)
    tl.store(fin_ptr + pid, tl.min(finite, axis=0).to(tl.uint8))


@triton.jit
def _int8_decode_kernel(c_ptr, fin_ptr, out_ptr, n, inv_alpha, seg_ptr, SEG: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    c = tl.load(c_ptr + o, mask=o < n, other=0).to(tl.float32)
    v = tl.where(tl.load(fin_ptr) == 0, float("nan"), c * _segment_value(inv_alpha, seg_ptr, o, n, SEG))
    tl.store(out_ptr + o, v, mask=o < n)


@triton.jit
def _sumsq_kernel(x_ptr, part_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + o, mask=o < n, other=0.0).to(tl.float64)
    tl.store(part_ptr + pid, tl.sum(x * x, axis=0))


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖₂ of a CUDA float32 tensor in one read: float64 squares summed per block, then the
    partial sums (a fixed order: deterministic).  Returns a 0-d float32 tensor."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    grid = max(1, triton.cdiv(n, BLOCK))
    part = torch.empty(grid, dtype=torch.float64, device=x.device)
    _sumsq_kernel[(grid,)](x, part, n, BLOCK=BLOCK, num_warps=WARPS)
    return part.sum().sqrt().to(torch.float32)


@triton.jit
def _uniform24(r):
    """A uniform float in [0, 1) from the top 24 bits of a random word (exact multiples of 2^-24)."""
    return ((r.to(tl.int32, bitcast=True) >> 8) & 0xFFFFFF).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _store_packed(out_ptr, c, base, nbytes, W: tl.constexpr, Q: tl.constexpr):
    """Store Q codes of W ∈ {2, 4, 6, 8} bits, little-endian, at byte offset base·W/8."""
    if W == 8:
        ob = base + tl.arange(0, Q)
        tl.store(out_ptr + ob, c.to(tl.uint8), mask=ob < nbytes)
    elif W == 6:
        q = tl.reshape(c, (Q // 4, 2, 2))
        a, b = tl.split(q)
        c0, c2 = tl.split(a)
        c1, c3 = tl.split(b)
        word = c0 | (c1 << 6) | (c2 << 12) | (c3 << 18)
        ob = (base // 4) * 3 + 3 * tl.arange(0, Q // 4)
        tl.store(out_ptr + ob, (word & 255).to(tl.uint8), mask=ob < nbytes)
        tl.store(out_ptr + ob + 1, ((word >> 8) & 255).to(tl.uint8), mask=ob + 1 < nbytes)
        tl.store(out_ptr + ob + 2, ((word >> 16) & 255).to(tl.uint8), mask=ob + 2 < nbytes)
    else:
        PER: tl.constexpr = 8 // W
        q = tl.reshape(c, (Q // PER, PER))
        byte = tl.sum(q << (tl.arange(0, PER) * W)[None, :], axis=1)
        ob = base // PER + tl.arange(0, Q // PER)
        tl.store(out_ptr + ob, byte.to(tl.uint8), mask=ob < nbytes)


@triton.jit
def _load_packed(in_ptr, base, nbytes, W: tl.constexpr, Q: tl.constexpr):
    """Inverse of _store_packed: Q codes (int32) from byte offset base·W/8."""
    if W == 8:
        ob = base + tl.arange(0, Q)
        return tl.load(in_ptr + ob, mask=ob < nbytes, other=0).to(tl.int32)
    elif W == 6:
        ob = (base // 4) * 3 + 3 * tl.arange(0, Q // 4)
        b0 = tl.load(in_ptr + ob, mask=ob < nbytes, other=0).to(tl.int32)
        b1 = tl.load(in_ptr + ob + 1, mask=ob + 1 < nbytes, other=0).to(tl.int32)
        b2 = tl.load(in_ptr + ob + 2, mask=ob + 2 < nbytes, other=0).to(tl.int32)
        word = b0 | (b1 << 8) | (b2 << 16)
        c0, c1, c2, c3 = word & 63, (word >> 6) & 63, (word >> 12) & 63, (word >> 18) & 63
        return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), (Q,))
    else:
        PER: tl.constexpr = 8 // W
        ob = base // PER + tl.arange(0, Q // PER)
        byte = tl.load(in_ptr + ob, mask=ob < nbytes, other=0).to(tl.int32)
        c = (byte[:, None] >> (tl.arange(0, PER) * W)[None, :]) & ((1 << W) - 1)
        return tl.reshape(c, (Q,))


@triton.jit
def _levels_encode_kernel(x_ptr, out_ptr, n, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, LBITS: tl.constexpr,
                          W: tl.constexpr, SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """QSGD and TernGrad: level = ⌊s·|x|/scale⌋ + Bernoulli(frac), code = sign << LBITS | level.
    ``inv_ptr``: the scale (POINTER), or a table of s/scale per segment (TABLE, 0 where the scale is
    0 or not finite)."""
    Q: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, Q)
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + offs).to(tl.int32), ROUNDS)
    if SEG == 1:
        scale = tl.load(inv_ptr)
        inv1 = tl.where(scale > 0, levels / scale, 0.0)
    for j in tl.static_range(4):
        r = r0 if j == 0 else (r1 if j == 1 else (r2 if j == 2 else r3))
        o = pid * BLOCK + j * Q + offs
        x = tl.load(x_ptr + o, mask=o < n, other=0.0)
        if SEG == 1:
            t = tl.abs(x) * inv1
        else:
            t = tl.abs(x) * _segment_value(inv_ptr, seg_ptr, o, n, SEG)
        fl = tl.floor(t)
        lev = fl + tl.where(_uniform24(r) < t - fl, 1.0, 0.0)
        lev = tl.minimum(tl.where(lev == lev, lev, 0.0), levels).to(tl.int32)  # NaN → 0 (the scale is NaN then)
        c = (((x < 0) & (lev > 0)).to(tl.int32) << LBITS) | lev
        c = tl.where(o < n, c, 0)
        _store_packed(out_ptr, c, pid * BLOCK + j * Q, nbytes, W, Q)


@triton.jit
def _levels_decode_kernel(in_ptr, out_ptr, n, nbytes, step_ptr, seg_ptr, levels, LBITS: tl.constexpr,
                          W: tl.constexpr, SEG: tl.constexpr, BLOCK: tl.constexpr):
    """value = level · scale/s with the sign; ``step_ptr``: the scale (POINTER), or a table of
    scale/s per segment (TABLE)."""
    pid = tl.program_id(0).to(tl.int64)
    c = _load_packed(in_ptr, pid * BLOCK, nbytes, W, BLOCK)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    lev = (c & ((1 << LBITS) - 1)).to(tl.float32)
    if SEG == 1:
        v = lev * (tl.load(step_ptr) / levels)
    else:
        v = lev * _segment_value(step_ptr, seg_ptr, o, n, SEG)
    v = tl.where(((c >> LBITS) & 1) == 1, -v, v)
    tl.store(out_ptr + o, v, mask=o < n)


def _output(n: int, device, out=None) -> torch.Tensor:
    """``out`` (a contiguous float32 vector of n values, written in place) or a new vector."""
    if out is None:
        return torch.empty(n, dtype=torch.float32, device=device)
    if out.dtype != torch.float32 or out.numel() != n or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of {n} elements")
    return out if out.dim() == 1 else out.view(-1)


def _table(values, seg, device):
    """(kernel argument, SEG mode) of a per-tensor quantity: a number (VALUE), a one-element tensor
    (POINTER), or a vector indexed by the coordinates' segments ``seg`` (TABLE)."""
    if seg is not None:
        return values.to(device=device, dtype=torch.float32), seg, TABLE
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.float32), values, POINTER
    return float(values), None, VALUE


def levels_encode(x: torch.Tensor, scale: torch.Tensor, levels: int, lbits: int, generator=None,
                  seg: torch.Tensor | None = None) -> torch.Tensor:
    """Codes of QSGD / TernGrad levels; ``scale``: one value, or one per segment with ``seg``."""
    x = x.contiguous().reshape(-1)
    n, w = x.numel(), 1 + lbits
    nbytes = (n * w + 7) // 8
    out = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    if seg is not None:  # NaN and 0 scales → 0
        scale = torch.where(scale > 0, float(levels) / scale, 0.0).to(torch.float32)
    inv, segp, mode = _table(scale, seg, x.device)
    _levels_encode_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, nbytes, inv, segp if segp is not None else inv,
                                                    float(levels), _seed(x, generator), LBITS=lbits, W=w, SEG=mode,
                                                    ROUNDS=PHILOX_ROUNDS, BLOCK=BLOCK, num_warps=WARPS)
    return out


def levels_decode(codes: torch.Tensor, scale: torch.Tensor, levels: int, lbits: int, n: int,
                  seg: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    out = _output(n, codes.device, out)
    step, segp, mode = _table(scale / float(levels) if seg is not None else scale, seg, codes.device)
    _levels_decode_kernel[(triton.cdiv(n, BLOCK),)](codes, out, n, codes.numel(), step,
                                                    segp if segp is not None else step, float(levels),
                                                    LBITS=lbits, W=1 + lbits,
                                                    SEG=mode, BLOCK=BLOCK, num_warps=WARPS)
    return out


def _seed(x: torch.Tensor, generator) -> torch.Tensor:
    gdev = generator.device if generator is not None else x.device
    return torch.randint(0, 2**31 - 1, (1,), device=gdev, generator=generator, dtype=torch.int64).to(x.device)


def cast_encode(x: torch.Tensor, fmt: FloatFormat, rounding: str, saturate: bool, generator=None):
    """(packed codes, one byte: was every input finite — None for formats with a NaN code)."""
    x = x.contiguous().reshape(-1)
    n, w = x.numel(), fmt.code_bits
    out = torch.empty((n * w + 7) // 8, dtype=torch.uint8, device=x.device)
    flag = not fmt.has_nan
    fin = torch.empty(triton.cdiv(n, BLOCK) if flag else 1, dtype=torch.uint8, device=x.device)
    top = (1 << fmt.exp_bits) - 1
    m = fmt.man_bits
    nan_code = {"ieee": (top << m) | (1 << max(m - 1, 0)), "fn": (top << m) | ((1 << m) - 1),
                "fnuz": 1 << (w - 1), "none": 0}[fmt.nan_style]
    k = _constants(fmt, rounding, saturate)
    if k["MODE"] == 2:
        raise ValueError("the fused cast encode rounds to nearest or stochastically")
    max_code = (k["MAX_BITS"] >> k["S"]) - ((127 - fmt.bias) << m)

    def code_of(bits):  # the code of a special result pattern: max, inf or NaN
        return {k["MAX_BITS"]: max_code, 0x7F800000: top << m}.get(bits, nan_code)

    seed = _seed(x, generator) if rounding == "stochastic" else x
    _cast_encode_kernel[(triton.cdiv(n, BLOCK),)](
        x, out, fin, n, seed, S=k["S"], EMIN_FIELD=k["EMIN_FIELD"], LOW=k["LOW"], LOW_EXP=k["LOW_EXP"],
        SUB_SHIFT=0 if fmt.subnormals else m, MAX_BITS=k["MAX_BITS"], MODE=k["MODE"], FNUZ=k["FNUZ"], M=m,
        EF=fmt.exp_field_bits, BIAS=fmt.bias, OVER_CODE=code_of(k["OVER_BITS"]), INF_CODE=code_of(k["INF_OUT"]),
        NAN_CODE=nan_code, FLAG=flag, WIDTH=w, ROUNDS=PHILOX_ROUNDS, BLOCK=BLOCK, num_warps=WARPS)
    return out, (fin.amin().reshape(1) if flag else None)


def cast_decode(codes: torch.Tensor, fmt: FloatFormat, n: int, finite=None, out=None) -> torch.Tensor:
    out = _output(n, codes.device, out)
    flag = finite if finite is not None else codes
    special = {"ieee": 1, "fn": 2, "fnuz": 3, "none": 0}[fmt.nan_style]
    m2 = fmt.man_bits if fmt.subnormals else 0
    _cast_decode_kernel[(triton.cdiv(n, BLOCK),)](
        codes, flag, out, n, M=fmt.man_bits, EF=fmt.exp_field_bits, BIAS=fmt.bias, LOW_EXP=fmt.emin - m2,
        SPECIAL=special, TOP=(1 << fmt.exp_bits) - 1, WIDTH=fmt.code_bits, FLAG=finite is not None, BLOCK=BLOCK,
        num_warps=WARPS)
    return out


def natural_encode(x: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous().reshape(-1)
    n = x.numel()
    e = torch.empty(n, dtype=torch.uint8, device=x.device)
    s = torch.empty((n + 7) // 8, dtype=torch.uint8, device=x.device)
    _natural_encode_kernel[(triton.cdiv(n, BLOCK),)](x, e, s, n, _seed(x, generator), ROUNDS=PHILOX_ROUNDS,
                                                     BLOCK=BLOCK, num_warps=WARPS)
    return e, s


def natural_decode(e: torch.Tensor, s: torch.Tensor, n: int, out=None) -> torch.Tensor:
    out = _output(n, e.device, out)
    _natural_decode_kernel[(triton.cdiv(n, BLOCK),)](e, s, out, n, BLOCK=BLOCK, num_warps=WARPS)
    return out


def sign_encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous().reshape(-1)
    n = x.numel()
    grid = triton.cdiv(n, BLOCK)
    s = torch.empty((n + 7) // 8, dtype=torch.uint8, device=x.device)
    part = torch.empty(grid, dtype=torch.float32, device=x.device)
    _sign_encode_kernel[(grid,)](x, s, part, n, BLOCK=BLOCK, num_warps=WARPS)
    return s, (part.sum() / max(1, n)).reshape(1)


def sign_decode(s: torch.Tensor, scale: torch.Tensor, n: int, seg=None, out=None) -> torch.Tensor:
    """±scale; ``scale``: one value, or one per segment with ``seg``."""
    out = _output(n, s.device, out)
    sc, segp, mode = _table(scale, seg, s.device)
    _sign_decode_kernel[(triton.cdiv(n, BLOCK),)](s, sc, segp if segp is not None else sc, out, n, SEG=mode,
                                                  BLOCK=BLOCK, num_warps=WARPS)
    return out


def int8_encode(x: torch.Tensor, alpha, lim: int, stochastic: bool, generator=None, seg=None):
    """(int8 integers of Int(α·x), one byte: was every input finite); ``alpha``: a number, or a
    vector of one α per segment with ``seg``."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    out = torch.empty(n, dtype=torch.int8, device=x.device)
    fin = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.uint8, device=x.device)
    seed = _seed(x, generator) if stochastic else x
    a, segp, mode = _table(alpha, seg, x.device)
    _int8_encode_kernel[(triton.cdiv(n, BLOCK),)](x, out, fin, n, a, segp if segp is not None else x, float(lim), seed,
                                                  STOCHASTIC=stochastic, SEG=mode, ROUNDS=PHILOX_ROUNDS, BLOCK=BLOCK,
                                                  num_warps=WARPS)
    return out, fin.amin().reshape(1)


def int8_decode(c: torch.Tensor, finite: torch.Tensor, alpha, seg=None, inv_alpha=None, out=None) -> torch.Tensor:
    """Int/α; with ``seg``, ``inv_alpha`` is the vector of 1/α per segment."""
    n = c.numel()
    out = _output(n, c.device, out)
    inv, segp, mode = _table(inv_alpha if seg is not None else 1.0 / float(alpha), seg, c.device)
    _int8_decode_kernel[(triton.cdiv(n, BLOCK),)](c, finite, out, n, inv, segp if segp is not None else c, SEG=mode,
                                                  BLOCK=BLOCK, num_warps=WARPS)
    return out
