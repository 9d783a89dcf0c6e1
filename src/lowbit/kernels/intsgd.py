"""IntSGD's kernels: Int(α·g) into int8, saturating at ±lim, its decode, and Int(α·x) as float32 integers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .blocks import _load_block, _pick, _rem, _store
from .common import BLOCK, WARPS, _output, _seed, _segment_value, _table
from .philox import PHILOX_ROUNDS


@triton.jit
def _int8_encode_block(x_ptr, out_ptr, alpha, seg_ptr, lim, seed_ptr, pid, rem, STOCHASTIC: tl.constexpr,
                       SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr, FULL: tl.constexpr):
    """One program's integers; returns max |x| as a pattern (NaN-propagating: ≥ 0x7F800000 where
    an input is not finite)."""
    Q: tl.constexpr = BLOCK // 4
    MAGIC: tl.constexpr = 12582912.0
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, STOCHASTIC, ROUNDS)
    amax = tl.zeros((Q,), tl.float32)  # max |x|, NaN if any is NaN
    for j in tl.static_range(4):
        o = j * Q + offs
        x = _pick(j, x0, x1, x2, x3)
        amax = tl.maximum(amax, tl.abs(x), propagate_nan=tl.PropagateNan.ALL)
        t = tl.minimum(tl.maximum(x * _segment_value(alpha, seg_ptr + pid * BLOCK, o, rem, SEG), -lim), lim)
        u = t + MAGIC  # the pattern's low byte is the nearest integer to t as an int8
        if STOCHASTIC:  # ⌊t⌋ + Bernoulli(t − ⌊t⌋), p a multiple of 2^-23 in [0, 1)
            k = u - MAGIC
            r = _pick(j, r0, r1, r2, r3)
            fl = k - tl.where(k > t, 1.0, 0.0)
            p = (((r >> 9) & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True) - 1.0
            u = (fl + tl.where(p < t - fl, 1.0, 0.0)) + MAGIC
        _store(out_ptr + pid * BLOCK, u.to(tl.int32, bitcast=True).to(tl.int8), o, rem, FULL)
    return tl.max(amax.to(tl.int32, bitcast=True), axis=0)


@triton.jit
def _int8_encode_kernel(x_ptr, out_ptr, fin_ptr, n, alpha, seg_ptr, lim, seed_ptr, STOCHASTIC: tl.constexpr,
                        SEG: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Int(α·x) saturated at ±lim, with full-rate float adds only: t is clamped first (rounding
    is monotone, lim an integer), then M = 1.5·2^23 rounds |t| < 2^22 to the nearest integer k,
    ties to even, in t + M, whose pattern's low byte is k as an int8.
    SEG: ``alpha`` points at one α per segment, ``seg_ptr`` at each coordinate's segment."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        amax = _int8_encode_block(x_ptr, out_ptr, alpha, seg_ptr, lim, seed_ptr, pid, rem, STOCHASTIC, SEG, ROUNDS,
                                  BLOCK, True)
    else:
        amax = _int8_encode_block(x_ptr, out_ptr, alpha, seg_ptr, lim, seed_ptr, pid, rem, STOCHASTIC, SEG, ROUNDS,
                                  BLOCK, False)
    tl.store(fin_ptr + pid, (amax < 0x7F800000).to(tl.uint8))


@triton.jit
def _int8_decode_kernel(c_ptr, fin_ptr, out_ptr, n, inv_alpha, seg_ptr, SEG: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    c = tl.load(c_ptr + o, mask=o < n, other=0).to(tl.float32)
    v = tl.where(tl.load(fin_ptr) == 0, float("nan"), c * _segment_value(inv_alpha, seg_ptr, o, n, SEG))
    tl.store(out_ptr + o, v, mask=o < n)


def int8_encode(x: torch.Tensor, alpha, lim: int, stochastic: bool, generator=None, seg=None, *,
                rounds: int = PHILOX_ROUNDS):
    """(int8 integers of Int(α·x), one byte: was every input finite); ``alpha``: a number, or a
    vector of one α per segment with ``seg``."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    out = torch.empty(n, dtype=torch.int8, device=x.device)
    fin = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.uint8, device=x.device)
    seed = _seed(x, generator) if stochastic else x
    a, segp, mode = _table(alpha, seg, x.device)
    _int8_encode_kernel[(triton.cdiv(n, BLOCK),)](x, out, fin, n, a, segp if segp is not None else x, float(lim), seed,
                                                  STOCHASTIC=stochastic, SEG=mode, ROUNDS=rounds, BLOCK=BLOCK,
                                                  num_warps=WARPS)
    return out, fin.amin().reshape(1)


def int8_decode(c: torch.Tensor, finite: torch.Tensor, alpha, seg=None, inv_alpha=None, out=None) -> torch.Tensor:
    """Int/α; with ``seg``, ``inv_alpha`` is the vector of 1/α per segment."""
    n = c.numel()
    out = _output(n, c.device, out)
    inv, segp, mode = _table(inv_alpha if seg is not None else 1.0 / float(alpha), seg, c.device)
    _int8_decode_kernel[(triton.cdiv(n, BLOCK),)](c, finite, out, n, inv, segp if segp is not None else c, SEG=mode,
                                                  BLOCK=BLOCK, num_warps=WARPS)
    return out


@triton.jit
def _round_stochastic_block(x_ptr, out_ptr, alpha, seed_ptr, pid, rem, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                            FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, True, ROUNDS)
    for j in tl.static_range(4):
        t = _pick(j, x0, x1, x2, x3) * alpha
        fl = tl.floor(t)
        r = _pick(j, r0, r1, r2, r3)
        p = (((r >> 9) & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True) - 1.0
        _store(out_ptr + pid * BLOCK, fl + tl.where(p < t - fl, 1.0, 0.0), j * Q + offs, rem, FULL)


@triton.jit
def _round_stochastic_kernel(x_ptr, out_ptr, n, alpha, seed_ptr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Int(α·x) = ⌊t⌋ + Bernoulli(t − ⌊t⌋) as float32 integers, every t (for |t| ≥ 2^23, t − ⌊t⌋ = 0:
    t itself; NaN and ±inf stay), p a multiple of 2^-23 as in the int8 kernel."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _round_stochastic_block(x_ptr, out_ptr, alpha, seed_ptr, pid, rem, ROUNDS, BLOCK, True)
    else:
        _round_stochastic_block(x_ptr, out_ptr, alpha, seed_ptr, pid, rem, ROUNDS, BLOCK, False)


def round_stochastic(x: torch.Tensor, alpha: float = 1.0, generator=None, out=None, *,
                     rounds: int = PHILOX_ROUNDS) -> torch.Tensor:
    """IntSGD's Int(α·x) on a CUDA float32 tensor in one pass (float32 integers)."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    out = torch.empty_like(x) if out is None else out.reshape(-1)
    _round_stochastic_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, float(alpha), _seed(x, generator),
                                                        ROUNDS=rounds, BLOCK=BLOCK, num_warps=WARPS)
    return out
