"""Compressors: unbiasedness, variance/contraction bounds, true wire sizes, summability, error
feedback, non-finite input, and the registry's errors.

Unbiasedness is checked per coordinate on R = 10^5 independent draws: the input is a pattern
of d values repeated R times, encoded once, so every repeat is an independent draw of the same
coordinate's rounding (randomness is per coordinate given the tensor-wide statistic, which the
repeats share).  The mean over repeats must lie within 5 standard errors (sample std / √R) of
the input value; a false alarm has probability < 6e-7 per coordinate.  Where a coordinate's
rounding probability is so small that no draw rounded away from zero, the sample std is 0 and
understates the true one, so the standard error is floored by sqrt(|x|·M/R), with M the largest
decoded magnitude in the draw: for rounding between 0 and a value of at most M of x's sign,
Var ≤ E[Y²] ≤ |x|·M under the hypothesis E[Y] = x.
"""

import math

import numpy as np
import pytest
import torch

import lowbit
from lowbit import kernels
from lowbit.cli import main
from lowbit.compress import ErrorFeedback, Factored, MultiTensor, Packet, Shifted, Summable, Traits, get_compressor
from lowbit.compress.qsgd import l2norm
from lowbit.kernels import cpu as _cpu

R = 100_000
PATTERNS = {
    "mixed": torch.tensor([0.3, -1.7, 0.0, 2.5e-3, -0.049, 1.0]),
    "2d": torch.tensor([[1.0, -2.0, 3.0], [0.25, -0.125, 7.0]]),
}
SCALES = [1e-30, 1.0, 1e30]

needs_compiled = pytest.mark.skipif(not _cpu.TORCH_OK, reason="the CPU's compiled loops run with torch >= 2.13")


def draws(codec, pattern, scale, seed=0, state=None):
    x = (pattern * scale).expand(R, *pattern.shape).contiguous()
    g = torch.Generator().manual_seed(seed)
    out = codec.decode(codec.encode(x, state=state, generator=g)) if state is None else codec.decode(
        codec.encode(x, state=state, generator=g))
    return x[0].double(), out.double()


def assert_unbiased(codec, pattern, scale, state=None):
    x, out = draws(codec, pattern, scale, state=state)
    mean, sd = out.mean(0), out.std(0)
    m = out.abs().max()
    se = torch.maximum(sd / math.sqrt(R), torch.sqrt(x.abs() * m / R))
    tol = 5 * se + 1e-6 * x.abs()
    bad = (mean - x).abs() > tol
    assert not bad.any(), f"{codec!r} scale {scale}: x={x[bad]}, mean={mean[bad]}, se={se[bad]}"


UNBIASED = {
    "cast-sr-fp8-tensor": lambda: get_compressor("cast", format="fp8", rounding="stochastic", scaling="tensor"),
    "cast-sr-fp4-block": lambda: get_compressor("cast", format="fp4", rounding="stochastic", scaling="block"),
    "natural": lambda: get_compressor("natural"),
    "qsgd-s1": lambda: get_compressor("qsgd", levels=1),
    "qsgd-s16": lambda: get_compressor("qsgd", levels=16),
    "qsgd-s4096-elias": lambda: get_compressor("qsgd", levels=4096, coding="elias"),
    "terngrad": lambda: get_compressor("terngrad"),
    "randk": lambda: get_compressor("randk", ratio=0.25),
    "hintsgd": lambda: get_compressor("hintsgd"),
    "identity": lambda: get_compressor("identity"),
}


@pytest.mark.parametrize("name", list(UNBIASED))
@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("scale", SCALES)
def test_unbiased_codecs(name, pattern, scale):
    codec = UNBIASED[name]()
    assert codec.unbiased
    assert_unbiased(codec, PATTERNS[pattern], scale)


@pytest.mark.parametrize("scale", SCALES)
def test_intsgd_is_unbiased_at_any_scale_with_its_alpha(scale):
    codec = get_compressor("intsgd", alpha=3.0 / scale)
    assert_unbiased(codec, PATTERNS["mixed"], scale)


def test_shifted_unbiased_codec_stays_unbiased():
    codec = Shifted(get_compressor("qsgd", levels=2))
    pattern = PATTERNS["mixed"]
    x = pattern.expand(R, 6).contiguous()
    state = codec.init_state(x)
    state.memory = torch.full_like(x, 0.5)
    assert_unbiased(codec, pattern, 1.0, state=state)


@pytest.mark.parametrize("name", ["cast", "onebit", "signsgd", "topk", "powersgd"])
def test_biased_codecs_declare_it(name):
    assert not get_compressor(name).unbiased


# -- variance and contraction bounds from the papers ----------------------------------------
def mean_sq_error(codec, g, n=200):
    gen = torch.Generator().manual_seed(1)
    return sum(float(((codec(g, generator=gen) - g) ** 2).sum()) for _ in range(n)) / n


@pytest.mark.parametrize("s", [1, 4, 16])
def test_qsgd_variance_bound(s):
    g = torch.randn(1000, generator=torch.Generator().manual_seed(s))
    d = g.numel()
    bound = min(d / s**2, math.sqrt(d) / s) * float((g**2).sum())
    assert mean_sq_error(get_compressor("qsgd", levels=s), g) <= bound


def test_natural_compression_variance_bound():
    g = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * torch.logspace(-5, 5, 1000)
    assert mean_sq_error(get_compressor("natural"), g) <= float((g**2).sum()) / 8


@pytest.mark.parametrize("name", [n for n in lowbit.compressor_names() if get_compressor(n).traits.omega is not None])
def test_declared_relative_variance_holds(name):
    """A codec's declared ω (DIANA's shift stepsize is 1/(1 + ω)) bounds its measured error."""
    codec = get_compressor(name)
    g = torch.randn(1000, generator=torch.Generator().manual_seed(5)) * torch.logspace(-3, 3, 1000)
    assert mean_sq_error(codec, g) <= codec.traits.omega * float((g**2).sum()) * (1 + 1e-6) + 1e-30
    assert {"natural": 1 / 8, "identity": 0.0}.get(name, codec.traits.omega) == codec.traits.omega


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5])
def test_topk_contraction(ratio):
    g = torch.randn(5000, generator=torch.Generator().manual_seed(2))
    k = math.ceil(ratio * 5000)
    err = float(((get_compressor("topk", ratio=ratio)(g) - g) ** 2).sum())
    assert err <= (1 - k / 5000) * float((g**2).sum())


