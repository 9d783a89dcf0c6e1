"""Natural compression's kernels: stochastic rounding to a power of two, the exponent byte and the sign bit packed eight to a byte."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .blocks import _load_block, _pick, _rem, _store
from .common import BLOCK, WARPS, _output, _seed
from .philox import PHILOX_ROUNDS


@triton.jit
def _natural_encode_block(x_ptr, exp_ptr, sign_ptr, seed_ptr, pid, rem, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                          FULL: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, True, ROUNDS)
    for j in tl.static_range(4):
        r = _pick(j, r0, r1, r2, r3)
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        a = b & 0x7FFFFFFF
        e = ((a + (r & 0x7FFFFF)) >> 23) & 0xFF  # up with probability frac
        e = tl.where(a >= 0x7F800000, 255, e)
        _store(exp_ptr + pid * BLOCK, e.to(tl.uint8), j * Q + offs, rem, FULL)
        sb = tl.reshape((b >> 31) & 1, (Q // 8, 8))
        byte = tl.sum(sb << tl.arange(0, 8)[None, :], axis=1)
        _store(sign_ptr + pid * (BLOCK // 8), byte.to(tl.uint8), j * (Q // 8) + tl.arange(0, Q // 8), (rem + 7) // 8,
               FULL)


@triton.jit
def _natural_encode_kernel(x_ptr, exp_ptr, sign_ptr, n, seed_ptr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        _natural_encode_block(x_ptr, exp_ptr, sign_ptr, seed_ptr, pid, rem, ROUNDS, BLOCK, True)
    else:
        _natural_encode_block(x_ptr, exp_ptr, sign_ptr, seed_ptr, pid, rem, ROUNDS, BLOCK, False)


@triton.jit
def _natural_decode_kernel(exp_ptr, sign_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    e = tl.load(exp_ptr + o, mask=o < n, other=0).to(tl.int32)
    ob = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    byte = tl.load(sign_ptr + ob, mask=ob < (n + 7) // 8, other=0).to(tl.int32)
    s = tl.reshape((byte[:, None] >> tl.arange(0, 8)[None, :]) & 1, (BLOCK,))
    tl.store(out_ptr + o, ((s << 31) | (e << 23)).to(tl.float32, bitcast=True), mask=o < n)


def natural_encode(x: torch.Tensor, generator=None, *, rounds: int = PHILOX_ROUNDS) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous().reshape(-1)
    n = x.numel()
    e = torch.empty(n, dtype=torch.uint8, device=x.device)
    s = torch.empty((n + 7) // 8, dtype=torch.uint8, device=x.device)
    _natural_encode_kernel[(triton.cdiv(n, BLOCK),)](x, e, s, n, _seed(x, generator), ROUNDS=rounds,
                                                     BLOCK=BLOCK, num_warps=WARPS)
    return e, s


def natural_decode(e: torch.Tensor, s: torch.Tensor, n: int, out=None) -> torch.Tensor:
    out = _output(n, e.device, out)
    _natural_decode_kernel[(triton.cdiv(n, BLOCK),)](e, s, out, n, BLOCK=BLOCK, num_warps=WARPS)
    return out
