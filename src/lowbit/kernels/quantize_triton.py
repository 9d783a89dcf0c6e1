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
from .rounding import _constants, _round_bits

BLOCK = 4096
NUM_WARPS = 8

@triton.jit
def _quantize_block(x_ptr, y_ptr, seed_ptr, pid, rem, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr,
                    LOW_EXP: tl.constexpr, ADDER: tl.constexpr, MAX_BITS: tl.constexpr, OVER_BITS: tl.constexpr, INF_OUT: tl.constexpr,
                    FNUZ: tl.constexpr, MODE: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                    FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, MODE == 1, ROUNDS)
    for j in tl.static_range(4):
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        rnd = _pick(j, r0, r1, r2, r3) if MODE == 1 else b  # the formulas use its low 30 bits at most
        y = _round_bits(b, rnd, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, MAX_BITS, OVER_BITS, INF_OUT, FNUZ, MODE)
        _store(y_ptr + pid * BLOCK, y.to(tl.float32, bitcast=True), j * Q + offs, rem, FULL)


@triton.jit
def _quantize_kernel(x_ptr, y_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                     LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, MAX_BITS: tl.constexpr,
                     OVER_BITS: tl.constexpr, INF_OUT: tl.constexpr, FNUZ: tl.constexpr,
                     MODE: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _quantize_block(x_ptr, y_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, MAX_BITS, OVER_BITS, INF_OUT,
                        FNUZ, MODE, ROUNDS, BLOCK, True)
    else:
        _quantize_block(x_ptr, y_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, MAX_BITS, OVER_BITS, INF_OUT,
                        FNUZ, MODE, ROUNDS, BLOCK, False)


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
