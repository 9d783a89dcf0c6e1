"""Elias-gamma codes, vectorized: encode a stream of positive integers into bytes and back.

γ(v) for v ≥ 1 is N = ⌊log₂ v⌋ zeros followed by the N + 1 bits of v (2N + 1 bits).  Each code
word may be followed by ``tail`` extra bits (QSGD: the sign of a non-zero level).  Decoding finds
the code-word starts by pointer doubling (O(L log L) vectorized work for L bits), never a Python
loop over code words.  Bits are stored most-significant first within the stream, packed
little-endian per byte.
"""

from __future__ import annotations

import torch

from ..packing import pack, unpack


def _bitlen(v: torch.Tensor) -> torch.Tensor:
    """⌊log₂ v⌋ + 1 for v ≥ 1 (exact: via the float64 exponent, v < 2^53)."""
    return torch.frexp(v.to(torch.float64))[1].to(torch.int64)


def encode(values: torch.Tensor, tail_bits: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """(packed bytes, number of bits) of γ(values) each followed by its tail bit (if given, for
    code words with value ≥ 2)."""
    v = values.reshape(-1).to(torch.int64)
    nb = _bitlen(v)  # N + 1
    has_tail = (v >= 2) if tail_bits is not None else torch.zeros_like(v, dtype=torch.bool)
    lengths = 2 * nb - 1 + has_tail.to(torch.int64)
    ends = torch.cumsum(lengths, 0)
    total = int(ends[-1]) if v.numel() else 0
    starts = ends - lengths
    bits = torch.zeros(total, dtype=torch.uint8, device=v.device)
    # the value's bits sit at starts + N … starts + 2N, most significant first
    maxb = int(nb.max()) if v.numel() else 0
    for j in range(maxb):
        sel = nb > j
        pos = starts[sel] + (nb[sel] - 1) + j
        bits[pos] = ((v[sel] >> (nb[sel] - 1 - j)) & 1).to(torch.uint8)
    if tail_bits is not None:
        t = tail_bits.reshape(-1).to(torch.uint8)
        bits[(ends - 1)[has_tail]] = t[has_tail]
    return pack(bits, 1), total


def decode(data: torch.Tensor, nbits: int, count: int, with_tail: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, tail bits) of ``count`` code words from the first ``nbits`` bits of ``data``."""
    bits = unpack(data, 1, nbits)
    L = nbits
    dev = bits.device
    idx = torch.arange(L + 1, device=dev)
    ones = torch.cat([bits.bool(), torch.tensor([True], device=dev)])
    # next_one[p] = smallest q ≥ p with bit q set (sentinel at L)
    cand = torch.where(ones, idx, torch.full_like(idx, L))
    next_one = torch.flip(torch.cummin(torch.flip(cand, [0]), 0).values, [0])
    n = (next_one - idx).clamp(min=0)
    length = 2 * n + 1
    if with_tail:
        length = length + (n >= 1).to(torch.int64)
    jump = (idx + length).clamp(max=L)
    jump[L] = L
    reach = torch.zeros(L + 1, dtype=torch.bool, device=dev)
    reach[0] = True
    step = 1
    while step <= L:
        reach[jump[reach]] = True
        jump = jump[jump]
        step *= 2
    starts = torch.nonzero(reach[:L]).reshape(-1)[:count]
    if starts.numel() != count:
        raise ValueError(f"corrupted Elias-gamma stream: {starts.numel()} code words, expected {count}")
    N = n[starts]
    vals = torch.zeros(count, dtype=torch.int64, device=dev)
    maxb = int(N.max()) + 1 if count else 0
    for j in range(maxb):
        sel = N >= j
        b = bits[starts[sel] + N[sel] + j].to(torch.int64)
        vals[sel] = (vals[sel] << 1) | b
    tails = torch.zeros(count, dtype=torch.uint8, device=dev)
    if with_tail:
        has = N >= 1
        tails[has] = bits[starts[has] + 2 * N[has] + 1].to(torch.uint8)
    return vals, tails