def test_randk_variance_is_d_over_k_minus_one():
    g = torch.randn(400, generator=torch.Generator().manual_seed(3))
    mse = mean_sq_error(get_compressor("randk", ratio=0.25), g, n=2000)
    expect = (1 / 0.25 - 1) * float((g**2).sum())
    assert abs(mse - expect) <= 0.1 * expect


def test_l2norm_survives_tiny_and_huge_values():
    for s in (1e-30, 1e30):
        v = torch.tensor([3.0, 4.0]) * s
        assert math.isclose(float(l2norm(v)), 5 * s, rel_tol=1e-6)


# -- wire sizes --------------------------------------------------------------------------------
BITS_CASES = {
    "cast fp4": (lambda: get_compressor("cast", format="fp4"), 4, 4.001),
    "cast fp8": (lambda: get_compressor("cast", format="fp8"), 8, 8.0),
    "cast fp6 block": (lambda: get_compressor("cast", format="fp6", scaling="block"), 6.25, 6.251),
    "terngrad": (lambda: get_compressor("terngrad"), 1.9, 2.001),
    "signsgd": (lambda: get_compressor("signsgd"), 1.0, 1.001),
    "onebit": (lambda: get_compressor("onebit"), 1.0, 1.001),
    "intsgd int8": (lambda: get_compressor("intsgd", alpha=20.0, bits=8), 8.0, 8.001),
    "natural": (lambda: get_compressor("natural"), 9.0, 9.0),
    "identity": (lambda: get_compressor("identity"), 32.0, 32.0),
    "qsgd fixed s=16": (lambda: get_compressor("qsgd", levels=16), 6.0, 6.001),
    "topk 1%": (lambda: get_compressor("topk", ratio=0.01), 0.64, 0.641),
}


def from_wire(p: Packet) -> Packet:
    """The packet a receiver rebuilds from ``p.to_bytes()`` alone, knowing only each field's dtype
    and shape (what the codec and the tensor's size fix); checks that the bytes are all consumed."""
    raw, pos, payload = p.to_bytes(), 0, {}
    for k, t in p.payload.items():
        nb = t.numel() * t.element_size()
        payload[k] = torch.frombuffer(bytearray(raw[pos : pos + nb]) or bytearray(1), dtype=t.dtype)[: t.numel()]
        payload[k] = payload[k].reshape(t.shape)
        pos += nb
    assert pos == len(raw) == p.nbytes
    return Packet(payload, p.shape, p.dtype, dict(p.meta))


FIXED_SIZE = {  # codecs whose packet size is a formula of the tensor's size (MultiTensor.wire_bytes)
    "identity": {}, "cast fp8": {"format": "fp8"}, "cast fp4": {"format": "fp4"}, "cast fp16": {"format": "fp16"},
    "cast fp4 block": {"format": "fp4", "scaling": "block"}, "cast fp8 block 16": {"format": "fp8", "scaling": "block",
                                                                                   "block": 16},
    "cast int8 tensor": {"format": "int8", "scaling": "tensor"}, "cast fp6 tensor": {"format": "fp6", "scaling": "tensor"},
    "natural": {}, "qsgd": {"levels": 4}, "terngrad": {}, "onebit": {}, "signsgd": {},
    "intsgd int8": {"alpha": 10.0, "bits": 8, "n_workers": 2},
}


@pytest.mark.parametrize("case", list(FIXED_SIZE))
def test_wire_bytes_formula_equals_the_packets_bytes(case):
    codec = get_compressor(case.split()[0], **FIXED_SIZE[case])
    for n in (1, 7, 31, 33, 1000, 2112):
        x = torch.randn(n, generator=torch.Generator().manual_seed(n))
        p = codec.encode(x, state=codec.init_state(x), generator=torch.Generator().manual_seed(1))
        assert codec.wire_bytes(n) == p.nbytes, (case, n, codec.wire_bytes(n), p.nbytes)


@pytest.mark.parametrize("case", list(BITS_CASES))
def test_bits_per_coordinate_and_true_bytes(case):
    """The size each source gives for its code (bits per coordinate), and the bytes on the wire
    carry the whole message: the packet rebuilt from them decodes to the same values."""
    make, lo, hi = BITS_CASES[case]
    g = torch.randn(10**6, generator=torch.Generator().manual_seed(4))
    codec = make()
    p = codec.encode(g, generator=torch.Generator().manual_seed(5))
    assert torch.equal(codec.decode(from_wire(p)), codec.decode(p))
    assert lo <= p.bits_per_coordinate <= hi, p.bits_per_coordinate


def test_qsgd_elias_is_shorter_than_fixed_for_small_s():
    g = torch.randn(10**6, generator=torch.Generator().manual_seed(6))
    for s in (1, 2, 4):
        elias = get_compressor("qsgd", levels=s, coding="elias")
        e = elias.encode(g, generator=torch.Generator().manual_seed(s))
        f = get_compressor("qsgd", levels=s).encode(g)
        assert torch.equal(elias.decode(from_wire(e)), elias.decode(e))  # the Elias bit stream is the message
        assert e.bits_per_coordinate < f.bits_per_coordinate


def test_qsgd_elias_decodes_like_fixed_width():
    g = torch.randn(5001, generator=torch.Generator().manual_seed(7))
    for s in (1, 7, 300):
        a = get_compressor("qsgd", levels=s, coding="elias")
        b = get_compressor("qsgd", levels=s)
        pa = a.encode(g, generator=torch.Generator().manual_seed(s))
        pb = b.encode(g, generator=torch.Generator().manual_seed(s))
        assert torch.equal(a.decode(pa), b.decode(pb))


