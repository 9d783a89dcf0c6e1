"""Fused Triton kernels for the compressors' encode and decode on CUDA float32 tensors.

Each kernel reads its input once and writes its output once:

* ``cast_encode``: rounding and the format's codes in one pass (``_round_code``: the rounding of
  the quantize kernel, :mod:`.rounding`, taken as the format's code), 8-bit codes one
  per byte, 4-bit codes packed in registers; ``cast_block_encode``: the same under OCP MX block
  scaling (per-block E8M0 exponents from the block's max, in the same pass); ``cast_decode``:
  codes → values by arithmetic on the code's fields (no table gathers), times the block scales.
* ``natural_encode`` / ``natural_decode``: stochastic rounding to a power of two, the exponent byte
  and the sign bit packed eight to a byte.
* ``sign_encode`` / ``sign_decode``: sign bits packed eight to a byte with per-block partial sums of
  |g| (summed in a fixed order: deterministic), and the scaled (or two-valued) decode;
  ``sign_sums``: per tensor of a flat buffer, the count and the sums of its entries by sign.
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

from .cast import block_fusable, cast_block_encode, cast_decode, cast_encode
from .common import BLOCK, WARPS
from .intsgd import int8_decode, int8_encode, round_stochastic
from .levels import levels_decode, levels_encode
from .natural import natural_decode, natural_encode
from .philox import PHILOX_ROUNDS
from .reductions import l2norm, sign_sums, tensor_sums
from .rounding import _code_constants, _round_code  # noqa: F401  (the tuning script and the tests read them)
from .sign import sign_decode, sign_encode

__all__ = ["BLOCK", "PHILOX_ROUNDS", "WARPS", "block_fusable", "cast_block_encode", "cast_decode", "cast_encode", "int8_decode", "int8_encode", "l2norm", "levels_decode", "levels_encode", "natural_decode", "natural_encode", "round_stochastic", "sign_decode", "sign_encode", "sign_sums", "tensor_sums"]
