"""Fused Triton kernel for :func:`lowbit.quantize` on CUDA float32 tensors.

One pass: each element is read once (4 bytes) and written once (4 bytes); the rounding is integer
arithmetic on the bit pattern, identical to the torch path in :mod:`lowbit.quantize`
(``_quantize_float``), so nearest rounding gives the same bits.  Stochastic rounding draws its
bits from Philox-4x32 (:mod:`.philox`, ``PHILOX_ROUNDS`` rounds: value j·Q + i of a program's block
of 4·Q takes word j of counter pid·Q + i, as in every lowbit kernel), seeded from the caller's torch
generator, so a fixed seed gives identical output on the same device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FloatFormat, get_format
from ..ste import straight_through
from .blocks import _load_block, _pick, _rem, _store
from .philox import PHILOX_ROUNDS

BLOCK = 4096
NUM_WARPS = 8

_NEAREST, _STOCHASTIC, _ZERO = 0, 1, 2


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
        extra = tl.maximum(sh - 30, 0)
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
def _round_bits(b, rnd, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr,
                LOW_EXP: tl.constexpr, MAX_BITS: tl.constexpr, OVER_BITS: tl.constexpr,
                INF_OUT: tl.constexpr, FNUZ: tl.constexpr, MODE: tl.constexpr):
    a = b & 0x7FFFFFFF
    e = a >> 23
    # normal range of the format: round the bit pattern at bit S
    if S == 0:
        res = a
    elif MODE == 0:
        res = (a + ((1 << (S - 1)) - 1) + ((a >> S) & 1)) & ~((1 << S) - 1)
    elif MODE == 1:
        res = (a + (rnd & ((1 << S) - 1))) & ~((1 << S) - 1)
    else:
        res = a & ~((1 << S) - 1)
    if LOW:
        k = _grid_count(a, e, rnd, LOW_EXP, MODE)
        low = (k.to(tl.float32) * (2.0 ** LOW_EXP)).to(tl.int32, bitcast=True)
        res = tl.where(e < EMIN_FIELD, low, res)
    # overflow of a finite x; then ±inf → INF_OUT and NaN → itself, which replace any res of theirs
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
def _quantize_block(x_ptr, y_ptr, seed_ptr, pid, rem, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr,
                    LOW_EXP: tl.constexpr, MAX_BITS: tl.constexpr, OVER_BITS: tl.constexpr, INF_OUT: tl.constexpr,
                    FNUZ: tl.constexpr, MODE: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                    FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, MODE == 1, ROUNDS)
    for j in tl.static_range(4):
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        rnd = _pick(j, r0, r1, r2, r3) if MODE == 1 else b  # the formulas use its low 30 bits at most
        y = _round_bits(b, rnd, S, EMIN_FIELD, LOW, LOW_EXP, MAX_BITS, OVER_BITS, INF_OUT, FNUZ, MODE)
        _store(y_ptr + pid * BLOCK, y.to(tl.float32, bitcast=True), j * Q + offs, rem, FULL)


@triton.jit
def _quantize_kernel(x_ptr, y_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                     LOW: tl.constexpr, LOW_EXP: tl.constexpr, MAX_BITS: tl.constexpr,
                     OVER_BITS: tl.constexpr, INF_OUT: tl.constexpr, FNUZ: tl.constexpr,
                     MODE: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _quantize_block(x_ptr, y_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, MAX_BITS, OVER_BITS, INF_OUT,
                        FNUZ, MODE, ROUNDS, BLOCK, True)
    else:
        _quantize_block(x_ptr, y_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, MAX_BITS, OVER_BITS, INF_OUT,
                        FNUZ, MODE, ROUNDS, BLOCK, False)


def _constants(fmt: FloatFormat, rounding: str, saturate: bool) -> dict:
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
    )


def quantize_triton(x: torch.Tensor, fmt: FloatFormat, rounding: str, saturate: bool, generator=None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    xc = x.contiguous()
    y = torch.empty_like(xc) if out is None else out
    n = xc.numel()
    if rounding == "stochastic":
        gdev = generator.device if generator is not None else xc.device
        seed = torch.randint(0, 2**31 - 1, (1,), device=gdev, generator=generator, dtype=torch.int64)
        seed = seed.to(xc.device, non_blocking=True)
    else:
        seed = xc  # unused
    grid = (triton.cdiv(n, BLOCK),)
    _quantize_kernel[grid](xc, y, n, seed, **_constants(fmt, rounding, saturate), ROUNDS=PHILOX_ROUNDS, BLOCK=BLOCK,
                           num_warps=NUM_WARPS)
    return y.reshape(x.shape)


@torch.library.triton_op("lowbit::quantize_triton", mutates_args={})
def quantize_op(x: torch.Tensor, fmt: str, rounding: str, saturate: bool) -> torch.Tensor:
    """The kernel as a registered Triton operator (nearest or toward-zero rounding of a CUDA
    float32 tensor): torch.compile sees the kernel itself, not a Python wrapper around it."""
    xc = x.contiguous()
    y = torch.empty_like(xc)
    n = xc.numel()
    torch.library.wrap_triton(_quantize_kernel)[(triton.cdiv(n, BLOCK),)](
        xc, y, n, xc, **_constants(get_format(fmt), rounding, saturate), ROUNDS=PHILOX_ROUNDS, BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return y


def _op_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.fmt = inputs[1]


def _op_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return straight_through(grad, x, get_format(ctx.fmt)), None, None, None


quantize_op.register_autograd(_op_backward, setup_context=_op_setup)