def test_isgq_sends_factors_and_beats_naive_scales():
    gen = torch.Generator().manual_seed(8)
    x, d = torch.randn(32, 300, generator=gen), torch.randn(32, 100, generator=gen) * 1e-3
    codec = get_compressor("isgq", bits=4)
    p = codec.encode(Factored(x, d), generator=gen)
    assert p.nbytes == (32 * 300 * 4 + 7) // 8 + (32 * 100 * 4 + 7) // 8 + 8  # 4-bit X and Δ, two float32 steps
    assert torch.equal(codec.decode(from_wire(p)), codec.decode(p))
    assert p.nbytes < 300 * 100 * 4 / 15  # far less than the dense fp32 gradient
    from lowbit.compress.isgq import expected_error

    a, b = codec.steps(x, d)
    naive = expected_error(x, d, x.abs().max() / 7, d.abs().max() / 7, 7, 7)
    assert expected_error(x, d, a, b, 7, 7) <= naive
    # the closed-form expected error matches a Monte-Carlo estimate
    g = Factored(x, d).dense()
    mc = np.mean([float(((codec.decode(codec.encode(Factored(x, d), generator=gen)) - g) ** 2).sum())
                  for _ in range(300)])
    assert abs(mc - float(expected_error(x, d, a, b, 7, 7))) <= 0.1 * mc
    with pytest.raises(TypeError, match="Factored"):
        codec.encode(torch.randn(10))


def test_powersgd_is_exact_for_low_rank_and_warm_starts():
    gen = torch.Generator().manual_seed(9)
    m = torch.randn(64, 2, generator=gen) @ torch.randn(2, 48, generator=gen)
    codec = get_compressor("powersgd", rank=2)
    st = codec.init_state(m)
    codec.encode(m, state=st, generator=gen)
    out = codec.decode(codec.encode(m, state=st, generator=gen))
    assert torch.allclose(out, m + 0 * m, atol=1e-3 * m.abs().max())
    p = codec.encode(m, generator=gen)
    assert p.nbytes == (64 + 48) * 2 * 4
    b = torch.randn(10)
    assert torch.equal(codec(b), b)  # vectors travel uncompressed


# -- summable codecs ---------------------------------------------------------------------------
def test_summable_packets_add_exactly():
    gen = torch.Generator().manual_seed(10)
    a, b = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    ident = get_compressor("identity")
    pa, pb = ident.encode(a), ident.encode(b)
    assert torch.equal(ident.decode(ident.add(pa, pb)), ident.decode(pa) + ident.decode(pb))
    for codec in (get_compressor("intsgd", alpha=50.0, n_workers=2), get_compressor("intsgd", alpha=50.0, bits=16, n_workers=2)):
        assert codec.summable
        pa, pb = codec.encode(a, generator=gen), codec.encode(b, generator=gen)
        s = codec.add(pa, pb)
        assert torch.equal(s.payload["ints"].long(), pa.payload["ints"].long() + pb.payload["ints"].long())
        assert torch.equal(codec.decode(s), (pa.payload["ints"].float() + pb.payload["ints"].float()) / 50.0)
        assert torch.allclose(codec.decode(s), codec.decode(pa) + codec.decode(pb), rtol=0, atol=1e-6)
    h = get_compressor("hintsgd", n_workers=2)
    gmax = torch.maximum(a.abs().max(), b.abs().max())
    pa, pb = h.encode(a, state=gmax, generator=gen), h.encode(b, state=gmax, generator=gen)
    s = h.add(pa, pb)
    assert torch.equal(s.payload["ints"].long(), pa.payload["ints"].long() + pb.payload["ints"].long())
    assert s.payload["ints"].abs().max() <= 512
    for name in ("qsgd", "natural", "topk"):
        assert not get_compressor(name).summable
        with pytest.raises(AttributeError, match="add"):  # no Summable protocol, no add
            get_compressor(name).add(None, None)


@pytest.mark.parametrize("name", lowbit.compressor_names())
def test_declared_traits_match_the_protocols_implemented(name):
    """A codec declares summable exactly when it implements the Summable protocol; the codecs
    that take the multi-tensor path implement MultiTensor; the flags live in one Traits record."""
    codec = get_compressor(name)
    assert isinstance(codec.traits, Traits)
    assert codec.summable == codec.traits.summable == isinstance(codec, Summable)
    assert codec.unbiased == codec.traits.unbiased
    multi = {"cast", "identity", "intsgd", "hintsgd", "natural", "onebit", "qsgd", "signsgd", "terngrad"}
    assert isinstance(codec, MultiTensor) == (name in multi)


@pytest.mark.parametrize("n", [2, 4])
def test_hintsgd_with_a_fixed_width_is_unbiased_and_its_sum_fits(n):
    """With 8-bit integers, HintSGD scales to ⌊127/n⌋ / max‖g‖∞, so no integer is clamped: the
    mean of 2,000 decodes is within 5 standard errors of g in every coordinate (a per-coordinate
    test at that width fails with probability below 1e-4 over the 64 coordinates), and the sum of
    n packets keeps the 8-bit width (before, it scaled to 256 and clamped at ⌊127/n⌋: a bias of
    up to 2.3 at the largest entry)."""
    codec = get_compressor("hintsgd", bits=8, n_workers=n)
    assert codec.unbiased and codec.levels == 127 // n
    g = torch.randn(64, generator=torch.Generator().manual_seed(n))
    gen = torch.Generator().manual_seed(10 + n)
    draws = torch.stack([codec(g, generator=gen) for _ in range(2000)])
    alpha = codec.levels / g.abs().max()
    frac = alpha * g.abs() - torch.floor(alpha * g.abs())
    se = torch.sqrt(frac * (1 - frac) / 2000) / alpha  # the Bernoulli rounding's own standard error
    assert bool(((draws.mean(0) - g).abs() <= 5 * se + 1e-6 * g.abs()).all())
    packets = [codec.encode(g, state=g.abs().max(), generator=gen) for _ in range(n)]
    assert all(int(p.payload["ints"].abs().max()) <= 127 // n for p in packets)
    total = packets[0]
    for p in packets[1:]:
        total = codec.add(total, p)
    assert total.payload["ints"].dtype == torch.int8 and total.meta["width"] == 8
    assert int(total.payload["ints"].long().abs().max()) <= 127


def test_intsgd_container_cannot_overflow_when_summed():
    codec = get_compressor("intsgd", alpha=100.0, n_workers=12)
    g = torch.full((10,), 1.0)
    p = codec.encode(g)
    assert p.payload["ints"].dtype == torch.int16  # 100·12 > 127
    total = p
    for _ in range(11):
        total = codec.add(total, codec.encode(g))
    assert int(total.payload["ints"].max()) == 1200


def test_intsgd_adaptive_alpha_follows_the_paper():
    codec = get_compressor("intsgd", n_workers=4, sigma_sq=1e-6, rule="moving_avg_const", beta=0.5)
    st = codec.init_state(torch.zeros(100))
    assert codec.scale(torch.zeros(100), st) == pytest.approx(math.sqrt(100) / 1e-3)
    a = codec.observe(st, lr=0.1, step_sq_norm=0.5)
    assert a == pytest.approx(0.1 * 10 / math.sqrt(2 * 4 * 0.5 + 0.01 * 1e-6))
    a = codec.observe(st, lr=0.1, step_sq_norm=0.1)  # r = 0.5·0.5 + 0.5·0.1
    assert a == pytest.approx(0.1 * 10 / math.sqrt(2 * 4 * 0.3 + 0.01 * 1e-6))
    ad = get_compressor("intsgd", n_workers=4)
    st = ad.init_state(torch.zeros(100))
    assert ad.observe(st, lr=0.1, step_sq_norm=0.25) == pytest.approx(0.1 * 10 / (math.sqrt(8) * 0.5))


# -- error feedback ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,opts,factor", [("signsgd", {}, 10.0), ("topk", {"ratio": 0.1}, 20.0),
                                             ("onebit", {}, 10.0), ("cast", {"format": "fp4"}, 10.0)])
