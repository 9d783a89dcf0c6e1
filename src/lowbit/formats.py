"""Number formats: one precise definition of each, and a registry of named formats.

A :class:`FloatFormat` is a sign-magnitude binary floating-point format with ``exp_bits``
exponent bits, ``man_bits`` explicit mantissa bits and exponent ``bias``.  Its finite values are

    normal:     (-1)^s · (1 + m / 2^M) · 2^(f − bias),   f = 1 … f_max
    subnormal:  (-1)^s · (m / 2^M) · 2^(1 − bias),       f = 0   (if ``subnormals``)

How the top codes are used is set by ``has_inf`` and ``nan_style``, following the conventions of
ml_dtypes / the OCP 8-bit and MX specifications:

    nan_style  has_inf  top exponent field        overflow (saturate=False)   example
    "ieee"     True     inf and NaN               → ±inf                      float8_e5m2, float16
    "fn"       False    finite, except S.1111.111  → NaN                       float8_e4m3fn
    "fnuz"     False    finite; NaN is 1.0000.000  → NaN (no negative zero)    float8_e4m3fnuz
    "none"     False    finite; no NaN, no inf     → ±max (saturates)          float4_e2m1fn

``max_value`` optionally caps the largest finite value at a point of the unbounded grid; this
describes the "fp-like" quantizers of the low-precision SGD slowdown reproduction
(``slowdown_fp4``/``slowdown_fp8``), which are not IEEE/OCP formats.

An :class:`IntFormat` is a symmetric signed integer grid {−(2^(b−1)−1), …, 2^(b−1)−1}
(round, then saturate), used with per-tensor or per-block scaling for uniform quantization.

Packed codes: every format encodes to ``code_bits``-wide codes packed little-endian into bytes
(fp4: two per byte, fp6: four per three bytes, fp8: one per byte): :func:`lowbit.packing.encode`
and :func:`lowbit.packing.decode`.
"""

from __future__ import annotations

import difflib
import math
import re
import struct
from dataclasses import dataclass, field

import torch

__all__ = [
    "FloatFormat",
    "IntFormat",
    "Format",
    "get_format",
    "format_names",
    "register_format",
]

_NAN_STYLES = ("ieee", "fn", "fnuz", "none")


def _f32_bits(value: float) -> int:
    return struct.unpack("<i", struct.pack("<f", value))[0]


