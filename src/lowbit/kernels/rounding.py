"""Rounding float32 bit patterns to a format's codes inside a kernel (one integer formula for every binade, bit for bit the quantize kernel's ``_round_bits``; nearest rounding on the float adder) and codes back to values."""

from __future__ import annotations

import triton
import triton.language as tl

from ..formats import FloatFormat
from .quantize_triton import _constants


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
def _pow2(k):
    """float32 bit pattern of 2^k for integer k (0 below 2^−149; k ≤ 127)."""
    return tl.where(k >= -126, (k + 127) << 23, tl.where(k >= -149, 1 << (tl.maximum(k, -149) + 149), 0))


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


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