def test_error_feedback_memory_stays_bounded(name, opts, factor):
    codec = get_compressor(name, error_feedback=True, **opts)
    gen = torch.Generator().manual_seed(11)
    g0 = torch.randn(256, generator=gen)
    st = codec.init_state(g0)
    sent = torch.zeros(256)
    total = torch.zeros(256)
    norms = []
    for _ in range(1000):
        g = torch.randn(256, generator=gen)
        sent += codec(g, state=st, generator=gen)
        total += g
        norms.append(float(st.memory.norm()))
    assert max(norms) <= factor * math.sqrt(256)
    assert np.mean(norms[-200:]) <= 1.5 * np.mean(norms[100:300]) + 1e-6  # no drift upward
    assert torch.allclose(sent, total - st.memory, atol=1e-3)  # Σ sent = Σ g − e


def test_wrappers_need_a_state():
    with pytest.raises(ValueError, match="init_state"):
        ErrorFeedback(get_compressor("signsgd")).encode(torch.ones(3))


# -- non-finite input ----------------------------------------------------------------------------
ALL = ["identity", "cast", "intsgd", "hintsgd", "natural", "qsgd", "terngrad", "onebit", "signsgd",
       "topk", "randk", "powersgd"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_propagates_never_raises(name, bad):
    kw = {"format": "fp4"} if name == "cast" else ({"ratio": 0.01} if name == "randk" else {})
    codec = get_compressor(name, **kw)
    g = torch.randn(40, 30)
    g[3, 7] = bad
    out = codec(g, state=codec.init_state(g), generator=torch.Generator().manual_seed(0))
    assert not torch.isfinite(out).all()
    if name in ("qsgd", "terngrad", "signsgd", "intsgd", "hintsgd", "randk") and bad != bad:
        assert torch.isnan(out).all()


# -- registry ------------------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert set(ALL + ["isgq"]) <= set(lowbit.compressor_names())
    for name in ALL:
        assert isinstance(get_compressor(name), lowbit.Compressor)
    with pytest.raises(ValueError, match="Did you mean 'qsgd'"):
        get_compressor("qsdg")
    with pytest.raises(TypeError, match="Did you mean 'levels'"):
        get_compressor("qsgd", level=4)
    with pytest.raises(ValueError):
        get_compressor("cast", format="fp5")
    with pytest.raises(TypeError):
        get_compressor("signsgd").encode(torch.ones(3, dtype=torch.int64))


@pytest.mark.parametrize("name", ALL)
def test_every_codec_round_trips_shape_and_dtype(name):
    codec = get_compressor(name)
    for shape in [(7,), (3, 5), (2, 3, 4)]:
        g = torch.randn(shape, dtype=torch.float64)
        out = codec(g, state=codec.init_state(g), generator=torch.Generator().manual_seed(0))
        assert out.shape == g.shape and out.dtype == g.dtype


@pytest.mark.parametrize("name,opts", [("cast", {"format": "fp4"}), ("cast", {"format": "slowdown_fp4"}),
                                       ("cast", {"format": "fp8", "rounding": "stochastic"}),
                                       ("cast", {"format": "bf16"}), ("cast", {"format": "int8", "scaling": "tensor"}),
                                       ("qsgd", {}), ("natural", {})])
def test_roundtrip_shortcut_equals_encode_decode(name, opts):
    codec = get_compressor(name, **opts)
    g = torch.randn(1001, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g[5] = 0.0
    a, nbytes = codec.roundtrip(g, generator=torch.Generator().manual_seed(1))
    p = codec.encode(g, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, codec.decode(p)) and nbytes == p.nbytes
    g[7] = float("nan")
    a, _ = codec.roundtrip(g, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(a), torch.isnan(codec.decode(codec.encode(g, generator=torch.Generator().manual_seed(1)))))


@pytest.mark.parametrize("opts", [{}, {"alpha": 37.5}, {"alpha": 2.0, "bits": 8, "n_workers": 4},
                                  {"rounding": "nearest"}, {"alpha": 1e3, "bits": 16}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_intsgd_unit_coder_equals_its_packets(opts, dtype):
    """The unit coder skips building the packet; with the same random numbers it gives exactly
    decode(encode(·)) — integers decoded in float32, all NaN when an input is not finite."""
    codec = get_compressor("intsgd", **opts)
    alpha = float(codec.alpha) if codec.alpha is not None else 1.0
    for bad in (False, True):
        u = torch.randn(1000, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 50
        if bad:
            u[7] = float("nan")
        fast = codec.unit_roundtrip(u, generator=torch.Generator().manual_seed(5))
        packet = codec.decode(codec._encode_alpha(u, alpha, torch.Generator().manual_seed(5), tuple(u.shape), u.dtype))
        assert fast.dtype == packet.dtype
        assert torch.equal(fast, packet) if not bad else (fast.isnan().all() and packet.isnan().all())


@pytest.mark.parametrize("fmt,oracle", [("fp8", "float8_e4m3fn"), ("e5m2", "float8_e5m2"), ("fp4", "float4_e2m1fn"),
                                        ("fp16", "float16"), ("bf16", "bfloat16")])
def test_cpu_cast_codes_match_ml_dtypes_on_a_sweep_of_float32(fmt, oracle):
    """The CPU cast codec's round-to-nearest (torch's own conversion, or fp4 by binades) decodes
    to ml_dtypes' conversion of every float32 of a sweep over all bit patterns (every 4099th,
    and the ties and overflow boundaries of the format), NaN where ml_dtypes gives NaN."""
    import ml_dtypes
    import numpy as np

    from lowbit.formats import get_format

    f = get_format(fmt)
    pats = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    odt = getattr(np, oracle) if hasattr(np, oracle) else getattr(ml_dtypes, oracle)
    grid = np.arange(2 ** f.code_bits, dtype=np.uint8).view(odt).astype(np.float32) if f.code_bits <= 8 else np.zeros(0)
    grid = np.unique(grid[np.isfinite(grid)])
    ties = np.concatenate([(grid[:-1] + grid[1:]) / 2, np.nextafter((grid[:-1] + grid[1:]) / 2, np.inf).astype(np.float32)])
    special = np.array([f.max, f.max * 1.03, f.max * 1.05, 1e30, np.inf, 0.0, -0.0, 1e-30], dtype=np.float32)
    x = np.concatenate([pats, ties.astype(np.float32), special, -special]).astype(np.float32)
    if f.code_bits == 4:  # no NaN or inf in e2m1: finite inputs (a non-finite tensor decodes to NaN)
        x = x[np.isfinite(x)]
    codec = get_compressor("cast", format=fmt)
    got = codec.decode(codec.encode(torch.from_numpy(x))).numpy()
    want = x.astype(odt).astype(np.float32)
    both_nan = np.isnan(got) & np.isnan(want)
    bad = ~(both_nan | (got.view(np.uint32) == want.view(np.uint32)))
    assert not bad.any(), (x[bad][:5], got[bad][:5], want[bad][:5])


def _eager_then_compiled(run, monkeypatch):
    """(run() with the CPU's compiled loops off, run() with them on for buffers of any size, the
    names of the loops that were called)."""
    from lowbit.kernels import cpu

    monkeypatch.setenv("LOWBIT_CPU_COMPILE", "0")
    want = run()
    monkeypatch.setenv("LOWBIT_CPU_COMPILE", "1")
    monkeypatch.setattr(cpu, "MIN_VALUES", 2)
    calls = []
    real = cpu.call
    monkeypatch.setattr(cpu, "call", lambda fn, *a: calls.append(fn.__name__) or real(fn, *a))
    return want, run(), calls


@needs_compiled
@pytest.mark.parametrize("name,options", [
    ("intsgd", dict(alpha=64.0, bits=8, n_workers=2)), ("intsgd", dict(alpha=3e4, bits=16, n_workers=4)),
    ("intsgd", dict(bits=8, n_workers=1)), ("natural", {}), ("qsgd", dict(levels=7)), ("qsgd", dict(levels=1)),
    ("qsgd", dict(levels=100)), ("qsgd", dict(levels=16)), ("terngrad", {}),
    ("cast", dict(format="fp8", rounding="stochastic")), ("cast", dict(format="fp8_e5m2", rounding="stochastic")),
    ("cast", dict(format="float8_e4m3fnuz", rounding="stochastic")),
    ("cast", dict(format="fp8", rounding="stochastic", saturate=True))])
def test_compiled_cpu_stochastic_codecs_give_the_eager_payloads(name, options, monkeypatch):
    """The stochastic codecs' CPU encodes through the compiled loops (with the same random words;
    natural compression's fields and TernGrad's scales too) send the eager passes' payloads bit for
    bit — integers clamped to the fixed width, a NaN and ±inf included — per tensor and through the
    multi-tensor path, and decode (IntSGD's k/α and NaN mark compiled too) to the same values."""
    from lowbit.compress.many import segments

    g = torch.Generator().manual_seed(8)
    sizes = [3 * 2**17 + 5, 4_099, 8, 2**16 + 3]  # 3 mod 4 in all: a 6-bit pack's last word holds 3 codes; 8: eager
    flat = torch.randn(sum(sizes), generator=g) * torch.logspace(-6, 1, sum(sizes))
    flat[[7, 11, 13]] = torch.tensor([float("inf"), -float("inf"), 1e30])
    nan = flat.clone()
    nan[5] = float("nan")
    seg = segments(sizes, "cpu")

    def payloads():
        codec = get_compressor(name, **options)
        # words past the last whole block of 4096: 19 (an eager tail) and 4,015 (a compiled one)
        packets = [codec.encode(x, generator=torch.Generator().manual_seed(1)) for x in (flat, nan, flat[:-100])]
        out = [p.payload for p in packets] + [{"decoded": codec.decode(p)} for p in packets]
        tensors = list(torch.split(flat, sizes))
        p = codec.flat_encode(flat, tensors, seg, generator=torch.Generator().manual_seed(2))
        return out + [p, {"decoded": codec.flat_decode(p, seg, out=torch.empty_like(flat))}]

    want, got, calls = _eager_then_compiled(payloads, monkeypatch)
    assert calls, "the compiled loops were not used"
    assert name != "cast" or "stochastic_code" in calls, calls  # the codes computed from the words
    for p, q in zip(got, want):
        assert p.keys() == q.keys()
        for k in p:
            bits = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731 - NaN equals NaN
            assert p[k].dtype == q[k].dtype and torch.equal(bits(p[k]), bits(q[k])), (k, p[k].dtype)


@needs_compiled
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("fmt", ["fp8", "float8_e5m2", "float8_e4m3fnuz"])
def test_compiled_mean_of_8_bit_messages_equals_decoding_and_adding(n, fmt, monkeypatch):
    """A bucket's mean of n 8-bit messages on the CPU in one compiled loop: the values of decoding
    each and adding them in worker order, then dividing by n, bit for bit (all 256 codes); where
    a NaN is summed the mean is NaN in both, with the payload the compiled code's add keeps (C++
    compilers commute additions, so which operand's NaN survives is theirs to choose)."""
    from lowbit.distributed.bucket import BucketCoder

    sizes = [70_001, 3, 60_000]
    codec = get_compressor("cast", format=fmt)
    coder = BucketCoder(codec, sizes, "cpu")
    g = torch.Generator().manual_seed(4)
    payloads = [{"codes": torch.randint(0, 256, (sum(sizes),), dtype=torch.uint8, generator=g)} for _ in range(n)]
    want, got, calls = _eager_then_compiled(lambda: coder.mean_decoded(payloads, torch.empty(sum(sizes))), monkeypatch)
    assert calls == ["float8_mean"]
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan) and nan.any()
    assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))


@needs_compiled
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("finite", [True, False])
def test_compiled_mean_of_fp4_messages_equals_decoding_and_adding(n, finite, monkeypatch):
    """A bucket's mean of n fp4 messages on the CPU (each code's value computed from its fields, two
    per byte, in one loop): the values of decoding each and adding them in worker order, then
    dividing by n, bit for bit; a message whose input was not finite makes the mean NaN (the
    decode-and-add path)."""
    from lowbit.distributed.bucket import BucketCoder

    sizes = [70_001, 3, 60_000]
    total = sum(sizes)
    coder = BucketCoder(get_compressor("cast", format="fp4"), sizes, "cpu")
    g = torch.Generator().manual_seed(6)
    grads = [torch.randn(total, generator=g) * torch.logspace(-3, 1.5, total) for _ in range(n)]
    if not finite:
        grads[-1][9] = float("inf")

    def run():
        payloads = [coder.encode(x)[0] for x in grads]
        return coder.mean_decoded(payloads, torch.empty(total + 2)[:total])  # a storage of whole int64

    want, got, calls = _eager_then_compiled(run, monkeypatch)
    assert ("fp4_mean" in calls) == finite, calls
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert torch.isnan(got).all() != finite


@needs_compiled
@pytest.mark.parametrize("label", ["signsgd+ef", "onebit", "qsgd", "qsgd-2bit", "qsgd-6bit", "terngrad", "natural"])
def test_compiled_bucket_paths_give_the_eager_bits(label, monkeypatch):
    """Codecs of packed codes on a CPU bucket through the compiled loops — signSGD with error
    feedback (the sign bits and the residual e = v ∓ s_j in one loop per tensor), 1-bit SGD (the
    bits and their counts), and for them, QSGD and TernGrad the mean of n messages from their bytes
    by per-tensor tables, tensor by tensor, the values that share a byte with a neighbouring tensor
    done eagerly, and natural compression's mean from its exponents and its sign bits unpacked to
    bytes, in one loop, and QSGD's 6-bit mean from the halves of its 24-bit words (values in a half
    that the tensor before starts, and those of the last word, eagerly) — against the eager
    passes: the same payloads, memory and mean, bit for bit (±0, NaN and tensors whose sizes are
    not multiples of 8 included)."""
    from lowbit.compress import ErrorFeedback
    from lowbit.distributed.bucket import BucketCoder

    sizes = [70_001, 3, 60_000, 17, 20_000]
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(sum(sizes), generator=g) * torch.logspace(-4, 0, sum(sizes)) for _ in range(3)]
    grads[0][[0, 9, 70_002]] = torch.tensor([0.0, -0.0, -0.0])
    grads[1][70_002] = float("nan")  # in the second tensor of the second worker's message only
    for x in grads:  # a few large values in the third tensor: QSGD's levels up to 6 of 7 there
        x[70_004:70_009] *= torch.tensor([1e3, 2e3, 4e3, 8e3, 16e3])

    def run():
        codec = {"signsgd+ef": lambda: ErrorFeedback(get_compressor("signsgd")), "onebit": lambda: get_compressor("onebit"),
                 "qsgd": lambda: get_compressor("qsgd", levels=7), "qsgd-2bit": lambda: get_compressor("qsgd", levels=1),
                 "qsgd-6bit": lambda: get_compressor("qsgd", levels=16), "terngrad": lambda: get_compressor("terngrad"), "natural": lambda: get_compressor("natural")}[label]()
        coder = BucketCoder(codec, sizes, "cpu")
        memory = torch.zeros(sum(sizes)) if coder.feedback else None
        payloads, memories = [], []
        for x in grads:
            p, memory = coder.encode(x.clone(), memory=memory, generator=torch.Generator().manual_seed(3))
            payloads.append(p)
            memories.append(memory.clone() if memory is not None else torch.zeros(0))
        out = torch.empty(sum(sizes) + 1)[: sum(sizes)]  # a storage of whole int64: 4-bit QSGD's pairs
        return payloads, memories, coder.mean_decoded(payloads, out)

    want, got, calls = _eager_then_compiled(run, monkeypatch)
    mean = {"natural": "natural_mean", "qsgd": "nibble_levels_mean", "qsgd-6bit": "six_bit_levels_mean"}.get(label, "rows_mean")
    assert mean in calls and (not label.startswith("qsgd") or label == "qsgd-2bit" or "rows_mean" not in calls), calls
    assert label not in ("onebit", "signsgd+ef") or ("signs_and_sums" if label == "onebit" else "signed_residual") in calls
    def same(a, b):  # bit for bit, except that a NaN's sign may differ
        if not a.is_floating_point():
            return torch.equal(a, b)
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()].view(torch.int32),
                                                                  b[~b.isnan()].view(torch.int32))

    for p, q in zip(got[0], want[0]):
        assert p.keys() == q.keys() and all(same(p[k], q[k]) for k in p)
    assert all(same(a, b) for a, b in zip(got[1], want[1]))
    assert same(got[2], want[2])
    if label == "natural":  # NaN's exponent field decodes to ±inf: non-finite all the same
        assert not torch.isfinite(got[2][70_002]) and torch.isfinite(got[2][:70_001]).all()
    else:
        assert torch.isnan(got[2][70_001:70_004]).all() and not torch.isnan(got[2][:70_001]).any()


