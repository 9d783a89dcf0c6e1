"""Stochastic rounding: only the two neighbours appear, and E[q(x)] = x.

Each check draws N = 10^6 roundings of one value x with a fixed seed. With p the probability of
rounding away from zero, the sample mean has standard error |hi − lo|·sqrt(p(1−p)/N); we require
|mean − x| ≤ 5 standard errors (a false alarm has probability < 6e-7 per check).
"""

import math
import threading

import numpy as np
import pytest
import torch

import lowbit
from lowbit.packing import decode
from oracles import neighbours
from lowbit.kernels import cpu as _cpu

N = 1_000_000

needs_compiled = pytest.mark.skipif(not _cpu.TORCH_OK, reason="the CPU's compiled loops run with torch >= 2.13")


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
    t = decode(torch.arange(256, dtype=torch.uint8), "fp8", (256,))
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


@needs_compiled
@pytest.mark.parametrize("n", [5_003, 3 * 2**17 + 7])  # one chunk (the caller's generator) and several
def test_compiled_cpu_stochastic_rounding_equals_the_eager_passes(n, monkeypatch):
    """On large CPU buffers stochastic rounding runs as one loop compiled by torch.compile, the
    random words drawn eagerly from the same streams: bit for bit the eager passes' values (the
    statistical tests above hold for those) and the generator left in the same state, for
    integers and formats with and without inf and NaN codes, and saturation, over
    random bit patterns, 80 binades and the special values."""
    from lowbit.kernels import cpu

    bits = np.random.default_rng(5).integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = torch.from_numpy(bits.copy())
    x[: n // 2] = torch.randn(n // 2, generator=torch.Generator().manual_seed(0)) * torch.logspace(-40, 40, n // 2, base=2.0)
    x[:9] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 2.0**24 + 1, -(2.0**30), 0.5, 1e-45])
    # NaN without inf (fp8), inf (e5m2), no negative zero (fnuz), neither NaN nor inf and saturated (fp4);
    # each case is one compilation on a cold cache
    cases = [("int", None, False)] + [(f, f, False) for f in ("fp8", "fp8_e5m2", "float8_e4m3fnuz")] + [
        ("fp4", "fp4", True)]

    def run(name, saturate, gen):
        if name is None:
            return lowbit.round_integer(x, "stochastic", generator=gen)
        return lowbit.quantize(x, name, "stochastic", saturate=saturate, generator=gen)

    calls = []
    real = cpu.call
    for label, name, saturate in cases:
        monkeypatch.setenv("LOWBIT_CPU_COMPILE", "0")
        g1 = torch.Generator().manual_seed(11)
        want = run(name, saturate, g1)
        monkeypatch.setenv("LOWBIT_CPU_COMPILE", "1")
        monkeypatch.setattr(cpu, "MIN_VALUES", 2)
        monkeypatch.setattr(cpu, "call", lambda fn, *a: calls.append(fn.__name__) or real(fn, *a))
        g2 = torch.Generator().manual_seed(11)
        got = run(name, saturate, g2)
        monkeypatch.setattr(cpu, "call", real)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (label, saturate)
        assert torch.equal(g1.get_state(), g2.get_state())
    # the words too (numpy's with the compiler off: the same words)
    assert calls == [c for case in ["stochastic_integers"] + ["stochastic_float"] * (len(cases) - 1)
                     for c in ["_philox_counters", case]]


