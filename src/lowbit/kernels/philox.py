"""The random stream of the stochastic kernels in registers: Philox-4x32 through
``tl.randint4x``, seeded from the caller's torch generator — the stream of
:mod:`lowbit.kernels.stream`, which the CPU computes into a buffer (the same words).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .stream import ROUNDS as PHILOX_ROUNDS


@triton.jit
def block_words(seed_ptr, pid, Q: tl.constexpr, ROUNDS: tl.constexpr):
    """The random words of program ``pid`` over BLOCK = 4·Q values, as int32: value j·Q + i of the
    block draws word j of counter pid·Q + i.  Every stochastic kernel of lowbit maps its values to
    the stream this way, so a stream is a function of the seed and the value's index alone, and
    kernels that round the same way give the same values (Q = 1024 in every kernel,
    :data:`lowbit.kernels.stream.Q`: the layout the CPU's words follow)."""
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + tl.arange(0, Q)).to(tl.int32), ROUNDS)
    return (r0.to(tl.int32, bitcast=True), r1.to(tl.int32, bitcast=True), r2.to(tl.int32, bitcast=True),
            r3.to(tl.int32, bitcast=True))
