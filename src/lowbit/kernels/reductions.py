"""Reductions over a flat buffer: ‖x‖₂ in one read, per-tensor statistics of g and g̃, and per-tensor
sums by sign (1-bit SGD's two means)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import BLOCK, WARPS


@triton.jit
def _sumsq_kernel(x_ptr, part_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + o, mask=o < n, other=0.0).to(tl.float64)
    tl.store(part_ptr + pid, tl.sum(x * x, axis=0))


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖₂ of a CUDA float32 tensor in one read: float64 squares summed per block, then the
    partial sums (a fixed order: deterministic).  Returns a 0-d float32 tensor."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    grid = max(1, triton.cdiv(n, BLOCK))
    part = torch.empty(grid, dtype=torch.float64, device=x.device)
    _sumsq_kernel[(grid,)](x, part, n, BLOCK=BLOCK, num_warps=WARPS)
    return part.sum().sqrt().to(torch.float32)


@triton.jit
def _stats_kernel(g_ptr, q_ptr, start_ptr, len_ptr, part_ptr, BLOCK: tl.constexpr):
    p = tl.program_id(0)
    start = tl.load(start_ptr + p)
    length = tl.load(len_ptr + p)
    o = tl.arange(0, BLOCK)
    m = o < length
    g = tl.load(g_ptr + start + o, mask=m, other=0.0).to(tl.float64)
    q = tl.load(q_ptr + start + o, mask=m, other=0.0).to(tl.float64)
    d = q - g
    nz = (g != 0) & m
    tl.store(part_ptr + p * 5 + 0, tl.sum(g * g, axis=0))
    tl.store(part_ptr + p * 5 + 1, tl.sum(q * q, axis=0))
    tl.store(part_ptr + p * 5 + 2, tl.sum(d * d, axis=0))
    tl.store(part_ptr + p * 5 + 3, tl.sum(nz.to(tl.float64), axis=0))
    tl.store(part_ptr + p * 5 + 4, tl.sum((nz & (q == 0)).to(tl.float64), axis=0))


@triton.jit
def _rows_sum_kernel(part_ptr, first_ptr, count_ptr, out_ptr, MOST: tl.constexpr, R: tl.constexpr, K: tl.constexpr):
    """Row j of ``out``: the sum of the ``count[j]`` rows of K partial sums from row ``first[j]``."""
    j = tl.program_id(0)
    first = tl.load(first_ptr + j)
    end = first + tl.load(count_ptr + j)
    k = tl.arange(0, 8)[None, :]
    acc = tl.zeros((8,), dtype=tl.float64)
    for i in range(0, MOST, R):  # R of the tensor's blocks at a time, in order: a fixed summation order
        rows = first + i + tl.arange(0, R)[:, None]
        acc += tl.sum(tl.load(part_ptr + rows * K + k, mask=(rows < end) & (k < K), other=0.0), axis=0)
    k1 = tl.arange(0, 8)
    tl.store(out_ptr + j * K + k1, acc, mask=k1 < K)


def _per_tensor(part: torch.Tensor, plan) -> torch.Tensor:
    """The blocks' partial sums (one row of K per block) added per tensor in a fixed order: 64
    rows at a time, or 512 (eight warps) where a tensor has more than 64 blocks, so that a tensor of
    2^26 values takes 32 steps, not 256."""
    _, _, per, first, most = plan
    out = torch.empty(per.numel(), part.shape[1], dtype=torch.float64, device=part.device)
    if per.numel():
        r, warps = (64, 2) if most <= 64 else (512, 8)
        _rows_sum_kernel[(per.numel(),)](part, first, per, out, MOST=most, R=r, K=part.shape[1], num_warps=warps)
    return out


def tensor_sums(g: torch.Tensor, q: torch.Tensor, plan) -> torch.Tensor:
    """Per tensor of a flat buffer: Σg², Σg̃², Σ(g̃ − g)², #{g ≠ 0}, #{g ≠ 0, g̃ = 0} (float64,
    m × 5) in one read of g and g̃.  ``plan``: (starts, lengths, blocks per tensor, first block of
    each tensor, the most blocks of one tensor) of blocks that each lie inside one tensor; the blocks' partial sums are added per
    tensor in a fixed order (deterministic)."""
    starts, lengths = plan[:2]
    part = torch.empty(starts.numel(), 5, dtype=torch.float64, device=g.device)
    if starts.numel():
        _stats_kernel[(starts.numel(),)](g, q, starts, lengths, part, BLOCK=BLOCK, num_warps=WARPS)
    return _per_tensor(part, plan)


@triton.jit
def _sign_sums_kernel(x_ptr, start_ptr, len_ptr, part_ptr, BLOCK: tl.constexpr):
    p = tl.program_id(0)
    start = tl.load(start_ptr + p)
    o = tl.arange(0, BLOCK)
    m = o < tl.load(len_ptr + p)
    x = tl.load(x_ptr + start + o, mask=m, other=0.0)
    pos = (x >= 0) & m
    tl.store(part_ptr + p * 3 + 0, tl.sum(pos.to(tl.float64), axis=0))
    tl.store(part_ptr + p * 3 + 1, tl.sum(tl.where(pos, x, 0.0).to(tl.float64), axis=0))
    tl.store(part_ptr + p * 3 + 2, tl.sum(tl.where(pos, 0.0, x).to(tl.float64), axis=0))


def sign_sums(x: torch.Tensor, plan) -> torch.Tensor:
    """Per tensor of a flat buffer: #{x ≥ 0}, Σ_{x ≥ 0} x and Σ_{x < 0} x (float64, m × 3; NaN counts
    as negative, so a NaN input makes the last sum NaN) in one read of x; ``plan`` as in
    :func:`tensor_sums` (deterministic)."""
    starts, lengths = plan[:2]
    part = torch.empty(starts.numel(), 3, dtype=torch.float64, device=x.device)
    if starts.numel():
        _sign_sums_kernel[(starts.numel(),)](x, starts, lengths, part, BLOCK=BLOCK, num_warps=WARPS)
    return _per_tensor(part, plan)
