"""Fused Triton kernels for the compressors' encode and decode on CUDA float32 tensors.

Each kernel reads its input once and writes its output once:

* ``cast_encode``: rounding and the format's codes in one pass (``_round_code``: one integer
  formula for every binade, bit for bit the quantize kernel's ``_round_bits``), 8-bit codes one
  per byte, 4-bit codes packed in registers; ``cast_block_encode``: the same under OCP MX block
  scaling (per-block E8M0 exponents from the block's max, in the same pass); ``cast_decode``:
  codes → values by arithmetic on the code's fields (no table gathers), times the block scales.
* ``natural_encode`` / ``natural_decode``: stochastic rounding to a power of two, the exponent byte
  and the sign bit packed eight to a byte.
* ``sign_encode`` / ``sign_decode``: sign bits packed eight to a byte with per-block partial sums of
  |g| (summed in a fixed order: deterministic), and the scaled decode.
* ``int8_encode`` / ``int8_decode``: IntSGD's Int(α·g) into int8, saturating at ±lim.

Stochastic rounding draws from Philox-4x32 (:mod:`.philox`, ``PHILOX_ROUNDS`` rounds — a constant;
an encoder's ``rounds=`` argument is for the benchmark's ablation — seeded from
the caller's generator; value j·Q + i of a program's block of 4·Q takes word j of counter pid·Q + i);
its probabilities are exact to 2^−23 (float32 mantissa bits; IntSGD's uniform u is a multiple of
2^−23).  The encoders index their block with 32-bit offsets from a 64-bit base (fewer integer
instructions in kernels bound by their integer work).  Per-tensor quantities of a flat buffer of many tensors (scales, α) are read
through its segment index (``SEG = TABLE``), so no per-coordinate copy of them is made.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FloatFormat
from .philox import PHILOX_ROUNDS, block_words
from .blocks import _load4, _load_block, _pick, _rem, _store
from .quantize_triton import _constants

BLOCK = 4096
WARPS = 8


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
def _round_code(b, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, SUB: tl.constexpr, MAX_CODE: tl.constexpr,
                MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr,
                INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, BOUNDED: tl.constexpr = False):
    """The format's code of float32 bits ``b`` rounded to nearest (ties to even, MODE 0) or
    stochastically (MODE 1: up when the dropped bits plus the random bits ``rnd`` carry), in one
    integer formula for the whole range: the 24-bit significand ``sig`` loses ``sh`` bits, S in the
    format's normal range and one more per binade below it (SUB: the subnormal grid; otherwise the
    grid of step 2^emin), and the rounded count k is the code, offset by the binade above the
    smallest normal one: code = (max(e − EMIN_FIELD, 0) << M) + k (a carry of k is the next binade).
    Formats with subnormals whose largest binade e_max satisfies e_max + 127 + S ≤ 254 (all but
    bfloat16) round to nearest on the float adder instead (``_nearest_code``, the same codes).  Bit
    for bit the quantize kernel's ``_round_bits``."""
    a = b & 0x7FFFFFFF
    if MODE == 0 and SUB and (MAX_CODE >> M) + EMIN_FIELD - 1 + S <= 254:
        mag = _nearest_code(b, S, EMIN_FIELD, BOUNDED)
    else:
        mag = _integer_code(a, rnd, S, EMIN_FIELD, SUB, MODE, M)
    mag = tl.where(mag > MAX_CODE, OVER_CODE, mag)  # also every inf or NaN input
    if (INF_CODE != OVER_CODE) and (NAN_CODE != OVER_CODE):
        mag = tl.where(a >= 0x7F800000, tl.where(a == 0x7F800000, INF_CODE, NAN_CODE), mag)
    elif INF_CODE != OVER_CODE:
        mag = tl.where(a == 0x7F800000, INF_CODE, mag)
    elif NAN_CODE != OVER_CODE:
        mag = tl.where(a > 0x7F800000, NAN_CODE, mag)
    sign = (b >> 31) & 1
    if FNUZ:
        sign = tl.where(mag == 0, 0, sign)
    return mag | (sign << (EF + M))


