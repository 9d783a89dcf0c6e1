"""How the element-wise kernels walk their block: a program of BLOCK = 4·Q values reads them as
four quarters of Q, through 32-bit offsets from the program's 64-bit base.  Every program but the
last has a full block and takes its loads and stores without masks (FULL): a mask costs a compare
per value and, as the count of values left is not known to be a multiple of 4, keeps the
compiler from issuing 16-byte loads — both weigh on kernels bound by their integer work."""

from __future__ import annotations

import triton
import triton.language as tl

from .philox import block_words


@triton.jit
def _rem(n, pid, BLOCK: tl.constexpr):
    """How many of program ``pid``'s BLOCK values exist (at most BLOCK), as int32."""
    return tl.minimum(n - pid * BLOCK, BLOCK).to(tl.int32)


@triton.jit
def _pick(j: tl.constexpr, v0, v1, v2, v3):
    """The j-th of four values (j a compile-time constant)."""
    if j == 0:
        return v0
    elif j == 1:
        return v1
    elif j == 2:
        return v2
    else:
        return v3


@triton.jit
def _load4(ptr, rem, Q: tl.constexpr, other, FULL: tl.constexpr = False, o=None):
    """The four quarters of the Q·4 values at ``ptr`` (the program's base), the first ``rem`` of
    them real, all loads issued before any use: the kernels store between quarters, and a load
    after a store (the pointers may alias) would otherwise wait for it, leaving one load in flight
    per thread instead of four.  ``o``: the offsets within a quarter, in the shape wanted
    (default ``arange(Q)``)."""
    if o is None:
        o = tl.arange(0, Q)
    if FULL:
        v0 = tl.load(ptr + o)
        v1 = tl.load(ptr + o + Q)
        v2 = tl.load(ptr + o + 2 * Q)
        v3 = tl.load(ptr + o + 3 * Q)
    else:
        v0 = tl.load(ptr + o, mask=o < rem, other=other)
        v1 = tl.load(ptr + o + Q, mask=o + Q < rem, other=other)
        v2 = tl.load(ptr + o + 2 * Q, mask=o + 2 * Q < rem, other=other)
        v3 = tl.load(ptr + o + 3 * Q, mask=o + 3 * Q < rem, other=other)
    return v0, v1, v2, v3


@triton.jit
def _store(ptr, v, o, rem, FULL: tl.constexpr):
    """``ptr[o] = v`` where ``o < rem`` (everywhere when FULL)."""
    if FULL:
        tl.store(ptr + o, v)
    else:
        tl.store(ptr + o, v, mask=o < rem)


@triton.jit
def _load_block(x_ptr, seed_ptr, pid, rem, Q: tl.constexpr, FULL: tl.constexpr, STOCHASTIC: tl.constexpr,
                ROUNDS: tl.constexpr):
    """Program ``pid``'s four quarters of x and, when STOCHASTIC, their random words (value j·Q + i
    takes word j of counter pid·Q + i, :func:`~lowbit.kernels.philox.block_words`); otherwise the
    words are the values' bit patterns, unused."""
    x0, x1, x2, x3 = _load4(x_ptr + pid * (4 * Q), rem, Q, 0.0, FULL)
    if STOCHASTIC:
        r0, r1, r2, r3 = block_words(seed_ptr, pid, Q, ROUNDS)
    else:
        r0 = x0.to(tl.int32, bitcast=True)
        r1 = x1.to(tl.int32, bitcast=True)
        r2 = x2.to(tl.int32, bitcast=True)
        r3 = x3.to(tl.int32, bitcast=True)
    return x0, x1, x2, x3, r0, r1, r2, r3
