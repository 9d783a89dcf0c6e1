"""lowbit's random stream: Philox-4x32 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers:
as easy as 1, 2, 3", SC'11), a counter-based generator, on the GPU and on the CPU.

A stochastic rounding of n float32 values draws one seed s ∈ [0, 2^31 − 1) from the caller's
torch generator, then value k takes one 32-bit word: with blocks of 4·Q values (Q = 1024),
value k = 4Q·b + Q·j + i takes word j of Philox-4x32-R(counter = (Q·b + i, 0, 0, 0),
key = (s, 0)).  The words are a function of (s, k) alone, so a vector can be cut anywhere and its
pieces computed in any order or on any device.  The Triton kernels compute them in registers
(:func:`lowbit.kernels.philox.block_words`); the CPU computes the same words into a buffer
(:func:`words`), by one loop compiled with ``torch.compile`` or by numpy.

``ROUNDS = 7``: Salmon et al. find 7 rounds of Philox-4x32 free of BigCrush failures (10, cuRAND's
and ``tl.randint4x``'s default, adds a safety margin); 7 rounds make the GPU kernels faster
(BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from . import cpu

ROUNDS = 7
Q = 1024  # counters per block of 4·Q values
M0, M1 = 0xD2511F53, 0xCD9E8D57  # the round multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # the key increments (Weyl sequence)
_MASK = 0xFFFFFFFF


def philox_numpy(counters: np.ndarray, key: int, rounds: int = ROUNDS) -> tuple[np.ndarray, ...]:
    """The four words (uint64 arrays holding 32-bit values) of Philox-4x32-``rounds`` at counters
    (c, 0, 0, 0) with key (key mod 2^32, key ≫ 32): each round maps (c0, c1, c2, c3) to
    (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0)), then the key is
    raised by (W0, W1).  The products of two 32-bit numbers are exact in uint64; (c0, c2) and
    (c1, c3) are the rows of two arrays, so a round is five numpy calls."""
    a = np.zeros((2, counters.size), dtype=np.uint64)  # rows c0, c2
    a[0] = counters
    b = np.zeros_like(a)  # rows c1, c3
    m = np.array([[M0], [M1]], dtype=np.uint64)
    k = np.array([[key & _MASK], [(key >> 32) & _MASK]], dtype=np.uint64)
    w = np.array([[W0], [W1]], dtype=np.uint64)
    for _ in range(rounds):
        p = a * m  # rows M0·c0, M1·c2
        hi = (p >> np.uint64(32))[::-1]  # rows hi(M1·c2), hi(M0·c0)
        b ^= k
        a, b = hi ^ b, (p & np.uint64(_MASK))[::-1]
        k = (k + w) & np.uint64(_MASK)
    return a[0], b[0], a[1], b[1]


def _words_numpy(n: int, key: int, rounds: int) -> np.ndarray:
    """Words 0 … n − 1 (uint64 holding 32 bits): the counters Q·b + i that some value uses, then
    each block's four words laid end to end."""
    full, rem = divmod(n, 4 * Q)
    r = np.stack(philox_numpy(np.arange(full * Q + min(rem, Q), dtype=np.uint64), key, rounds))
    head = r[:, : full * Q].reshape(4, full, Q).transpose(1, 0, 2).reshape(-1)
    return np.concatenate([head, r[:, full * Q :].reshape(-1)[:rem]])


def _philox_counters(key: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                     w3: torch.Tensor) -> torch.Tensor:
    """w_j[c] ← bits 0–30 of word j of counter c (c < m, the buffers' length) with seed ``key`` (a
    0-d int64 tensor, 0 ≤ key < 2^31), ``ROUNDS`` rounds: one loop that computes each counter's
    rounds once and stores its four words (int64 lanes hold the 32-bit words and their products).
    The buffers are the caller's (fresh ones cost their page faults on every call)."""
    c0 = torch.arange(w0.numel(), dtype=torch.int64)
    c1 = c2 = c3 = torch.zeros_like(c0)
    k0, k1 = key, torch.zeros_like(key)
    for _ in range(ROUNDS):
        p0, p2 = c0 * M0, c2 * M1  # wraps past 2^63: the low 64 bits are right, ≫ 32 then masked
        c0, c1, c2, c3 = ((p2 >> 32) & _MASK) ^ c1 ^ k0, p2 & _MASK, ((p0 >> 32) & _MASK) ^ c3 ^ k1, p0 & _MASK
        k0, k1 = (k0 + W0) & _MASK, (k1 + W1) & _MASK
    for w, c in zip((w0, w1, w2, w3), (c0, c1, c2, c3)):
        w.copy_((c & 0x7FFFFFFF).to(torch.int32))
    return w0


def blocks(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The stream's first n words for ``seed`` as (head, tail): ``head`` of shape (blocks, 4, Q)
    holds the words of values 0 … 4Q·blocks − 1 in value order, as a strided view of the four
    buffers of word j of each counter (one compiled loop computes each counter's rounds once), and
    ``tail`` the last n mod 4Q words, from numpy.  A loop that reads ``head`` as it is (a 3-D
    view of its values beside it) saves the copy into value order (:func:`words`).  None where
    the compiled loops are off or n has no whole block; reused buffers (the next draw overwrites
    them)."""
    full = n // (4 * Q)
    if not (full and n >= cpu.MIN_VALUES and cpu.compiling()):
        return None
    w = cpu.scratch(4 * full * Q, torch.int32, 8).view(4, full * Q)
    if cpu.call(_philox_counters, torch.tensor(seed, dtype=torch.int64), *w.unbind(0)) is None:
        return None
    rem = n - full * 4 * Q
    tail = cpu.scratch(rem, torch.int32, 9)
    if rem:  # value 4Q·full + Q·j + i: word j of counter Q·full + i
        r = np.stack(philox_numpy(np.arange(full * Q, full * Q + min(rem, Q), dtype=np.uint64), seed, ROUNDS))
        tail.copy_(torch.from_numpy((r.reshape(-1)[:rem] & np.uint64(0x7FFFFFFF)).astype(np.int32)))
    return w.view(4, full, Q).permute(1, 0, 2), tail


def words(out: torch.Tensor, seed: int) -> torch.Tensor:
    """Fill the int32 CPU vector ``out`` with the low 31 bits of the stream's first n words for
    ``seed`` (0 ≤ seed < 2^31): the words a Triton kernel draws for its values 0 … n − 1, less
    their top bit (every CPU rounding uses 30 bits at most).  For the buffers the other compiled
    passes take (:func:`lowbit.kernels.cpu.wanted`) :func:`blocks` copied into value order, else
    numpy throughout; the same words either way (tested)."""
    n = out.numel()
    if (b := blocks(n, seed)) is not None:
        head, tail = b
        out[: head.numel()].view(head.shape).copy_(head)
        out[head.numel() :].copy_(tail)
        return out
    w = _words_numpy(n, seed, ROUNDS) & np.uint64(0x7FFFFFFF)
    out.numpy()[:] = w.astype(np.int32)
    return out


def draw_seed(generator) -> int:
    """One seed from the caller's generator (the caller's device), as the Triton kernels draw it."""
    dev = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (1,), device=dev, generator=generator, dtype=torch.int64))


__all__ = ["Q", "ROUNDS", "blocks", "draw_seed", "philox_numpy", "words"]