@triton.jit
def _nearest_code(b, S: tl.constexpr, EMIN_FIELD: tl.constexpr, BOUNDED: tl.constexpr):
    """Magnitude code of |x| (x's bits ``b``) rounded to nearest-even on a format with subnormals, by
    the float adder: the grid step of |x|'s binade is s = 2^(max(e, emin) − M), and
    r = (|x| + s·2^23) − s·2^23 is |x| rounded to a multiple of s (the sum's unit in the last place
    is s; ties to even).  Scaled by 2^(−126 − emin) the format's subnormals land on float32's
    (exactly: r is a multiple of 2^(emin − M), M ≤ 23), so the pattern's top bits are the code:
    code = bits(r·2^(−126 − emin)) >> (23 − M).  Where s·2^23 would overflow the exponent is clamped
    (|x| ≥ 2^(128 − S): r stays above the format's largest binade, the caller's condition, so it
    overflows as it should) unless BOUNDED (|x| < 2^104 or non-finite: the codes of non-finite
    inputs are then unspecified)."""
    eb = b & 0x7F800000
    if not BOUNDED:
        eb = tl.minimum(eb, (254 - S) << 23)
    c = tl.maximum(eb + (S << 23), (EMIN_FIELD + S) << 23).to(tl.float32, bitcast=True)
    r = (tl.abs(b.to(tl.float32, bitcast=True)) + c) - c
    down = tl.full([], (128 - EMIN_FIELD) << 23, tl.int32).to(tl.float32, bitcast=True)  # 2^(1 − EMIN_FIELD)
    return (r * down).to(tl.int32, bitcast=True) >> S


@triton.jit
def _integer_code(a, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, SUB: tl.constexpr, MODE: tl.constexpr,
                  M: tl.constexpr):
    """Magnitude code of |x| (bits ``a``) by the integer formula of ``_round_code``."""
    e = a >> 23
    # From the binade FLOOR down every value rounds to 0 (nearest: 25 dropped bits leave less than
    # half a step; stochastic: 54 leave a probability below the 2^-30 resolution), so e is raised
    # to FLOOR, which also keeps every shift below 32; where FLOOR < 1 (float32's own subnormals
    # still round to nonzero codes) the exponent is raised to 1 and the hidden bit dropped instead.
    FLOOR: tl.constexpr = EMIN_FIELD + (S if SUB else 23) - (25 if MODE == 0 else 54)
    if FLOOR >= 1:
        ef = tl.maximum(e, FLOOR)
        sig = (a & 0x7FFFFF) | 0x800000
    else:
        ef = tl.maximum(e, 1)
        sig = tl.where(e > 0, (a & 0x7FFFFF) | 0x800000, a)
    below = tl.maximum(EMIN_FIELD - ef, 0)  # binades below the format's normal range
    if SUB:
        sh = S + below
    else:
        sh = tl.where(below > 0, 23 + below, S)
    if MODE == 0:  # sh ≤ 25 here
        k = (sig + ((1 << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh
    else:  # sh ≤ 54 here
        extra = tl.maximum(sh - 30, 0)  # 30 random bits at most: sig + rnd stays below 2^31
        sh = tl.minimum(sh, 30)
        k = ((sig >> extra) + (rnd & ((1 << sh) - 1))) >> sh
    above = tl.maximum(ef - EMIN_FIELD, 0) << M
    if SUB:
        return above + k
    else:
        return tl.where(below > 0, k << M, above + k)


@triton.jit
def _random_words(seed_ptr, pid, Q: tl.constexpr, ROUNDS: tl.constexpr):
    """4·Q random 31-bit words for a program's 4·Q coordinates: Philox-4x32 at counters
    pid·Q … pid·Q + Q − 1, the four words of a counter going to four neighbouring coordinates."""
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + tl.arange(0, Q)).to(tl.int32), ROUNDS)
    r = tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (4 * Q,))
    return r.to(tl.int32, bitcast=True) & 0x7FFFFFFF


