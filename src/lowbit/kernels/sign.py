"""Sign-bit kernels (signSGD, 1-bit SGD): sign bits packed eight to a byte with per-block partial sums
of |g| (summed in a fixed order: deterministic), and the two-valued decode."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import BLOCK, WARPS, _output, _segment_value, _table


@triton.jit
def _sign_encode_kernel(x_ptr, sign_ptr, part_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + o, mask=o < n, other=0.0)
    tl.store(part_ptr + pid, tl.sum(tl.abs(x), axis=0))
    s = tl.reshape(((x >= 0) & (o < n)).to(tl.int32), (BLOCK // 8, 8))
    byte = tl.sum(s << tl.arange(0, 8)[None, :], axis=1)
    ob = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    tl.store(sign_ptr + ob, byte.to(tl.uint8), mask=ob < (n + 7) // 8)


@triton.jit
def _sign_decode_kernel(sign_ptr, scale_ptr, low_ptr, seg_ptr, out_ptr, n, SEG: tl.constexpr, TWO: tl.constexpr,
                        BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    ob = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    byte = tl.load(sign_ptr + ob, mask=ob < (n + 7) // 8, other=0).to(tl.int32)
    s = tl.reshape((byte[:, None] >> tl.arange(0, 8)[None, :]) & 1, (BLOCK,))
    o = pid * BLOCK + tl.arange(0, BLOCK)
    scale = _segment_value(scale_ptr, seg_ptr, o, n, SEG)
    if TWO:  # the set bits decode to scale, the others to low
        v = tl.where(s != 0, scale, _segment_value(low_ptr, seg_ptr, o, n, SEG))
    else:
        v = (s.to(tl.float32) * 2 - 1) * scale
    tl.store(out_ptr + o, v, mask=o < n)


def sign_encode(x: torch.Tensor, scale: bool = True):
    """(bits x ≥ 0 packed eight to a byte, the scale ‖x‖₁/n as a one-element tensor); only the bits
    without ``scale`` (the partial sums are not added up: two launches fewer)."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    grid = triton.cdiv(n, BLOCK)
    s = torch.empty((n + 7) // 8, dtype=torch.uint8, device=x.device)
    part = torch.empty(grid, dtype=torch.float32, device=x.device)
    _sign_encode_kernel[(grid,)](x, s, part, n, BLOCK=BLOCK, num_warps=WARPS)
    return (s, (part.sum() / max(1, n)).reshape(1)) if scale else s


def sign_decode(s: torch.Tensor, scale: torch.Tensor, n: int, seg=None, out=None, low=None) -> torch.Tensor:
    """±scale, or with ``low``: scale where the bit is set and low elsewhere (1-bit SGD's two
    means); ``scale`` and ``low``: one value, or one per segment with ``seg``."""
    out = _output(n, s.device, out)
    sc, segp, mode = _table(scale, seg, s.device)
    lo = sc
    if low is not None:
        lo, _, low_mode = _table(low, seg, s.device)
        if low_mode != mode:
            raise ValueError("scale and low must be given alike: both numbers, or both tensors")
    _sign_decode_kernel[(triton.cdiv(n, BLOCK),)](s, sc, lo, segp if segp is not None else sc, out, n, SEG=mode,
                                                  TWO=low is not None, BLOCK=BLOCK, num_warps=WARPS)
    return out
