"""The random stream of the stochastic kernels: Philox-4x32 (Salmon, Moraes, Dror and Shaw,
"Parallel random numbers: as easy as 1, 2, 3", SC'11) through ``tl.randint4x``, seeded from the
caller's torch generator.

``PHILOX_ROUNDS = 7``: Salmon et al. find 7 rounds free of BigCrush failures (10, cuRAND's and
``tl.randint4x``'s default, adds a safety margin); the stochastic kernels are bound by their
integer work, and 7 rounds make them faster (BENCHMARKS.md).
"""

from __future__ import annotations

import triton
import triton.language as tl

PHILOX_ROUNDS = 7


@triton.jit
def block_words(seed_ptr, pid, Q: tl.constexpr, ROUNDS: tl.constexpr):
    """The random words of program ``pid`` over BLOCK = 4·Q values, as int32: value j·Q + i of the
    block draws word j of counter pid·Q + i.  Every stochastic kernel of lowbit maps its values to
    the stream this way, so a stream is a function of the seed and the value's index alone, and
    kernels that round the same way give the same values."""
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + tl.arange(0, Q)).to(tl.int32), ROUNDS)
    return (r0.to(tl.int32, bitcast=True), r1.to(tl.int32, bitcast=True), r2.to(tl.int32, bitcast=True),
            r3.to(tl.int32, bitcast=True))
