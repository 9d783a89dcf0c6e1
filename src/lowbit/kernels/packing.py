"""Codes of 2, 4, 6 or 8 bits packed little-endian into bytes, and unpacked, in registers."""

from __future__ import annotations

import triton
import triton.language as tl




@triton.jit
def _store_packed(out_ptr, c, base, nbytes, W: tl.constexpr, Q: tl.constexpr):
    """Store Q codes of W ∈ {2, 4, 6, 8} bits, little-endian, at byte offset base·W/8."""
    if W == 8:
        ob = base + tl.arange(0, Q)
        tl.store(out_ptr + ob, c.to(tl.uint8), mask=ob < nbytes)
    elif W == 6:
        q = tl.reshape(c, (Q // 4, 2, 2))
        a, b = tl.split(q)
        c0, c2 = tl.split(a)
        c1, c3 = tl.split(b)
        word = c0 | (c1 << 6) | (c2 << 12) | (c3 << 18)
        ob = (base // 4) * 3 + 3 * tl.arange(0, Q // 4)
        tl.store(out_ptr + ob, (word & 255).to(tl.uint8), mask=ob < nbytes)
        tl.store(out_ptr + ob + 1, ((word >> 8) & 255).to(tl.uint8), mask=ob + 1 < nbytes)
        tl.store(out_ptr + ob + 2, ((word >> 16) & 255).to(tl.uint8), mask=ob + 2 < nbytes)
    else:
        PER: tl.constexpr = 8 // W
        q = tl.reshape(c, (Q // PER, PER))
        byte = tl.sum(q << (tl.arange(0, PER) * W)[None, :], axis=1)
        ob = base // PER + tl.arange(0, Q // PER)
        tl.store(out_ptr + ob, byte.to(tl.uint8), mask=ob < nbytes)


@triton.jit
def _load_packed(in_ptr, base, nbytes, W: tl.constexpr, Q: tl.constexpr):
    """Inverse of _store_packed: Q codes (int32) from byte offset base·W/8."""
    if W == 8:
        ob = base + tl.arange(0, Q)
        return tl.load(in_ptr + ob, mask=ob < nbytes, other=0).to(tl.int32)
    elif W == 6:
        ob = (base // 4) * 3 + 3 * tl.arange(0, Q // 4)
        b0 = tl.load(in_ptr + ob, mask=ob < nbytes, other=0).to(tl.int32)
        b1 = tl.load(in_ptr + ob + 1, mask=ob + 1 < nbytes, other=0).to(tl.int32)
        b2 = tl.load(in_ptr + ob + 2, mask=ob + 2 < nbytes, other=0).to(tl.int32)
        word = b0 | (b1 << 8) | (b2 << 16)
        c0, c1, c2, c3 = word & 63, (word >> 6) & 63, (word >> 12) & 63, (word >> 18) & 63
        return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), (Q,))
    else:
        PER: tl.constexpr = 8 // W
        ob = base // PER + tl.arange(0, Q // PER)
        byte = tl.load(in_ptr + ob, mask=ob < nbytes, other=0).to(tl.int32)
        c = (byte[:, None] >> (tl.arange(0, PER) * W)[None, :]) & ((1 << W) - 1)
        return tl.reshape(c, (Q,))
