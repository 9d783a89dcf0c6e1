"""lowbit's random stream (lowbit.kernels.stream) against Philox-4x32 written here from its
definition (Salmon et al., SC'11) one counter at a time in Python integers, and against the
published known-answer vector; the Triton kernels' words are compared in kernels_interpreted.py."""

import numpy as np
import pytest
import torch

from lowbit.kernels import cpu, stream
from lowbit.quantize import random_words

needs_compiled = pytest.mark.skipif(not cpu.TORCH_OK, reason="the CPU's compiled loops run with torch >= 2.13")


def philox_scalar(ctr, key, rounds):
    """Philox-4x32-R of one counter (four 32-bit words) and key (two), in Python integers."""
    c, (k0, k1) = list(ctr), key
    for _ in range(rounds):
        p0, p2 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p2 >> 32) ^ c[1] ^ k0, p2 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k1, p0 & 0xFFFFFFFF]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c


def oracle_words(n, seed, rounds=stream.ROUNDS):
    """Value k = 4096·b + 1024·j + i takes word j of counter 1024·b + i, key (seed, 0)."""
    out = []
    for k in range(n):
        b, j, i = k >> 12, (k >> 10) & 3, k & 1023
        out.append(philox_scalar((1024 * b + i, 0, 0, 0), (seed, 0), rounds)[j])
    return np.array(out, dtype=np.uint64)


def test_the_known_answer_of_philox4x32_10():
    """Random123's known-answer vector for Philox-4x32-10, counter 0 and key 0."""
    assert philox_scalar((0, 0, 0, 0), (0, 0), 10) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    got = [int(w[0]) for w in stream.philox_numpy(np.zeros(1, dtype=np.uint64), 0, 10)]
    assert got == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("rounds", [7, 10])
def test_numpy_philox_equals_the_definition(rounds):
    """Random counters below 2^32 and 64-bit keys (both key words in use)."""
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=200, dtype=np.uint64)
    for key in (0, 12345, 2**31 - 2, 0xDEADBEEF12345678):
        got = np.stack(stream.philox_numpy(ctr, key, rounds))
        want = np.array([philox_scalar((int(c), 0, 0, 0), (key & 0xFFFFFFFF, key >> 32), rounds) for c in ctr]).T
        assert np.array_equal(got, want.astype(np.uint64)), key


SIZES = [1, 7, 1023, 1025, 4096, 4097, 5 * 1024 + 3, 3 * 4096 + 2000]


def test_words_follow_the_kernels_layout():
    """Whole blocks, partial blocks shorter and longer than a quarter: the low 31 bits of the
    words the definition gives, as int32."""
    for n in SIZES:
        got = stream.words(torch.empty(n, dtype=torch.int32), 987654321)
        assert torch.equal(got, torch.from_numpy((oracle_words(n, 987654321) & 0x7FFFFFFF).astype(np.int32))), n


@needs_compiled
def test_the_compiled_loop_gives_the_numpy_words(monkeypatch):
    monkeypatch.setattr(cpu, "MIN_VALUES", 1)
    calls = []
    real = cpu.call
    monkeypatch.setattr(cpu, "call", lambda fn, *a: calls.append(fn.__name__) or real(fn, *a))
    for n in SIZES + [2**20 + 5]:
        got = stream.words(torch.empty(n, dtype=torch.int32), 2**31 - 2)
        want = (stream._words_numpy(n, 2**31 - 2, stream.ROUNDS) & np.uint64(0x7FFFFFFF)).astype(np.int32)
        assert torch.equal(got, torch.from_numpy(want)), n
    assert calls == ["_philox_counters"] * sum(n >= 4 * stream.Q for n in SIZES + [2**20 + 5])  # whole blocks


def test_random_words_draw_one_seed_from_the_generator():
    """The words of a rounding are the stream's for one seed drawn as the kernels draw it, and the
    generator moves on by that one draw; a vector's words are a prefix of a longer one's."""
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    w = random_words(5000, g).clone()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ref, dtype=torch.int64))
    assert torch.equal(g.get_state(), ref.get_state())
    assert torch.equal(w, stream.words(torch.empty(5000, dtype=torch.int32), seed))
    longer = random_words(9000, torch.Generator().manual_seed(3))
    assert torch.equal(longer[:5000], w)


def test_words_are_uniform_on_31_bits():
    """A sanity check of the layout (a mistake there repeats words): 2^20 words have no
    duplicate beyond what chance allows (expected 2^40/2^32 = 256 colliding pairs of 31-bit
    words: far below 512, a 16-sigma margin), and each of the 31 bits is set with frequency
    within 6 standard errors of 1/2."""
    w = stream.words(torch.empty(2**20, dtype=torch.int32), 42).numpy()
    assert w.size - np.unique(w).size < 512
    freq = ((w[:, None] >> np.arange(31)) & 1).mean(0)
    assert (np.abs(freq - 0.5) < 6 * 0.5 / 2**10).all() and (w >= 0).all()