def _f64_bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", value))[0]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format (see the module docstring for the value set)."""

    exp_bits: int
    man_bits: int
    bias: int | None = None
    has_inf: bool = True
    nan_style: str = "ieee"
    subnormals: bool = True
    max_value: float | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exp_bits - 1) - 1)
        if not (1 <= self.exp_bits <= 8) or not (0 <= self.man_bits <= 23):
            raise ValueError(
                f"FloatFormat needs 1 <= exp_bits <= 8 and 0 <= man_bits <= 23 "
                f"(values must fit float32), got e{self.exp_bits}m{self.man_bits}"
            )
        if self.nan_style not in _NAN_STYLES:
            raise ValueError(f"nan_style must be one of {_NAN_STYLES}, got {self.nan_style!r}")
        if self.has_inf and self.nan_style != "ieee":
            raise ValueError("has_inf=True requires nan_style='ieee'")
        if self.nan_style == "fn" and self.man_bits == 0:
            raise ValueError("nan_style='fn' needs at least one mantissa bit")
        if self.emin - self.man_bits < -149 or self.emin < -126 and not self.subnormals:
            raise ValueError(f"{self.label}: smallest value lies below float32's range")
        top = self._grid_max()
        if top > 3.4028234663852886e38:
            raise ValueError(f"{self.label}: largest value exceeds float32's range")
        if self.max_value is not None:
            if not (0 < self.max_value) or _on_grid(self.max_value, self) is False:
                raise ValueError(f"max_value={self.max_value} is not a point of {self.label}'s grid")

    # -- derived constants -------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.name or f"e{self.exp_bits}m{self.man_bits}"

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal value, 1 − bias."""
        return 1 - self.bias

    @property
    def _top_field(self) -> int:
        return 2**self.exp_bits - (2 if self.nan_style == "ieee" else 1)

    def _grid_max(self) -> float:
        m = self.man_bits
        frac = 2.0 - 2.0 ** (1 - m) if self.nan_style == "fn" else 2.0 - 2.0**-m
        return frac * 2.0 ** (self._top_field - self.bias)

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(self.max_value) if self.max_value is not None else self._grid_max()

    @property
    def emax(self) -> int:
        return math.floor(math.log2(self.max))

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.emin

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.man_bits) if self.subnormals else 2.0**self.emin

    @property
    def eps(self) -> float:
        """Machine epsilon: distance from 1 to the next larger value, 2^−M."""
        return 2.0**-self.man_bits

    @property
    def has_nan(self) -> bool:
        return self.nan_style != "none"

    @property
    def signed_zero(self) -> bool:
        return self.nan_style != "fnuz"

    @property
    def overflow(self) -> str:
        """What a finite value beyond ±max becomes without saturation: 'inf', 'nan' or 'saturate'."""
        if self.has_inf:
            return "inf"
        return "nan" if self.nan_style in ("fn", "fnuz") else "saturate"

    @property
    def exp_field_bits(self) -> int:
        top = (math.frexp(self.max)[1] - 1) + self.bias  # exponent field of max
        return max(self.exp_bits, top.bit_length())

    @property
    def code_bits(self) -> int:
        """Width of one code on the wire (1 + E + M, wider for capped seed formats)."""
        return 1 + self.exp_field_bits + self.man_bits

    @property
    def bits(self) -> int:
        return self.code_bits

    def nbytes(self, numel: int) -> int:
        """Bytes taken by ``numel`` packed codes."""
        return (numel * self.code_bits + 7) // 8

    def max_bits(self, dtype: torch.dtype = torch.float32) -> int:
        return _f64_bits(self.max) if dtype == torch.float64 else _f32_bits(self.max)

    def describe(self) -> dict:
        return {
            "name": self.label,
            "bits": self.code_bits,
            "exp_bits": self.exp_bits,
            "man_bits": self.man_bits,
            "bias": self.bias,
            "max": self.max,
            "smallest_normal": self.smallest_normal,
            "smallest_subnormal": self.smallest_subnormal,
            "eps": self.eps,
            "inf": self.has_inf,
            "nan": {"ieee": "exp all ones, m≠0", "fn": "all ones", "fnuz": "−0 code", "none": "none"}[
                self.nan_style
            ],
            "overflow": self.overflow,
        }


    def __str__(self) -> str:
        return self.label


def _on_grid(v: float, fmt: FloatFormat) -> bool:
    m, e = math.frexp(v)  # v = m·2^e, m in [0.5, 1)
    e -= 1
    step = 2.0 ** (max(e, fmt.emin) - fmt.man_bits)
    return v / step == round(v / step)


@dataclass(frozen=True)
class IntFormat:
    """Symmetric signed integers {−(2^(b−1)−1), …, 2^(b−1)−1}; rounding saturates at ±max."""

    bits_: int
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (2 <= self.bits_ <= 16):
            raise ValueError(f"IntFormat needs 2..16 bits, got {self.bits_}")

    @property
    def label(self) -> str:
        return self.name or f"int{self.bits_}"

    @property
    def code_bits(self) -> int:
        return self.bits_

    bits = code_bits

    @property
    def max(self) -> float:
        return float(2 ** (self.bits_ - 1) - 1)

    @property
    def emax(self) -> int:
        return math.floor(math.log2(self.max))

    @property
    def smallest_subnormal(self) -> float:
        return 1.0

    smallest_normal = smallest_subnormal
    eps = smallest_subnormal
    has_inf = False
    has_nan = False
    overflow = "saturate"

    def nbytes(self, numel: int) -> int:
        return (numel * self.code_bits + 7) // 8

    def describe(self) -> dict:
        return {
            "name": self.label,
            "bits": self.bits_,
            "exp_bits": 0,
            "man_bits": self.bits_ - 1,
            "bias": 0,
            "max": self.max,
            "smallest_normal": 1.0,
            "smallest_subnormal": 1.0,
            "eps": 1.0,
            "inf": False,
            "nan": "none",
            "overflow": "saturate",
        }


    def __str__(self) -> str:
        return self.label


Format = FloatFormat | IntFormat

# -- the registry ----------------------------------------------------------------------
_REGISTRY: dict[str, Format] = {}
_ALIASES: dict[str, str] = {}


def register_format(name: str, fmt: Format, *aliases: str) -> Format:
    """Add a named format (and aliases) to the registry."""
    if isinstance(fmt, FloatFormat) and fmt.name != name:
        fmt = FloatFormat(fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.has_inf, fmt.nan_style,
                          fmt.subnormals, fmt.max_value, name=name)
    elif isinstance(fmt, IntFormat) and fmt.name != name:
        fmt = IntFormat(fmt.bits_, name=name)
    _REGISTRY[name] = fmt
    for a in aliases:
        _ALIASES[a] = name
    return fmt


register_format("float32", FloatFormat(8, 23), "fp32")
register_format("float16", FloatFormat(5, 10), "fp16", "half")
register_format("bfloat16", FloatFormat(8, 7), "bf16")
register_format("float8_e4m3fn", FloatFormat(4, 3, 7, False, "fn"), "fp8", "fp8_e4m3")
register_format("float8_e4m3", FloatFormat(4, 3, 7, True, "ieee"))
register_format("float8_e5m2", FloatFormat(5, 2, 15, True, "ieee"), "fp8_e5m2")
register_format("float8_e3m4", FloatFormat(3, 4, 3, True, "ieee"))
register_format("float8_e4m3fnuz", FloatFormat(4, 3, 8, False, "fnuz"))
register_format("float8_e5m2fnuz", FloatFormat(5, 2, 16, False, "fnuz"))
register_format("float8_e4m3b11fnuz", FloatFormat(4, 3, 11, False, "fnuz"))
register_format("float6_e3m2fn", FloatFormat(3, 2, 3, False, "none"), "fp6", "fp6_e3m2")
register_format("float6_e2m3fn", FloatFormat(2, 3, 1, False, "none"), "fp6_e2m3")
register_format("float4_e2m1fn", FloatFormat(2, 1, 1, False, "none"), "fp4")
# The "fp-like" quantizers of the low-precision SGD slowdown reproduction (SPEC §1.2):
# exponent clamped to ±(2^(E−1)−1), mantissa rounded to M bits, saturating at 2·2^e_max.
register_format("slowdown_fp4", FloatFormat(2, 1, 2, False, "none", max_value=4.0))
register_format("slowdown_fp8", FloatFormat(4, 3, 8, False, "none", max_value=256.0))
for _b in (2, 3, 4, 6, 8, 16):
    register_format(f"int{_b}", IntFormat(_b))

_EM = re.compile(r"^e(\d+)m(\d+)$")


def format_names() -> list[str]:
    """Every registered name (aliases included)."""
    return sorted(_REGISTRY) + sorted(_ALIASES)


def get_format(name: str | Format) -> Format:
    """Look up a format by name, alias, or an ``e{E}m{M}`` string (IEEE-style: bias 2^(E−1)−1,
    subnormals, inf and NaN).  Unknown names raise ValueError listing the valid ones."""
    if isinstance(name, (FloatFormat, IntFormat)):
        return name
    if not isinstance(name, str):
        raise TypeError(f"format must be a name or a FloatFormat/IntFormat, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    m = _EM.match(key)
    if m:
        return FloatFormat(int(m.group(1)), int(m.group(2)), name=key)
    close = difflib.get_close_matches(key, format_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown format {name!r}.{hint} Valid names: {', '.join(format_names())}, or any 'e<E>m<M>'."
    )