@needs_compiled
def test_each_format_gets_a_compiled_loop_of_its_own(monkeypatch):
    """Every format's stochastic rounding loop is compiled with its fields as constants, and each
    has its own code object, so torch.compile's limit on compilations per code object
    (``recompile_limit``, 8) never sends a format back to Python: with the limit at 1, two
    formats still make two graphs (one function shared by both would make one, then run the
    second format eagerly)."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from lowbit.formats import get_format
    from lowbit.kernels import cpu
    from lowbit.quantize import _stochastic_float

    monkeypatch.setattr(dynamo.config, "recompile_limit", 1)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    words = torch.randint(0, 2**31 - 1, (4096,), dtype=torch.int32, generator=torch.Generator().manual_seed(2))
    before = counters["stats"]["unique_graphs"]
    for name in ("e3m2", "e2m3"):  # formats no other test compiles in this process
        fn = _stochastic_float(get_format(name), True)
        got = cpu.call(fn, x, words)
        assert torch.equal(got, fn(x, words)), name  # the compiled loop against its eager formula
    assert counters["stats"]["unique_graphs"] - before == 2


@needs_compiled
def test_stochastic_rounding_without_a_compiler_gives_the_same_values(monkeypatch):
    """Where torch.compile fails, the words already drawn are rounded by the eager formula: the
    same values as with the compiler off, and one warning."""
    from lowbit.kernels import cpu

    x = torch.randn(3 * 2**17 + 7, generator=torch.Generator().manual_seed(2)) * 40
    monkeypatch.setenv("LOWBIT_CPU_COMPILE", "0")
    want = [lowbit.round_integer(x, generator=torch.Generator().manual_seed(4)),
            lowbit.quantize(x, "fp8", "stochastic", generator=torch.Generator().manual_seed(4))]
    monkeypatch.setenv("LOWBIT_CPU_COMPILE", "1")
    monkeypatch.setattr(cpu, "_broken", set())
    monkeypatch.setattr(cpu, "MIN_VALUES", 2)

    def broken(fn):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(cpu, "_compiled", broken)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        got = [lowbit.round_integer(x, generator=torch.Generator().manual_seed(4)),
               lowbit.quantize(x, "fp8", "stochastic", generator=torch.Generator().manual_seed(4))]
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@needs_compiled
def test_words_drawn_ahead_give_the_same_roundings_and_generator_states(monkeypatch):
    """draw_ahead draws the next rounding's words on a copy of the generator: used when the
    generator is still where they were drawn from (the same values and end state as drawing
    then), dropped when anything else moved it or the size changed (drawn anew: the same values
    again), and the generator itself untouched until they are used."""
    import importlib

    from lowbit.kernels import cpu, stream
    from lowbit.quantize import draw_ahead

    Q = importlib.import_module("lowbit.quantize")
    monkeypatch.setattr(cpu, "MIN_VALUES", 2)
    fresh = []  # draws made at the time of rounding (not ahead)
    real = stream.draw_seed
    on_caller = threading.current_thread()
    monkeypatch.setattr(stream, "draw_seed", lambda g: (threading.current_thread() is on_caller and fresh.append(g)) or real(g))
    x = torch.randn(2 * 2**17 + 3, generator=torch.Generator().manual_seed(1)) * 30
    qsgd = lowbit.get_compressor("qsgd", levels=7)  # its codes read the words by blocks (random_blocks)
    rounders = [lambda g: lowbit.round_integer(x, generator=g),
                lambda g: lowbit.quantize(x, "fp8", "stochastic", generator=g),
                lambda g: qsgd.decode(qsgd.encode(x, generator=g))]
    for rnd in rounders:
        ref, ahead = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        draw_ahead(ahead)  # nothing drawn yet from it: nothing to draw ahead
        assert ahead not in Q._AHEAD
        for step in range(4):
            if step == 2:  # someone else draws from the generator in between: the words are stale
                torch.randint(0, 5, (3,), generator=ref)
                torch.randint(0, 5, (3,), generator=ahead)
            want = rnd(ref)
            fresh.clear()
            got = rnd(ahead)
            assert fresh == ([] if step in (1, 3) else [ahead]), step  # the words drawn ahead were used
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), step
            assert torch.equal(ahead.get_state(), ref.get_state())
            before = ahead.get_state()
            draw_ahead(ahead)
            Q._AHEAD[ahead].result()
            assert torch.equal(ahead.get_state(), before)  # drawn on a copy
        used = Q._AHEAD[ahead]
        small = lowbit.round_integer(x[:1000], generator=ahead)
        assert torch.equal(small, lowbit.round_integer(x[:1000], generator=ref))
        assert ahead not in Q._AHEAD and used.done()
        assert torch.equal(ahead.get_state(), ref.get_state())
