"""Rounding inside the kernels, one copy for :func:`lowbit.quantize`'s kernel and the cast codec's:
|x| rounded onto a format's grid — nearest on the float adder where that applies
(``_nearest_magnitude``), else one integer formula (``_round_parts``: the pattern rounded at the
format's mantissa width, and the count of fixed grid steps below its normal range; stochastic
rounding adds random bits below the step) — taken as a value (``_round_bits``) or as the format's
code (``_round_code``), and codes back to values (``_value_bits``)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .constants import _NEAREST, _STOCHASTIC, _ZERO, _code_constants, _constants  # noqa: F401

# Triton's interpreter (and a GPU without PTX) runs no inline PTX: there the three helpers below are
# plain integer expressions with the same values (the interpreter tests compare them with the CPU).
_PTX = os.environ.get("TRITON_INTERPRET", "0") != "1" and torch.version.hip is None

if _PTX:
    @triton.jit
    def _twice(b):
        """2·b mod 2^32 as uint32 (x's bits b: twice |x|'s pattern, the sign dropped without a
        mask), by a multiply the compiler does not see through.  Written as ``b << 1``, LLVM
        rewrites ``(b << 1) >> 24`` as ``(b >> 23) & 255``: two integer-pipe instructions
        instead of one, in kernels bound by that pipe."""
        return tl.inline_asm_elementwise("mul.lo.u32 $0, $1, 2;", "=r,r", [b.to(tl.uint32, bitcast=True)],
                                         dtype=tl.uint32, is_pure=True, pack=1)

    @triton.jit
    def _low_bits(r, k):
        """r mod 2^k (0 ≤ k ≤ 32) in one instruction (``szext``: zero-extend from bit k)."""
        return tl.inline_asm_elementwise("szext.clamp.u32 $0, $1, $2;", "=r,r,r", [r, k], dtype=tl.int32,
                                         is_pure=True, pack=1)

    @triton.jit
    def _sign_pair(u, v):
        """The sign bits of the int32 patterns u and v at bits 3 and 11: one byte permute whose
        bytes 0 and 1 repeat the top bits of u and v (``prmt`` with sign replication), then a mask
        — for four 4-bit codes to a word, two integer-pipe instructions per two values where a
        shift and a merge per value took four."""
        p = tl.inline_asm_elementwise("prmt.b32 $0, $1, $2, 0xFB;", "=r,r,r", [u, v], dtype=tl.int32,
                                      is_pure=True, pack=1)
        return p & 0x0808
else:
    @triton.jit
    def _twice(b):
        """2·b mod 2^32 as uint32."""
        return (b << 1).to(tl.uint32, bitcast=True)

    @triton.jit
    def _low_bits(r, k):
        """r mod 2^k (0 ≤ k < 32)."""
        return r & ((1 << k) - 1)

    @triton.jit
    def _sign_pair(u, v):
        """The sign bits of the int32 patterns u and v at bits 3 and 11."""
        return ((u >> 28) & 8) | ((v >> 20) & 0x800)


@triton.jit
def _grid_count(a, e, rnd, LOW_EXP: tl.constexpr, MODE: tl.constexpr):
    """k = |x| / 2^LOW_EXP rounded to an integer (the fixed grid below the smallest normal), for
    |x| given by its float32 bits ``a`` and exponent field ``e``."""
    if MODE == 1 and 120 + LOW_EXP >= 24:
        # every |x| < 2^-126 lies 24+ bits below the grid step (the shift below leaves 0 of it),
        # so float32's own subnormals need neither their exponent of 1 nor the missing hidden bit
        sig = (a & 0x7FFFFF) | 0x800000
        sh = (150 + LOW_EXP) - e
    else:
        sig = (a & 0x7FFFFF) | ((e > 0).to(tl.int32) << 23)
        sh = (150 + LOW_EXP) - tl.maximum(e, 1)
    if MODE == 1:
        extra = tl.maximum(sh - 30, 0)  # 30 random bits at most: sig + rnd stays below 2^31
        sh = tl.minimum(tl.maximum(sh, 1), 30)
        sig = sig >> extra
        k = (sig + (rnd & ((1 << sh) - 1))) >> sh
    elif MODE == 0:
        sh = tl.minimum(tl.maximum(sh, 1), 25)
        k = (sig + (1 << (sh - 1)) - 1 + ((sig >> sh) & 1)) >> sh
    else:
        sh = tl.minimum(tl.maximum(sh, 1), 25)
        k = sig >> sh
    return k


@triton.jit
def _nearest_magnitude(b, S: tl.constexpr, EMIN_FIELD: tl.constexpr, BOUNDED: tl.constexpr):
    """|x| (x's bits ``b``) rounded to nearest-even on a format with subnormals, by the float adder
    (|·| is an operand modifier there): the grid step of |x|'s binade is s = 2^(max(e, emin) − M),
    and r = (|x| + s·2^23) − s·2^23 is
    |x| rounded to a multiple of s (the sum's unit in the last place is s; ties to even).  Where
    s·2^23 would overflow the exponent it is clamped (|x| ≥ 2^(128 − S): r stays above the
    format's largest binade, the caller's condition, so it overflows as it should) unless BOUNDED
    (|x| < 2^104 or non-finite: the results for non-finite inputs are then unspecified)."""
    eb = b & 0x7F800000
    if not BOUNDED:
        eb = tl.minimum(eb, (254 - S) << 23)
    c = tl.maximum(eb + (S << 23), (EMIN_FIELD + S) << 23).to(tl.float32, bitcast=True)
    r = (tl.abs(b.to(tl.float32, bitcast=True)) + c) - c
    return r.to(tl.int32, bitcast=True)


@triton.jit
def _round_parts(a, rnd, S: tl.constexpr, LOW: tl.constexpr, LOW_EXP: tl.constexpr, MODE: tl.constexpr):
    """The one rounding of |x| (its bits ``a``) onto a format's grid, in two parts: the pattern
    rounded at bit S — the format's normal range, where a carry is the next binade — and, below
    that range (LOW), k: the count of grid steps 2^LOW_EXP (the subnormals, or 2^emin for formats
    without them; ``_grid_count``).  Nearest-even (MODE 0), stochastic (MODE 1: up when the dropped
    bits plus the random bits ``rnd`` carry, so up with probability exactly the dropped fraction,
    to 2^-30 of a step), or toward zero (MODE 2).  Formats whose subnormals are float32's need no
    LOW.  Patterns past the largest value are left to the caller's overflow rule; a non-finite
    input gives a pattern ≥ inf's, or one wrapped past bit 31 (read it unsigned)."""
    if S == 0:
        res = a
    elif MODE == 0:
        res = (a + ((1 << (S - 1)) - 1) + ((a >> S) & 1)) & ~((1 << S) - 1)
    elif MODE == 1:
        res = (a + (rnd & ((1 << S) - 1))) & ~((1 << S) - 1)
    else:
        res = a & ~((1 << S) - 1)
    if LOW:
        k = _grid_count(a, a >> 23, rnd, LOW_EXP, MODE)
    else:
        k = res
    return res, k


@triton.jit
def _round_bits(b, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr,
                LOW_EXP: tl.constexpr, ADDER: tl.constexpr, MAX_BITS: tl.constexpr, OVER_BITS: tl.constexpr,
                INF_OUT: tl.constexpr, FNUZ: tl.constexpr, MODE: tl.constexpr):
    """x (float32 bits ``b``) rounded onto the format, as float32 bits (:func:`lowbit.quantize`):
    the rounded magnitude (ADDER: nearest on the float adder, ``_nearest_magnitude``; else
    ``_round_parts``, k steps below the normal range as k·2^LOW_EXP), then the overflow rule for
    finite x (OVER_BITS, or saturation at MAX_BITS), ±inf → INF_OUT and NaN kept, and the sign
    (none on a zero of an fnuz format)."""
    a = b & 0x7FFFFFFF
    if ADDER:
        res = _nearest_magnitude(b, S, EMIN_FIELD, False)
    else:
        res, k = _round_parts(a, rnd, S, LOW, LOW_EXP, MODE)
        if LOW:
            res = tl.where((a >> 23) < EMIN_FIELD, (k.to(tl.float32) * (2.0 ** LOW_EXP)).to(tl.int32, bitcast=True), res)
    if OVER_BITS == MAX_BITS:
        res = tl.minimum(res, MAX_BITS)
    else:
        res = tl.where(res > MAX_BITS, OVER_BITS, res)
    res = tl.where(a >= 0x7F800000, tl.where(a == 0x7F800000, INF_OUT, a), res)
    sign = b & (-2147483648)
    if FNUZ:
        sign = tl.where(res == 0, 0, sign)
    return res | sign


@triton.jit
def _round_code(b, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr, LOW_EXP: tl.constexpr,
                ADDER: tl.constexpr, SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr,
                FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr,
                INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, BOUNDED: tl.constexpr = False,
                UNIFIED: tl.constexpr = True, SIGN: tl.constexpr = True):
    """The format's code of x (float32 bits ``b``) rounded as ``_round_bits`` rounds it.  ADDER:
    the float adder's magnitude, scaled so that the pattern's top bits are the code
    (``_magnitude_code``).  Else ``_round_parts``: in the normal range the rounded pattern's
    exponent and mantissa, rebased to the format's smallest normal binade, (pattern >> S) −
    ((EMIN_FIELD − 1) << M); below it k, which is the subnormal code itself (k << M without
    subnormals).  Past the largest value, and for every non-finite input, OVER_CODE; then the
    codes of ±inf and NaN where they differ, and the sign bit (not SIGN: the magnitude code alone,
    for a caller that places the signs itself; not for fnuz formats).  The special inputs are found on
    |x|'s pattern, or on twice it (``_twice``, unsigned) where the stochastic formula has that."""
    tl.static_assert(SIGN or not FNUZ, "an fnuz format's zero drops its sign: _round_code places it")
    if UNIFIED and MODE == 1 and LOW and SUB and 120 + LOW_EXP >= 24 and not ADDER:
        a = _twice(b)  # 2·|x|'s pattern: inf's is 0xFF000000
        mag = _stochastic_magnitude(a, rnd, S, EMIN_FIELD, LOW_EXP)
        inf = tl.full([], 0xFF000000, tl.uint32)
    else:
        a = b & 0x7FFFFFFF
        inf = tl.full([], 0x7F800000, tl.int32)
        if ADDER:
            mag = _magnitude_code(_nearest_magnitude(b, S, EMIN_FIELD, BOUNDED), S, EMIN_FIELD)
        else:
            res, k = _round_parts(a, rnd, S, LOW, LOW_EXP, MODE)
            # unsigned: a carry past bit 31 (a NaN's payload) stays a code above the largest
            mag = (res.to(tl.uint32, bitcast=True) >> S).to(tl.int32, bitcast=True) - ((EMIN_FIELD - 1) << M)
            if LOW:
                mag = tl.where((a >> 23) < EMIN_FIELD, k if SUB else k << M, mag)
    mag = tl.where(mag > MAX_CODE, OVER_CODE, mag)  # also every inf or NaN input
    if (INF_CODE != OVER_CODE) and (NAN_CODE != OVER_CODE):
        mag = tl.where(a >= inf, tl.where(a == inf, INF_CODE, NAN_CODE), mag)
    elif INF_CODE != OVER_CODE:
        mag = tl.where(a == inf, INF_CODE, mag)
    elif NAN_CODE != OVER_CODE:
        mag = tl.where(a > inf, NAN_CODE, mag)
    if not SIGN:
        return mag
    sign = (b >> 31) & 1
    if FNUZ:
        sign = tl.where(mag == 0, 0, sign)
    return mag | (sign << (EF + M))


@triton.jit
def _stochastic_magnitude(b2, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW_EXP: tl.constexpr):
    """The magnitude code of |x| rounded stochastically onto a format with subnormals, from
    b2 = 2·|x|'s pattern (uint32, ``_twice``), ``_round_parts``' two cases in one formula: the
    pattern rebased so that the smallest normal binade has exponent field 1 equals, there, the
    significand with its hidden bit, which is what the subnormal range shifts; so with
    e' = min(e, EMIN_FIELD), x = |x|'s pattern − (e' − 1)·2^23 and sh = 150 + LOW_EXP − e'
    (= S in the normal range), code = (x + (rnd mod 2^sh)) ≫ sh, at most 30 random bits as
    ``_grid_count``.  The same codes and draws as ``_round_parts``, in fewer integer operations
    (a NaN's rebased pattern plus rnd stays below 2^31: EMIN_FIELD ≥ 2).  On twice the pattern, e
    is the top byte (one shift), 2x = b2 − (e' − 1)·2^24 < 2^32 unsigned, and x ≫ d = 2x ≫ (d + 1)."""
    # e' = min(e, EMIN_FIELD): x is the rebased pattern (e ≥ EMIN_FIELD) or the significand with
    # its hidden bit (below, float32's subnormals included: e = 0 adds 2^23), and
    # (150 + LOW_EXP) − e' is S in the normal range
    e = tl.minimum((b2 >> 24).to(tl.int32, bitcast=True), EMIN_FIELD)
    x2 = b2 - ((e - 1) << 24).to(tl.uint32, bitcast=True)
    sh = (150 + LOW_EXP) - e
    sh30 = tl.minimum(sh, 30)
    x = (x2 >> (sh - sh30 + 1)).to(tl.int32, bitcast=True)
    return (x + _low_bits(rnd, sh30)) >> sh30


@triton.jit
def _magnitude_code(r, S: tl.constexpr, EMIN_FIELD: tl.constexpr):
    """The magnitude code of r (float32 bits of a value on the grid of a format with subnormals,
    or of one past its range: then a code above the largest): r·2^(1 − EMIN_FIELD) puts the
    format's smallest normal binade on float32's and its subnormals on float32's (exactly: r is a
    multiple of 2^(emin − M), M ≤ 23), so the pattern's top bits are the code."""
    down = tl.full([], (128 - EMIN_FIELD) << 23, tl.int32).to(tl.float32, bitcast=True)  # 2^(1 − EMIN_FIELD)
    return (r.to(tl.float32, bitcast=True) * down).to(tl.int32, bitcast=True) >> S


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
