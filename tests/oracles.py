"""Independent oracles for the tests: ml_dtypes casts and float64 searches over value tables."""

import math

import ml_dtypes
import numpy as np

import lowbit

ML_DTYPES = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e4m3": ml_dtypes.float8_e4m3,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e3m4": ml_dtypes.float8_e3m4,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8_e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz,
    "float6_e3m2fn": ml_dtypes.float6_e3m2fn,
    "float6_e2m3fn": ml_dtypes.float6_e2m3fn,
    "float4_e2m1fn": ml_dtypes.float4_e2m1fn,
}


def ml_round_trip(x: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        return x.astype(ML_DTYPES[name]).astype(x.dtype)


def same_bits(out: np.ndarray, ref: np.ndarray, x: np.ndarray, fmt) -> np.ndarray:
    """Mask of mismatches, NaN payloads aside (and NaN inputs of NaN-less formats, where lowbit keeps
    NaN and ml_dtypes writes −0)."""
    u = np.uint32 if out.dtype == np.float32 else np.uint64
    ok = np.isnan(out) & np.isnan(ref)
    if not fmt.has_nan:
        ok |= np.isnan(x) & np.isnan(out)
    return ~ok & (out.view(u) != ref.view(u))


def value_table(fmt):
    """Sorted distinct finite non-negative values of a ≤ 16-bit format, with whether each value's
    code is even (for ties), computed in float64 from the format's definition."""
    m, e_min = fmt.man_bits, fmt.emin
    vals = [0.0]
    for k in range(1, 2**m):
        if fmt.subnormals:
            vals.append(k * 2.0 ** (e_min - m))
    e = e_min
    while True:
        for k in range(2**m):
            v = (1 + k / 2**m) * 2.0**e
            if v > fmt.max:
                return np.array(vals)
            vals.append(v)
        e += 1


def nearest_oracle(x: np.ndarray, fmt) -> np.ndarray:
    """Round-half-to-even onto ``fmt`` in float64 with saturation at ±max (finite x only)."""
    t = value_table(fmt)
    ax = np.abs(x.astype(np.float64))
    i = np.clip(np.searchsorted(t, ax, side="right") - 1, 0, len(t) - 1)
    lo = t[i]
    hi = t[np.minimum(i + 1, len(t) - 1)]
    d_lo, d_hi = ax - lo, hi - ax
    # with subnormals a value's index in the table is its code, so index parity = mantissa LSB
    assert fmt.subnormals, "oracle tables index codes only for formats with subnormals"
    even_lo = i % 2 == 0
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & ~even_lo)
    r = np.where(pick_hi, hi, lo)
    r = np.where(ax >= t[-1], t[-1], r)
    return np.copysign(r, x)


def seed_quantizer(g: np.ndarray, E: int, M: int) -> np.ndarray:
    """The "fp-like" quantizer of the low-precision SGD slowdown reproduction, re-derived from its
    description (SPEC §1.2) in float64: e = clamp(⌊log₂|g|⌋, −e_max, e_max), mantissa rounded
    half-to-even to M bits and clamped to [−2, 2]."""
    emax = 2 ** (E - 1) - 1
    g = g.astype(np.float64)
    with np.errstate(divide="ignore"):
        e = np.where(g == 0, 0, np.floor(np.log2(np.abs(g))))
    e = np.clip(e, -emax, emax)
    m = np.round(g / 2.0**e * 2**M) / 2**M
    m = np.clip(m, -2, 2)
    return m * 2.0**e


def neighbours(x: float, fmt):
    """The two representable values around |x| (as signed values toward and away from zero)."""
    t = value_table(fmt)
    ax = abs(x)
    i = int(np.searchsorted(t, ax, side="right") - 1)
    lo, hi = t[i], t[min(i + 1, len(t) - 1)]
    return math.copysign(lo, x), math.copysign(hi, x)


__all__ = ["ML_DTYPES", "ml_round_trip", "same_bits", "value_table", "nearest_oracle",
           "seed_quantizer", "neighbours", "lowbit"]
