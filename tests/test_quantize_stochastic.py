"""Stochastic rounding: only the two neighbours appear, and E[q(x)] = x.

Each check draws N = 10^6 roundings of one value x with a fixed seed. With p the probability of
rounding away from zero, the sample mean has standard error |hi − lo|·sqrt(p(1−p)/N); we require
|mean − x| ≤ 5 standard errors (a false alarm has probability < 6e-7 per check).
"""

import math

import numpy as np
import pytest
import torch

import lowbit
from oracles import neighbours

N = 1_000_000


def grid(name):
    fmt = lowbit.get_format(name)
    base = [1.3, 0.7, 0.1, 2.9, 5.1]
    xs = [b * 2.0**k for b in base for k in (-3, 0, 2)]
    xs += [fmt.smallest_subnormal * 0.3, fmt.smallest_subnormal * 2.6, fmt.smallest_normal * 0.77,
           fmt.max * 0.97, fmt.smallest_subnormal * 1e-3]
    return [x for x in xs if abs(x) < fmt.max] + [-x for x in xs[:4]]


@pytest.mark.parametrize("name", ["fp8", "fp8_e5m2", "fp4", "float6_e2m3fn", "bf16", "fp16", "slowdown_fp4"])
def test_two_neighbours_and_unbiased(name):
    fmt = lowbit.get_format(name)
    g = torch.Generator().manual_seed(1234)
    for x in grid(name):
        x32 = float(np.float32(x))
        q = lowbit.quantize(torch.full((N,), x32), name, "stochastic", generator=g).double()
        lo, hi = neighbours(x32, fmt)
        seen = set(torch.unique(q).tolist())
        assert seen <= {lo, hi}, (x32, seen, lo, hi)
        if lo == hi:
            continue
        p = (x32 - lo) / (hi - lo)
        se = abs(hi - lo) * math.sqrt(max(p * (1 - p), 1.0 / N) / N)
        assert abs(q.mean().item() - x32) <= 5 * se, (name, x32, q.mean().item(), se)


def test_stochastic_float64_and_integers_are_unbiased():
    g = torch.Generator().manual_seed(5)
    for x in (0.3, -2.71, 1e-3, 12.5):
        q = lowbit.quantize(torch.full((N,), x, dtype=torch.float64), "fp4", "stochastic", generator=g)
        lo, hi = neighbours(x, lowbit.get_format("fp4"))
        p = (x - lo) / (hi - lo) if hi != lo else 0
        if hi != lo:
            se = abs(hi - lo) * math.sqrt(p * (1 - p) / N)
            assert abs(q.mean().item() - x) <= 5 * se
        r = lowbit.round_integer(torch.full((N,), x * 7), "stochastic", generator=g).double()
        assert set(torch.unique(r).tolist()) <= {math.floor(x * 7), math.ceil(x * 7)}
        f = x * 7 - math.floor(x * 7)
        assert abs(r.mean().item() - float(np.float32(x * 7))) <= 5 * math.sqrt(f * (1 - f) / N) + 1e-9


def test_fixed_seed_is_reproducible_and_seeds_differ():
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(0))
    a = lowbit.quantize(x, "fp4", "stochastic", generator=torch.Generator().manual_seed(9))
    b = lowbit.quantize(x, "fp4", "stochastic", generator=torch.Generator().manual_seed(9))
    c = lowbit.quantize(x, "fp4", "stochastic", generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = lowbit.quantize(x, "fp8", "stochastic")
    torch.manual_seed(3)
    assert torch.equal(d, lowbit.quantize(x, "fp8", "stochastic"))


def test_stochastic_of_representable_values_is_exact():
    t = lowbit.get_format("fp8").decode(torch.arange(256, dtype=torch.uint8), (256,))
    t = t[torch.isfinite(t)]
    assert torch.equal(lowbit.quantize(t, "fp8", "stochastic"), t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_stochastic_integers_equal_the_reference_formula(dtype):
    """The CPU's in-place stochastic integer rounding is bit for bit the formula of
    _round_fixed (step 2^0) with the sign and |x| ≥ 2^p rules, drawing the same random numbers,
    over 80 binades and the special values."""
    import importlib

    Q = importlib.import_module("lowbit.quantize")
    bits = Q._Bits(dtype)
    x = torch.randn(200_000, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x *= torch.logspace(-40, 40, x.numel(), base=2.0, dtype=dtype)
    x[:8] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 2.0**24 + 1, -(2.0**30), 0.5], dtype=dtype)

    def reference(v, gen):
        a = v.view(bits.it) & bits.abs_mask
        e = a >> bits.p
        k = Q._round_fixed(a, e, bits, 0, "stochastic", Q._random_bits(v, bits, gen)).to(v.dtype)
        return torch.where(e >= bits.eb + bits.p, v, torch.where(v < 0, -k, k))

    for v in (x, x[8:]):  # with and without values that are integers already (or not finite)
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        assert torch.equal(Q._stochastic_integers(v, bits, g1).view(bits.it), reference(v, g2).view(bits.it))
        assert torch.equal(g1.get_state(), g2.get_state())
