"""The constants of a format's rounding, shared by the Triton kernels (:mod:`.rounding`) and the
CPU's compiled loops: plain Python, importable without Triton."""

from __future__ import annotations

import torch

from ..formats import FloatFormat

_NEAREST, _STOCHASTIC, _ZERO = 0, 1, 2


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
    return dict(S=k["S"], EMIN_FIELD=k["EMIN_FIELD"], LOW=k["LOW"], LOW_EXP=k["LOW_EXP"], ADDER=k["ADDER"],
                SUB=fmt.subnormals, MAX_CODE=max_code, MODE=k["MODE"], FNUZ=k["FNUZ"], M=m, EF=fmt.exp_field_bits,
                OVER_CODE=over,
                INF_CODE=over if flagged else code_of(k["INF_OUT"]),
                NAN_CODE=over if flagged else nan_code)


def _constants(fmt: FloatFormat, rounding: str, saturate: bool) -> dict:
    """The constants of ``_round_bits`` (``lowbit.quantize``) for ``fmt``."""
    max_bits = fmt.max_bits(torch.float32)
    nan_bits, inf_bits = 0x7FC00000, 0x7F800000
    if saturate or rounding == "zero" or fmt.overflow == "saturate":
        over = max_bits
    else:
        over = inf_bits if fmt.overflow == "inf" else nan_bits
    if fmt.has_inf:
        inf_out = inf_bits
    else:
        inf_out = max_bits if saturate or fmt.overflow == "saturate" else nan_bits
    m2 = fmt.man_bits if fmt.subnormals else 0
    emin_field = fmt.emin + 127
    return dict(
        S=23 - fmt.man_bits,
        EMIN_FIELD=emin_field,
        LOW=bool(emin_field >= 2 or not fmt.subnormals),
        LOW_EXP=fmt.emin - m2,
        MAX_BITS=max_bits,
        OVER_BITS=over,
        INF_OUT=inf_out,
        FNUZ=not fmt.signed_zero,
        MODE={"nearest": _NEAREST, "stochastic": _STOCHASTIC, "zero": _ZERO}[rounding],
        # nearest rounding on the float adder: formats with subnormals whose largest binade e_max
        # keeps s·2^23 finite, e_max + 127 + S ≤ 254 (all but bfloat16)
        ADDER=bool(rounding == "nearest" and fmt.subnormals and (max_bits >> 23) + 23 - fmt.man_bits <= 254),
    )
