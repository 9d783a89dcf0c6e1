"""QSGD's and TernGrad's kernels: a level per coordinate by stochastic rounding of |g|/scale·s, with its sign, packed; and the decode."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .blocks import _load4, _pick, _rem
from .common import BLOCK, POINTER, WARPS, _output, _seed, _segment_value, _table, _uniform24
from .packing import _load_packed, _store_packed
from .philox import PHILOX_ROUNDS, block_words


@triton.jit
def _levels_encode_block(x_ptr, out_ptr, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, pid, rem, LBITS: tl.constexpr,
                         W: tl.constexpr, SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                         FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    # the words first: with the loads first, TernGrad's table variant compiles to 19% more instructions
    r0, r1, r2, r3 = block_words(seed_ptr, pid, Q, ROUNDS)
    if SEG == POINTER:
        scale = tl.load(inv_ptr)
        inv1 = tl.where(scale > 0, levels / scale, 0.0)
    x0, x1, x2, x3 = _load4(x_ptr + pid * BLOCK, rem, Q, 0.0, FULL)
    for j in tl.static_range(4):
        r = _pick(j, r0, r1, r2, r3)
        o = j * Q + offs
        x = _pick(j, x0, x1, x2, x3)
        if SEG == POINTER:
            t = tl.abs(x) * inv1
        else:
            t = tl.abs(x) * _segment_value(inv_ptr, seg_ptr + pid * BLOCK, o, rem, SEG)
        fl = tl.floor(t)
        lev = fl + tl.where(_uniform24(r) < t - fl, 1.0, 0.0)
        lev = tl.minimum(tl.where(lev == lev, lev, 0.0), levels).to(tl.int32)  # NaN → 0 (the scale is NaN then)
        c = (((x < 0) & (lev > 0)).to(tl.int32) << LBITS) | lev
        if not FULL:
            c = tl.where(o < rem, c, 0)
        _store_packed(out_ptr, c, pid * BLOCK + j * Q, nbytes, W, Q)


@triton.jit
def _levels_encode_kernel(x_ptr, out_ptr, n, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, LBITS: tl.constexpr,
                          W: tl.constexpr, SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """QSGD and TernGrad: level = ⌊s·|x|/scale⌋ + Bernoulli(frac), code = sign << LBITS | level.
    ``inv_ptr``: the scale (POINTER), or a table of s/scale per segment (TABLE, 0 where the scale is
    0 or not finite)."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _levels_encode_block(x_ptr, out_ptr, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, pid, rem, LBITS, W, SEG,
                             ROUNDS, BLOCK, True)
    else:
        _levels_encode_block(x_ptr, out_ptr, nbytes, inv_ptr, seg_ptr, levels, seed_ptr, pid, rem, LBITS, W, SEG,
                             ROUNDS, BLOCK, False)


@triton.jit
def _levels_decode_kernel(in_ptr, out_ptr, n, nbytes, step_ptr, seg_ptr, levels, LBITS: tl.constexpr,
                          W: tl.constexpr, SEG: tl.constexpr, BLOCK: tl.constexpr):
    """value = level · scale/s with the sign; ``step_ptr``: the scale (POINTER), or a table of
    scale/s per segment (TABLE)."""
    pid = tl.program_id(0).to(tl.int64)
    c = _load_packed(in_ptr, pid * BLOCK, nbytes, W, BLOCK)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    lev = (c & ((1 << LBITS) - 1)).to(tl.float32)
    if SEG == POINTER:
        v = lev * (tl.load(step_ptr) / levels)
    else:
        v = lev * _segment_value(step_ptr, seg_ptr, o, n, SEG)
    v = tl.where(((c >> LBITS) & 1) == 1, -v, v)
    tl.store(out_ptr + o, v, mask=o < n)


def levels_encode(x: torch.Tensor, scale: torch.Tensor, levels: int, lbits: int, generator=None,
                  seg: torch.Tensor | None = None, *, rounds: int = PHILOX_ROUNDS) -> torch.Tensor:
    """Codes of QSGD / TernGrad levels; ``scale``: one value, or one per segment with ``seg``."""
    x = x.contiguous().reshape(-1)
    n, w = x.numel(), 1 + lbits
    nbytes = (n * w + 7) // 8
    out = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    if seg is not None:  # NaN and 0 scales → 0
        scale = torch.where(scale > 0, float(levels) / scale, 0.0).to(torch.float32)
    inv, segp, mode = _table(scale, seg, x.device)
    _levels_encode_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, nbytes, inv, segp if segp is not None else inv,
                                                    float(levels), _seed(x, generator), LBITS=lbits, W=w, SEG=mode,
                                                    ROUNDS=rounds, BLOCK=BLOCK, num_warps=WARPS)
    return out


def levels_decode(codes: torch.Tensor, scale: torch.Tensor, levels: int, lbits: int, n: int,
                  seg: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    out = _output(n, codes.device, out)
    step, segp, mode = _table(scale / float(levels) if seg is not None else scale, seg, codes.device)
    _levels_decode_kernel[(triton.cdiv(n, BLOCK),)](codes, out, n, codes.numel(), step,
                                                    segp if segp is not None else step, float(levels),
                                                    LBITS=lbits, W=1 + lbits,
                                                    SEG=mode, BLOCK=BLOCK, num_warps=WARPS)
    return out