@triton.jit
def _cast_encode_block(x_ptr, out_ptr, seed_ptr, pid, rem, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                       SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                       M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr,
                       NAN_CODE: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                       FULL: tl.constexpr):
    """One program's codes; returns the largest |x| pattern (≥ 0x7F800000: a non-finite input)."""
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, MODE == 1, ROUNDS)
    amax = tl.zeros((Q,), tl.int32)
    for j in tl.static_range(4):
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        rnd = _pick(j, r0, r1, r2, r3) if MODE == 1 else b  # _integer_code uses its low 30 bits at most
        c = _round_code(b, rnd, S, EMIN_FIELD, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE)
        amax = tl.maximum(amax, b & 0x7FFFFFFF)
        if WIDTH == 8:
            _store(out_ptr + pid * BLOCK, c.to(tl.uint8), j * Q + offs, rem, FULL)
        else:
            lo, hi = tl.split(tl.reshape(c, (Q // 2, 2)))
            _store(out_ptr + pid * (BLOCK // 2), (lo | (hi << 4)).to(tl.uint8), j * (Q // 2) + tl.arange(0, Q // 2),
                   (rem + 1) // 2, FULL)
    return tl.max(amax, axis=0)


@triton.jit
def _cast_encode_kernel(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                        SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                        M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr,
                        NAN_CODE: tl.constexpr, FLAG: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr,
                        BLOCK: tl.constexpr):
    """8-bit codes one per byte; 4-bit codes two to a byte (low nibble first), neighbours packed in
    registers.  The block is read as four quarters, each drawing one word of every Philox counter
    of the program.  FLAG: a byte per program, were all inputs finite."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        amax = _cast_encode_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, SUB, MAX_CODE, MODE, FNUZ, M, EF,
                                  OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK, True)
    else:
        amax = _cast_encode_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, SUB, MAX_CODE, MODE, FNUZ, M, EF,
                                  OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK, False)
    if FLAG:  # only formats without a NaN code send whether the input was finite
        tl.store(fin_ptr + pid, (amax < 0x7F800000).to(tl.uint8))


@triton.jit
def _value_bits(c, M: tl.constexpr, EF: tl.constexpr, BIAS: tl.constexpr, LOW_EXP: tl.constexpr,
                SPECIAL: tl.constexpr, TOP: tl.constexpr):
    """float32 bit pattern of codes: sign | exponent field | mantissa (arithmetic, no table).  With
    subnormals, the code's magnitude bits placed as a float32's top bits, (field, mantissa), are
    the value times 2^(BIAS − 127) in every binade (its subnormals land on float32's): one multiply
    by 2^(127 − BIAS) gives the value."""
    W: tl.constexpr = 1 + EF + M
    sign = (c >> (EF + M)) & 1
    field = (c >> M) & ((1 << EF) - 1)
    mant = c & ((1 << M) - 1)
    if LOW_EXP == 1 - BIAS - M:  # subnormals: LOW_EXP = emin − M
        mag = ((c & ((1 << (EF + M)) - 1)) << (23 - M)).to(tl.float32, bitcast=True)
        bits = (mag * (2.0 ** (127 - BIAS))).to(tl.int32, bitcast=True) | (sign << 31)
    else:
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
def _cast_decode_kernel(c_ptr, fin_ptr, scale_ptr, out_ptr, n, M: tl.constexpr, EF: tl.constexpr,
                        BIAS: tl.constexpr, LOW_EXP: tl.constexpr, SPECIAL: tl.constexpr, TOP: tl.constexpr,
                        WIDTH: tl.constexpr, FLAG: tl.constexpr, KB: tl.constexpr, BLOCK: tl.constexpr):
    """Values of the codes; KB > 0: times the E8M0 scale 2^(e−127) of each block of KB values."""
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
    if KB > 0:
        e = tl.load(scale_ptr + o // KB, mask=o < n, other=127).to(tl.int32)
        v = (v.to(tl.float32, bitcast=True) * _pow2(e - 127).to(tl.float32, bitcast=True)).to(tl.int32, bitcast=True)
    if FLAG:  # the input held NaN/inf: everything decodes to NaN
        v = tl.where(tl.load(fin_ptr) == 0, 0x7FC00000, v)
    tl.store(out_ptr + o, v.to(tl.float32, bitcast=True), mask=o < n)


@triton.jit
def _pow2(k):
    """float32 bit pattern of 2^k for integer k (0 below 2^−149; k ≤ 127)."""
    return tl.where(k >= -126, (k + 127) << 23, tl.where(k >= -149, 1 << (tl.maximum(k, -149) + 149), 0))


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _mx_encode_kernel(x_ptr, out_ptr, scale_ptr, fin_ptr, n, nblocks, nbytes, seed_ptr, S: tl.constexpr,
                      EMIN_FIELD: tl.constexpr, SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr,
                      FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr,
                      INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, EMAX: tl.constexpr, MAXV: tl.constexpr,
                      FIT: tl.constexpr, KB: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Block scaling (OCP MX) in one pass: per block of KB values the E8M0 exponent
    e = ⌊log₂ max|x|⌋ − EMAX + 127 (FIT: one more where max·2^(e−127) < max|x|; 0 for an all-zero
    block; clamped to [0, 254]), the codes of x·2^(127−e) rounded with saturation, and a flag per
    program: were all inputs finite."""
    R: tl.constexpr = BLOCK // KB
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, R)[:, None] * KB + tl.arange(0, KB)[None, :]
    b = tl.load(x_ptr + o, mask=o < n, other=0).to(tl.int32, bitcast=True)
    # the pattern of max|x|, NaN where the block holds a NaN (patterns of non-negative floats order as values)
    amax = tl.reduce(tl.abs(b.to(tl.float32, bitcast=True)), 1, _max_nan).to(tl.int32, bitcast=True)
    e = (amax >> 23) - 127 - EMAX  # ⌊log₂ max|x|⌋ − EMAX where max|x| is normal
    if FIT:
        e += (amax.to(tl.float32, bitcast=True) > MAXV * _pow2(e).to(tl.float32, bitcast=True)).to(tl.int32)
    # EMAX ≥ 2: a block whose max is 0 or subnormal has e + 127 < 0 (the exponent 0 either way), and
    # e + 127 ≤ 253 for finite blocks, so 2^(127−e) is a normal float32
    e = tl.minimum(tl.maximum(e + 127, 0), 254)
    inv = (254 - e) << 23  # 2^(127−e)
    v = (b.to(tl.float32, bitcast=True) * inv.to(tl.float32, bitcast=True)[:, None]).to(tl.int32, bitcast=True)
    if MODE == 1:
        rnd = tl.reshape(_random_words(seed_ptr, pid, BLOCK // 4, ROUNDS), (R, KB))
    else:
        rnd = v
    # |v| < 2^(EMAX + 2) for finite inputs (the codes of non-finite ones are never read: the flag)
    c = _round_code(v, rnd, S, EMIN_FIELD, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE,
                    BOUNDED=True)
    if WIDTH == 8:
        tl.store(out_ptr + o, c.to(tl.uint8), mask=o < nbytes)
    else:  # four codes to an int16 word
        word = tl.sum(tl.reshape(c, (BLOCK // 4, 4)) << (tl.arange(0, 4) * 4)[None, :], axis=1)
        ow = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
        tl.store(out_ptr + ow, word.to(tl.int16), mask=ow < (nbytes + 1) // 2)
    bi = pid * R + tl.arange(0, R)
    tl.store(scale_ptr + bi, e.to(tl.uint8), mask=bi < nblocks)
    tl.store(fin_ptr + pid, (tl.max(amax, axis=0) < 0x7F800000).to(tl.uint8))


@triton.jit
def _natural_encode_block(x_ptr, exp_ptr, sign_ptr, seed_ptr, pid, rem, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                          FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, True, ROUNDS)
    for j in tl.static_range(4):
        r = _pick(j, r0, r1, r2, r3)
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        a = b & 0x7FFFFFFF
        e = ((a + (r & 0x7FFFFF)) >> 23) & 0xFF  # up with probability frac
        e = tl.where(a >= 0x7F800000, 255, e)
        _store(exp_ptr + pid * BLOCK, e.to(tl.uint8), j * Q + offs, rem, FULL)
        sb = tl.reshape((b >> 31) & 1, (Q // 8, 8))
        byte = tl.sum(sb << tl.arange(0, 8)[None, :], axis=1)
        _store(sign_ptr + pid * (BLOCK // 8), byte.to(tl.uint8), j * (Q // 8) + tl.arange(0, Q // 8), (rem + 7) // 8,
               FULL)


@triton.jit
def _natural_encode_kernel(x_ptr, exp_ptr, sign_ptr, n, seed_ptr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _natural_encode_block(x_ptr, exp_ptr, sign_ptr, seed_ptr, pid, rem, ROUNDS, BLOCK, True)
    else:
        _natural_encode_block(x_ptr, exp_ptr, sign_ptr, seed_ptr, pid, rem, ROUNDS, BLOCK, False)


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
def _int8_encode_block(x_ptr, out_ptr, alpha, seg_ptr, lim, seed_ptr, pid, rem, STOCHASTIC: tl.constexpr,
                       SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr, FULL: tl.constexpr):
    """One program's integers; returns max |x| as a pattern (NaN-propagating: ≥ 0x7F800000 where
    an input is not finite)."""
    Q: tl.constexpr = BLOCK // 4
    MAGIC: tl.constexpr = 12582912.0
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, STOCHASTIC, ROUNDS)
    amax = tl.zeros((Q,), tl.float32)  # max |x|, NaN if any is NaN
    for j in tl.static_range(4):
        o = j * Q + offs
        x = _pick(j, x0, x1, x2, x3)
        amax = tl.maximum(amax, tl.abs(x), propagate_nan=tl.PropagateNan.ALL)
        t = tl.minimum(tl.maximum(x * _segment_value(alpha, seg_ptr + pid * BLOCK, o, rem, SEG), -lim), lim)
        u = t + MAGIC  # the pattern's low byte is the nearest integer to t as an int8
        if STOCHASTIC:  # ⌊t⌋ + Bernoulli(t − ⌊t⌋), p a multiple of 2^-23 in [0, 1)
            k = u - MAGIC
            r = _pick(j, r0, r1, r2, r3)
            fl = k - tl.where(k > t, 1.0, 0.0)
            p = (((r >> 9) & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True) - 1.0
            u = (fl + tl.where(p < t - fl, 1.0, 0.0)) + MAGIC
        _store(out_ptr + pid * BLOCK, u.to(tl.int32, bitcast=True).to(tl.int8), o, rem, FULL)
    return tl.max(amax.to(tl.int32, bitcast=True), axis=0)


@triton.jit
def _int8_encode_kernel(x_ptr, out_ptr, fin_ptr, n, alpha, seg_ptr, lim, seed_ptr, STOCHASTIC: tl.constexpr,
                        SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Int(α·x) saturated at ±lim, with full-rate float adds only: t is clamped first (rounding
    is monotone, lim an integer), then M = 1.5·2^23 rounds |t| < 2^22 to the nearest integer k,
    ties to even, in t + M, whose pattern's low byte is k as an int8.
    SEG: ``alpha`` points at one α per segment, ``seg_ptr`` at each coordinate's segment."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        amax = _int8_encode_block(x_ptr, out_ptr, alpha, seg_ptr, lim, seed_ptr, pid, rem, STOCHASTIC, SEG, ROUNDS,
                                  BLOCK, True)
    else:
        amax = _int8_encode_block(x_ptr, out_ptr, alpha, seg_ptr, lim, seed_ptr, pid, rem, STOCHASTIC, SEG, ROUNDS,
                                  BLOCK, False)
    tl.store(fin_ptr + pid, (amax < 0x7F800000).to(tl.uint8))


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
def _levels_encode_block(x_ptr, out_ptr, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, pid, rem, LBITS: tl.constexpr,
                         W: tl.constexpr, SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                         FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    # the words first: with the loads first, TernGrad's table variant compiles to 19% more instructions
    r0, r1, r2, r3 = block_words(seed_ptr, pid, Q, ROUNDS)
    if SEG == 1:
        scale = tl.load(inv_ptr)
        inv1 = tl.where(scale > 0, levels / scale, 0.0)
    x0, x1, x2, x3 = _load4(x_ptr + pid * BLOCK, rem, Q, 0.0, FULL)
    for j in tl.static_range(4):
        r = _pick(j, r0, r1, r2, r3)
        o = j * Q + offs
        x = _pick(j, x0, x1, x2, x3)
        if SEG == 1:
            t = tl.abs(x) * inv1
        else:
            t = tl.abs(x) * _segment_value(inv_ptr, seg_ptr + pid * BLOCK, o, rem, SEG)
        fl = tl.floor(t)
        lev = fl + tl.where(_uniform24(r) < t - fl, 1.0, 0.0)
        lev = tl.minimum(tl.where(lev == lev, lev, 0.0), levels).to(tl.int32)  # NaN → 0 (the scale is NaN then)
        c = (((x < 0) & (lev > 0)).to(tl.int32) << LBITS) | lev
        if not FULL:
            c = tl.where(o < rem, c, 0)
        _store_packed(out_ptr, c, pid * BLOCK + j * Q, nbytes, W, Q)


@triton.jit
def _levels_encode_kernel(x_ptr, out_ptr, n, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, LBITS: tl.constexpr,
                          W: tl.constexpr, SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """QSGD and TernGrad: level = ⌊s·|x|/scale⌋ + Bernoulli(frac), code = sign << LBITS | level.
    ``inv_ptr``: the scale (POINTER), or a table of s/scale per segment (TABLE, 0 where the scale is
    0 or not finite)."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _levels_encode_block(x_ptr, out_ptr, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, pid, rem, LBITS, W, SEG,
                             ROUNDS, BLOCK, True)
    else:
        _levels_encode_block(x_ptr, out_ptr, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, pid, rem, LBITS, W, SEG,
                             ROUNDS, BLOCK, False)


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
                  seg: torch.Tensor | None = None, *, rounds: int = PHILOX_ROUNDS) -> torch.Tensor:
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
                                                    ROUNDS=rounds, BLOCK=BLOCK, num_warps=WARPS)
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


def _code_constants(fmt: FloatFormat, rounding: str, saturate: bool, flagged: bool = False) -> dict:
    """The rounding constants of ``_round_code`` for ``fmt``: the quantize kernel's, with the codes
    of its special results (max, inf, NaN).  ``flagged``: a finite flag travels with the codes, so
    the codes of NaN (a format without a NaN code) or of any non-finite input (block scaling) are
    never read: they take the overflow code, which saves the special cases."""
    top = (1 << fmt.exp_bits) - 1
    m, w = fmt.man_bits, fmt.code_bits
    nan_code = {"ieee": (top << m) | (1 << max(m - 1, 0)), "fn": (top << m) | ((1 << m) - 1),
                "fnuz": 1 << (w - 1), "none": 0}[fmt.nan_style]
    k = _constants(fmt, rounding, saturate)
    if k["MODE"] == 2:
        raise ValueError("the fused cast encode rounds to nearest or stochastically")
    max_code = (k["MAX_BITS"] >> k["S"]) - ((127 - fmt.bias) << m)

    def code_of(bits):  # the code of a special result pattern: max, inf or NaN
        return {k["MAX_BITS"]: max_code, 0x7F800000: top << m}.get(bits, nan_code)

    over = code_of(k["OVER_BITS"])
    return dict(S=k["S"], EMIN_FIELD=k["EMIN_FIELD"], SUB=fmt.subnormals, MAX_CODE=max_code, MODE=k["MODE"],
                FNUZ=k["FNUZ"], M=m, EF=fmt.exp_field_bits, OVER_CODE=over,
                INF_CODE=over if flagged else code_of(k["INF_OUT"]),
                NAN_CODE=over if flagged else nan_code)


def cast_encode(x: torch.Tensor, fmt: FloatFormat, rounding: str, saturate: bool, generator=None, *,
                rounds: int = PHILOX_ROUNDS):
    """(packed codes, one byte: was every input finite — None for formats with a NaN code).  With
    the flag, the codes of non-finite inputs are unspecified: the packet decodes to NaN everywhere."""
    x = x.contiguous().reshape(-1)
    n, w = x.numel(), fmt.code_bits
    nbytes = (n * w + 7) // 8
    out = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    flag = not fmt.has_nan
    fin = torch.empty(triton.cdiv(n, BLOCK) if flag else 1, dtype=torch.uint8, device=x.device)
    k = _code_constants(fmt, rounding, saturate, flagged=flag)
    seed = _seed(x, generator) if rounding == "stochastic" else x
    _cast_encode_kernel[(triton.cdiv(n, BLOCK),)](
        x, out, fin, n, seed, **k, FLAG=flag, WIDTH=w, ROUNDS=rounds,
        BLOCK=BLOCK, num_warps=WARPS)
    return out, (fin.amin().reshape(1) if flag else None)


def block_fusable(fmt, block: int) -> bool:
    """Whether ``cast_block_encode`` takes ``fmt`` with blocks of ``block`` values (formats whose
    largest value is at least 4, as every MX element format's)."""
    return (isinstance(fmt, FloatFormat) and fmt.code_bits in (4, 8) and fmt.emax >= 2 and 2 <= block <= BLOCK
            and block & (block - 1) == 0)


def cast_block_encode(x: torch.Tensor, fmt: FloatFormat, rounding: str, block: int, rule: str, generator=None, *,
                      rounds: int = PHILOX_ROUNDS):
    """Block-scaled (MX) codes in one pass: (packed codes of the zero-padded blocks, uint8 E8M0
    exponents, one byte: was every input finite) — the payload of ``ScaledFormat(fmt, "block",
    block, rule)`` with saturating rounding."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    nblocks = triton.cdiv(n, block)
    nbytes = fmt.nbytes(nblocks * block)
    w = fmt.code_bits
    out = torch.empty(nbytes + (nbytes % 2 if w == 4 else 0), dtype=torch.uint8, device=x.device)
    scales = torch.empty(nblocks, dtype=torch.uint8, device=x.device)
    grid = max(1, triton.cdiv(nblocks * block, BLOCK))
    fin = torch.empty(grid, dtype=torch.uint8, device=x.device)
    seed = _seed(x, generator) if rounding == "stochastic" else x
    _mx_encode_kernel[(grid,)](
        x, out if w == 8 else out.view(torch.int16), scales, fin, n, nblocks, nbytes, seed,
        **_code_constants(fmt, rounding, True, flagged=True), EMAX=fmt.emax,
        MAXV=float(fmt.max), FIT=rule == "fit", KB=block, WIDTH=fmt.code_bits, ROUNDS=rounds, BLOCK=BLOCK,
        num_warps=WARPS)
    return out[:nbytes], scales, fin.amin().reshape(1)


def cast_decode(codes: torch.Tensor, fmt: FloatFormat, n: int, finite=None, out=None, scales=None,
                block: int = 0) -> torch.Tensor:
    """Values of n codes (NaN everywhere where ``finite`` is 0); with ``scales``, each block of
    ``block`` values times its E8M0 scale."""
    out = _output(n, codes.device, out)
    flag = finite if finite is not None else codes
    special = {"ieee": 1, "fn": 2, "fnuz": 3, "none": 0}[fmt.nan_style]
    m2 = fmt.man_bits if fmt.subnormals else 0
    _cast_decode_kernel[(triton.cdiv(n, BLOCK),)](
        codes, flag, scales if scales is not None else codes, out, n, M=fmt.man_bits, EF=fmt.exp_field_bits,
        BIAS=fmt.bias, LOW_EXP=fmt.emin - m2, SPECIAL=special, TOP=(1 << fmt.exp_bits) - 1, WIDTH=fmt.code_bits,
        FLAG=finite is not None, KB=block if scales is not None else 0, BLOCK=BLOCK, num_warps=WARPS)
    return out


def natural_encode(x: torch.Tensor, generator=None, *, rounds: int = PHILOX_ROUNDS) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous().reshape(-1)
    n = x.numel()
    e = torch.empty(n, dtype=torch.uint8, device=x.device)
    s = torch.empty((n + 7) // 8, dtype=torch.uint8, device=x.device)
    _natural_encode_kernel[(triton.cdiv(n, BLOCK),)](x, e, s, n, _seed(x, generator), ROUNDS=rounds,
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


def int8_encode(x: torch.Tensor, alpha, lim: int, stochastic: bool, generator=None, seg=None, *,
                rounds: int = PHILOX_ROUNDS):
    """(int8 integers of Int(α·x), one byte: was every input finite); ``alpha``: a number, or a
    vector of one α per segment with ``seg``."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    out = torch.empty(n, dtype=torch.int8, device=x.device)
    fin = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.uint8, device=x.device)
    seed = _seed(x, generator) if stochastic else x
    a, segp, mode = _table(alpha, seg, x.device)
    _int8_encode_kernel[(triton.cdiv(n, BLOCK),)](x, out, fin, n, a, segp if segp is not None else x, float(lim), seed,
                                                  STOCHASTIC=stochastic, SEG=mode, ROUNDS=rounds, BLOCK=BLOCK,
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


@triton.jit
def _stats_kernel(g_ptr, q_ptr, start_ptr, len_ptr, part_ptr, BLOCK: tl.constexpr):
    p = tl.program_id(0)
    start = tl.load(start_ptr + p)
    length = tl.load(len_ptr + p)
    o = tl.arange(0, BLOCK)
    m = o < length
    g = tl.load(g_ptr + start + o, mask=m, other=0.0).to(tl.float64)
    q = tl.load(q_ptr + start + o, mask=m, other=0.0).to(tl.float64)
    d = q - g
    nz = (g != 0) & m
    tl.store(part_ptr + p * 5 + 0, tl.sum(g * g, axis=0))
    tl.store(part_ptr + p * 5 + 1, tl.sum(q * q, axis=0))
    tl.store(part_ptr + p * 5 + 2, tl.sum(d * d, axis=0))
    tl.store(part_ptr + p * 5 + 3, tl.sum(nz.to(tl.float64), axis=0))
    tl.store(part_ptr + p * 5 + 4, tl.sum((nz & (q == 0)).to(tl.float64), axis=0))


@triton.jit
def _rows_sum_kernel(part_ptr, first_ptr, count_ptr, out_ptr, MOST: tl.constexpr, R: tl.constexpr):
    j = tl.program_id(0)
    first = tl.load(first_ptr + j)
    end = first + tl.load(count_ptr + j)
    k = tl.arange(0, 8)[None, :]
    acc = tl.zeros((8,), dtype=tl.float64)
    for i in range(0, MOST, R):  # R of the tensor's blocks at a time, in order: a fixed summation order
        rows = first + i + tl.arange(0, R)[:, None]
        acc += tl.sum(tl.load(part_ptr + rows * 5 + k, mask=(rows < end) & (k < 5), other=0.0), axis=0)
    k1 = tl.arange(0, 8)
    tl.store(out_ptr + j * 5 + k1, acc, mask=k1 < 5)


def tensor_sums(g: torch.Tensor, q: torch.Tensor, plan) -> torch.Tensor:
    """Per tensor of a flat buffer: Σg², Σg̃², Σ(g̃ − g)², #{g ≠ 0}, #{g ≠ 0, g̃ = 0} (float64,
    m × 5) in one read of g and g̃.  ``plan``: (starts, lengths, blocks per tensor, first block of
    each tensor, the most blocks of one tensor) of blocks that each lie inside one tensor; the blocks' partial sums are added per
    tensor in a fixed order (deterministic)."""
    starts, lengths, per, first, most = plan
    part = torch.empty(starts.numel(), 5, dtype=torch.float64, device=g.device)
    out = torch.empty(per.numel(), 5, dtype=torch.float64, device=g.device)
    if starts.numel():
        _stats_kernel[(starts.numel(),)](g, q, starts, lengths, part, BLOCK=BLOCK, num_warps=WARPS)
    if per.numel():
        _rows_sum_kernel[(per.numel(),)](part, first, per, out, MOST=most, R=64, num_warps=2)
    return out


@triton.jit
def _round_stochastic_block(x_ptr, out_ptr, alpha, seed_ptr, pid, rem, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                            FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, True, ROUNDS)
    for j in tl.static_range(4):
        t = _pick(j, x0, x1, x2, x3) * alpha
        fl = tl.floor(t)
        r = _pick(j, r0, r1, r2, r3)
        p = (((r >> 9) & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True) - 1.0
        _store(out_ptr + pid * BLOCK, fl + tl.where(p < t - fl, 1.0, 0.0), j * Q + offs, rem, FULL)


@triton.jit
def _round_stochastic_kernel(x_ptr, out_ptr, n, alpha, seed_ptr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Int(α·x) = ⌊t⌋ + Bernoulli(t − ⌊t⌋) as float32 integers, every t (for |t| ≥ 2^23, t − ⌊t⌋ = 0:
    t itself; NaN and ±inf stay), p a multiple of 2^-23 as in the int8 kernel."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _round_stochastic_block(x_ptr, out_ptr, alpha, seed_ptr, pid, rem, ROUNDS, BLOCK, True)
    else:
        _round_stochastic_block(x_ptr, out_ptr, alpha, seed_ptr, pid, rem, ROUNDS, BLOCK, False)


def round_stochastic(x: torch.Tensor, alpha: float = 1.0, generator=None, out=None, *,
                     rounds: int = PHILOX_ROUNDS) -> torch.Tensor:
    """IntSGD's Int(α·x) on a CUDA float32 tensor in one pass (float32 integers)."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    out = torch.empty_like(x) if out is None else out.reshape(-1)
    _round_stochastic_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, float(alpha), _seed(x, generator),
                                                        ROUNDS=rounds, BLOCK=BLOCK, num_warps=WARPS)
    return out
