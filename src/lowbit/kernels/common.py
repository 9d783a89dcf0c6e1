"""What the codec kernels share: the launch shape, per-tensor quantities of a flat buffer (a value, a pointer, or a table indexed by each coordinate's segment), the output buffer and the Philox seed drawn from the caller's generator."""

from __future__ import annotations

import torch
import triton
import triton.language as tl




BLOCK = 4096
WARPS = 8
# how a kernel gets a per-tensor quantity (its SEG argument); constexpr, so the kernels can compare with them
VALUE, POINTER, TABLE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)


@triton.jit
def _segment_value(ptr, seg_ptr, o, n, SEG: tl.constexpr):
    """A per-tensor quantity at coordinates ``o``: ``ptr`` itself (SEG = VALUE), ``*ptr``
    (POINTER), or ``ptr[seg[o]]`` (TABLE: one value per segment of a flat buffer of many
    tensors, ``seg_ptr`` holding each coordinate's segment)."""
    if SEG == TABLE:
        return tl.load(ptr + tl.load(seg_ptr + o, mask=o < n, other=0))
    elif SEG == POINTER:
        return tl.load(ptr)
    else:
        return ptr


def _output(n: int, device, out=None) -> torch.Tensor:
    """``out`` (a contiguous float32 vector of n values, written in place) or a new vector."""
    if out is None:
        return torch.empty(n, dtype=torch.float32, device=device)
    if out.dtype != torch.float32 or out.numel() != n or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of {n} elements")
    return out if out.dim() == 1 else out.view(-1)


def _table(values, seg, device):
    """(kernel argument, SEG mode) of a per-tensor quantity: a number (VALUE), a one-element tensor
    (POINTER), or a vector indexed by the coordinates' segments ``seg`` (TABLE)."""
    if seg is not None:
        return values.to(device=device, dtype=torch.float32), seg, TABLE.value
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.float32), values, POINTER.value
    return float(values), None, VALUE.value


def _seed(x: torch.Tensor, generator) -> torch.Tensor:
    gdev = generator.device if generator is not None else x.device
    return torch.randint(0, 2**31 - 1, (1,), device=gdev, generator=generator, dtype=torch.int64).to(x.device)


@triton.jit
def _uniform24(r):
    """A uniform float in [0, 1) from the top 24 bits of a random word (exact multiples of 2^-24)."""
    return ((r.to(tl.int32, bitcast=True) >> 8) & 0xFFFFFF).to(tl.float32) * (1.0 / 16777216.0)