@needs_compiled
@pytest.mark.parametrize("offset,extra", [(0, 2), (1, 2), (0, 1)])
def test_compiled_two_values_per_byte_write_pairs_at_any_offset(offset, extra, monkeypatch):
    """The loops that write two float32 values per index as one int64 (QSGD's 4-bit mean and
    6-bit decode, a 256 × 2 table's decode and mean) against the eager passes, bit for bit, into
    a buffer at an even offset (the int64 view), at an odd one and in a storage of 8k + 4 bytes
    (a temporary, or the 2-D loop), NaN codes and an odd length included."""
    from lowbit.compress.base import byte_rows_mean, byte_table_decode
    from lowbit.compress.many import segments
    from lowbit.distributed.bucket import BucketCoder

    g = torch.Generator().manual_seed(9)
    sizes = [40_001, 7, 30_000]
    n = sum(sizes)
    seg = segments(sizes, "cpu")
    table = torch.randn(256, 2, generator=g)
    table[3, 1] = float("nan")
    codes = [torch.randint(0, 256, (n // 2 + 1,), dtype=torch.uint8, generator=g) for _ in range(2)]
    x = torch.randn(n, generator=g) * torch.logspace(-3, 2, n)
    qsgd = {bits: get_compressor("qsgd", levels=levels) for bits, levels in ((4, 7), (6, 16))}
    packets = {b: c.flat_encode(x, list(x.split(sizes)), seg, generator=torch.Generator().manual_seed(1))
               for b, c in qsgd.items()}

    def run():
        bufs = [torch.full((n + extra,), 7.0) for _ in range(4)]  # n + 2: a storage of whole int64
        outs = [b[offset : offset + n] for b in bufs]
        byte_table_decode(codes[0], table, n, outs[0])
        byte_rows_mean([{"c": c} for c in codes], "c", lambda p: table * torch.arange(1.0, 4.0)[:, None, None], seg, outs[1])
        BucketCoder(qsgd[4], sizes, "cpu").mean_decoded([packets[4], packets[4]], outs[2])
        qsgd[6].flat_decode(packets[6], seg, out=outs[3])
        return bufs

    want, got, calls = _eager_then_compiled(run, monkeypatch)
    assert {"rows_into", "rows_mean", "six_bit_pair_levels"} <= set(calls), calls
    assert ("nibble_levels_mean" in calls) == ((offset, extra) == (0, 2))  # else the 2-D loop of the tables
    for a, b in zip(got, want):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


@needs_compiled
def test_compiled_fp4_encode_gives_the_eager_codes_and_falls_back(monkeypatch):
    """The CPU fp4 encode compiled by torch.compile (one loop) against the eager passes, on
    float32 bit patterns of every kind (subnormals, ties, ±inf, NaN, huge); odd lengths and
    a compiler failure take the eager path (the latter with a warning)."""
    from lowbit.kernels import cpu as compiled

    g = np.random.default_rng(3)
    bits = g.integers(0, 2**32, size=40_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = np.array([0.25, 0.75, 1.25, 2.5, 3.5, 5.0, -0.25, -5.0, 7.0, 1e-40, np.inf, -np.inf, np.nan, 0.0],
                    dtype=np.float32)
    x = torch.from_numpy(np.concatenate([bits, ties, np.float32(1.5) * ties]).astype(np.float32))
    codec = get_compressor("cast", format="fp4")
    monkeypatch.setenv("LOWBIT_CPU_COMPILE", "0")
    want = codec.encode(x).payload["codes"]
    monkeypatch.setenv("LOWBIT_CPU_COMPILE", "1")
    monkeypatch.setattr(compiled, "MIN_VALUES", 2)
    calls = []
    real = compiled.call
    monkeypatch.setattr(compiled, "call", lambda fn, *a: calls.append(fn.__name__) or real(fn, *a))
    assert torch.equal(codec.encode(x).payload["codes"], want)
    assert calls == ["fp4_pack"]
    assert torch.equal(codec.encode(x[:-1]).payload["codes"], get_compressor("cast", format="fp4").encode(x[:-1]).payload["codes"])
    assert [c for c in calls if c not in ("nibble_bytes", "nibble_words_into")] == ["fp4_pack"]  # an odd length: codes eagerly, then packed

    def broken(fn):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(compiled, "call", real)
    monkeypatch.setattr(compiled, "_broken", set())
    monkeypatch.setattr(compiled, "_compiled", broken)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        assert torch.equal(codec.encode(x).payload["codes"], want)


def test_fused_or_torch_is_chosen_in_one_place():
    """``kernels.fused_codecs`` sends a call to the fused kernels only for CUDA tensors (floating
    ones float32) when the codec's configuration has kernels: CPU tensors, a configuration without
    kernels, and float64 take the torch code, so the codecs' CPU outputs come from torch."""
    x = torch.zeros(8)
    assert kernels.fused_codecs(x) is None and kernels.fused_codecs(x, when=False) is None
    assert kernels.fused_codecs(x.double()) is None and kernels.fused_codecs(x.to(torch.uint8)) is None
    if torch.cuda.is_available() and kernels.triton_available():
        c = x.cuda()
        assert kernels.fused_codecs(c) is not None and kernels.fused_codecs(c, c.to(torch.uint8)) is not None
        assert kernels.fused_codecs(c, when=False) is None and kernels.fused_codecs(c.double()) is None
        assert kernels.fused_codecs(c, x) is None  # one tensor off the device


DECLARED_BITS = [(n, {}) for n in lowbit.compressor_names()] + [
    ("cast", {"format": "fp4", "scaling": "block"}), ("cast", {"format": "fp8", "scaling": "tensor"}),
    ("cast", {"format": "fp6"}), ("qsgd", {"levels": 3}), ("intsgd", {"bits": 8, "alpha": 100.0}),
    ("hintsgd", {"bits": 16, "n_workers": 2}), ("topk", {"ratio": 0.1}), ("randk", {"ratio": 0.1}),
    ("signsgd", {"error_feedback": True}), ("qsgd", {"coding": "elias"})]


def test_declared_bits_per_coordinate_are_the_packets():
    """``traits.bits``, where declared, is what a packet of a large tensor costs per coordinate
    (8·nbytes/numel), up to the tensor's few scalars and the padding of its last byte or block
    (under 0.005 bits at 65,539 values); codecs whose size depends on the data declare None."""
    g = torch.randn(65539, generator=torch.Generator().manual_seed(3))
    declared = 0
    for name, opts in DECLARED_BITS:
        codec = get_compressor(name, **opts)
        if name in ("isgq", "powersgd"):  # factors, or the shape's rank: no per-coordinate figure
            assert codec.traits.bits is None, name
            continue
        state = codec.init_state(g)
        p = codec.encode(g, state=state, generator=torch.Generator().manual_seed(0))
        if codec.traits.bits is None:  # IntSGD's and HintSGD's automatic width, Elias codes
            assert (name in ("intsgd", "hintsgd") and "bits" not in opts) or opts.get("coding") == "elias", name
            continue
        declared += 1
        assert abs(8 * p.nbytes / g.numel() - codec.traits.bits) < 5e-3, (name, opts, p.bits_per_coordinate)
    assert declared >= 16


def test_codecs_table_from_the_cli(capsys):
    """``lowbit codecs`` lists every registered codec with its declared traits beside what its
    packet measured: the declared bits per coordinate equal the measured ones where declared."""
    assert main(["codecs", "--numel", "8192"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    for name in lowbit.compressor_names():
        cols = rows[name]
        assert cols[1:3] == [str(get_compressor(name).unbiased), str(get_compressor(name).summable)]
        if cols[3] != "data":
            assert abs(float(cols[3]) - float(cols[4])) < 0.01, cols


def test_onebit_float64_sums_are_torchs():
    """1-bit SGD's per-tensor Σx and Σ|x| in float64 through one reused float64 copy: the values of
    ``sum(dtype=float64)`` and ``vector_norm(·, 1, dtype=float64)`` bit for bit, over sizes that
    exercise the reductions' vector widths and tails and values over 40 binades."""
    from lowbit.compress.onebit import float64_sums

    g = torch.Generator().manual_seed(0)
    sizes = [1, 7, 31, 64, 1000, 4097, 65537, (1 << 20) + 3]
    ts = [torch.randn(n, generator=g) * torch.logspace(-20, 20, n) for n in sizes]
    tot, mag = float64_sums(ts)
    for t, s, m in zip(ts, tot, mag):
        assert torch.equal(s, t.sum(dtype=torch.float64)) and torch.equal(m, torch.linalg.vector_norm(t, 1, dtype=torch.float64))


@needs_compiled
def test_natural_decode_in_one_loop_is_the_eager_decode(monkeypatch):
    """Natural compression's CPU decode of a large packet (one compiled loop, the patterns
    (s ≪ 31) | (e ≪ 23)) against the eager decode, bit for bit: ±0, subnormal inputs rounded to
    0 or 2^−126, ±inf, NaN (an exponent field of 255 decodes to ±inf) and an odd length."""
    x = torch.randn((1 << 20) + 5, generator=torch.Generator().manual_seed(4))
    x[:6] = torch.tensor([0.0, -0.0, 1e-45, -3e-39, float("inf"), float("nan")])
    x[6] = -float("inf")
    packet = get_compressor("natural").encode(x, generator=torch.Generator().manual_seed(1))
    want, got, calls = _eager_then_compiled(lambda: get_compressor("natural").decode(packet), monkeypatch)
    assert "natural_mean" in calls
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_natural_fields_from_the_words_are_quantizes():
    """Natural compression's one-loop fields (the pattern of |x| plus the low 23 bits of its word,
    shifted) against ``quantize(x, pow2, "stochastic")`` with the same words, on 2^21 random bit
    patterns with every subnormal pattern below 1,000, the 1,000 below the largest finite value
    (carries to inf), ±0, ±inf and NaNs."""
    from lowbit.compress.natural import _POW2
    from lowbit.kernels import cpu
    from lowbit.quantize import random_words

    n = 1 << 21
    b = np.random.default_rng(0).integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    b[:1000] = np.arange(1000, dtype=np.uint32)
    b[1000:2000] = 0x7F7FFFFF - np.arange(1000, dtype=np.uint32)
    b[2000:2010] = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x00800000,
                    0x807FFFFF, 0x3F800000]
    x = torch.from_numpy(b.view(np.float32).copy())
    q = lowbit.quantize(x, _POW2, "stochastic", generator=torch.Generator().manual_seed(4)).view(torch.int32)
    words = random_words(n, torch.Generator().manual_seed(4)).clone()
    exponent, negative = torch.empty(n, dtype=torch.uint8), torch.empty(n, dtype=torch.uint8)
    cpu.natural_fields(x.view(torch.int32), words, exponent, negative)
    assert torch.equal(exponent, ((q >> 23) & 0xFF).to(torch.uint8))
    assert torch.equal(negative, (q < 0).to(torch.uint8))


@needs_compiled
@pytest.mark.parametrize("fmt", ["fp8", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"])
def test_eight_bit_cast_decode_in_one_loop_is_the_eager_decode(fmt, monkeypatch):
    """An 8-bit cast's CPU decode of a large packet (one compiled loop that computes each code's
    value from its fields) against the eager index_select from the table of torch's conversions,
    bit for bit (NaN patterns included), every one of the 256 codes present."""
    codec = get_compressor("cast", format=fmt)
    codes = torch.arange(256, dtype=torch.uint8).repeat(1 << 12)  # 2^20 codes
    codes = torch.cat([codes, torch.randint(0, 256, (7,), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))])
    packet = Packet({"codes": codes}, (codes.numel(),), torch.float32)
    want, got, calls = _eager_then_compiled(lambda: codec.decode(packet), monkeypatch)
    assert "float8_mean" in calls
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
