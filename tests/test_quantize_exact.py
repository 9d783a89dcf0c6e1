"""quantize(x, fmt) against independent oracles: ml_dtypes casts and float64 value tables."""

import math

import numpy as np
import pytest
import torch

import lowbit
from oracles import ML_DTYPES, ml_round_trip, nearest_oracle, same_bits, seed_quantizer, value_table

NAMES = list(ML_DTYPES)


def special_values(name: str) -> np.ndarray:
    """±0, ±max, ±smallest normal/subnormal, every midpoint between neighbouring representable
    values (and the float32 values just beside it), the overflow threshold, inf, NaN."""
    fmt = lowbit.get_format(name)
    if fmt.code_bits <= 8:
        t = value_table(fmt)
    else:  # 16-bit formats: the values between 1/4 and 4, plus the ends of the range
        t = np.concatenate([[0.0, fmt.smallest_subnormal, fmt.smallest_normal], np.arange(0.25, 4, fmt.eps / 4)])
        t = np.unique(np.concatenate([t, [fmt.max * (1 - fmt.eps / 2), fmt.max]]))
    mids = (t[:-1] + t[1:]) / 2
    over = fmt.max + 2.0 ** (math.floor(math.log2(fmt.max)) - fmt.man_bits) / 2  # halfway past max
    core = np.concatenate([t, mids, [over, min(fmt.max * 4, 3.4e38), 1e30, 3.4e38]]).astype(np.float32)
    around = np.concatenate([np.nextafter(core, np.float32(np.inf)), np.nextafter(core, np.float32(0))])
    v = np.concatenate([core, around, [np.inf, np.nan, 1e-45, 1e-40, 2**-126]]).astype(np.float32)
    return np.concatenate([v, -v])


@pytest.mark.parametrize("name", NAMES)
def test_special_and_boundary_values_match_ml_dtypes(name, native_paths):
    fmt = lowbit.get_format(name)
    x = special_values(name)
    out = lowbit.quantize(torch.from_numpy(x), name).numpy()
    bad = same_bits(out, ml_round_trip(x, name), x, fmt)
    assert not bad.any(), f"{bad.sum()} mismatches, e.g. x={x[bad][:4]} → {out[bad][:4]}"


@pytest.mark.parametrize("name", NAMES)
def test_random_bit_patterns_match_ml_dtypes(name, native_paths):
    """10^6 uniformly random float32 bit patterns, and 10^6 values spread over ±2^±30."""
    fmt = lowbit.get_format(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    bits = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    spread = (rng.standard_normal(1_000_000) * 2.0 ** rng.uniform(-30, 30, 1_000_000)).astype(np.float32)
    for x in (bits.view(np.float32), spread):
        out = lowbit.quantize(torch.from_numpy(x), name).numpy()
        bad = same_bits(out, ml_round_trip(x, name), x, fmt)
        assert not bad.any(), f"{bad.sum()} mismatches, e.g. x={x[bad][:4]} → {out[bad][:4]}"


@pytest.mark.parametrize("spec,ml", [("e4m3", "float8_e4m3"), ("e5m2", "float8_e5m2"),
                                     ("e3m4", "float8_e3m4"), ("e5m10", "float16")])
def test_em_strings_are_ieee_style(spec, ml):
    fmt = lowbit.get_format(spec)
    assert fmt.has_inf and fmt.subnormals and fmt.bias == 2 ** (fmt.exp_bits - 1) - 1
    x = special_values(ml)
    out = lowbit.quantize(torch.from_numpy(x), spec).numpy()
    assert not same_bits(out, ml_round_trip(x, ml), x, fmt).any()


@pytest.mark.parametrize("name,E,M", [("slowdown_fp4", 2, 1), ("slowdown_fp8", 4, 3)])
def test_seed_compatible_formats_match_the_reproduction_quantizer(name, E, M):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(200_000) * 2.0 ** rng.uniform(-14, 10, 200_000)).astype(np.float32)
    x = np.concatenate([x, [0, -0.0, 3.5, -3.5, 4, 5, 1e6, 0.125, 0.375]]).astype(np.float32)
    out = lowbit.quantize(torch.from_numpy(x), name).numpy().astype(np.float64)
    np.testing.assert_array_equal(out, seed_quantizer(x, E, M))
    if name == "slowdown_fp4":
        assert sorted(set(np.abs(out).tolist())) == [0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4]


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float4_e2m1fn", "float6_e2m3fn", "slowdown_fp4"])
def test_float64_input_is_rounded_once(name):
    """float64 values just beside a tie must not be double-rounded through float32."""
    fmt = lowbit.get_format(name)
    t = value_table(fmt)
    mids = (t[:-1] + t[1:]) / 2
    x = np.concatenate([mids + mids * 2.0**-40, mids - mids * 2.0**-40, mids, t])
    x = np.concatenate([x, -x])
    out = lowbit.quantize(torch.from_numpy(x), name).numpy()
    np.testing.assert_array_equal(out, nearest_oracle(x, fmt))


def test_saturate_clamps_finite_values():
    x = torch.tensor([1e4, -1e4, 500.0, float("inf"), -float("inf"), float("nan")])
    fn = lowbit.quantize(x, "fp8", saturate=True)
    assert fn[:5].tolist() == [448.0, -448.0, 448.0, 448.0, -448.0]  # no inf: ±inf clamps too
    assert torch.isnan(fn[5])
    e5 = lowbit.quantize(x * 10, "fp8_e5m2", saturate=True)
    assert e5[:3].tolist() == [57344.0, -57344.0, 5120.0]
    assert e5[3].item() == math.inf and e5[4].item() == -math.inf
    assert lowbit.quantize(x, "fp4", saturate=True)[:5].tolist() == [6, -6, 6, 6, -6]


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "float6_e3m2fn", "slowdown_fp8"])
def test_round_toward_zero_is_the_largest_value_not_above(name):
    fmt = lowbit.get_format(name)
    t = value_table(fmt)
    rng = np.random.default_rng(3)
    x = (rng.uniform(-1, 1, 100_000) * fmt.max * 1.5).astype(np.float32)
    x = np.concatenate([x, (x / 2**12).astype(np.float32), t.astype(np.float32)])
    out = lowbit.quantize(torch.from_numpy(x), name, "zero").numpy()
    i = np.clip(np.searchsorted(t, np.abs(x.astype(np.float64)), side="right") - 1, 0, len(t) - 1)
    np.testing.assert_array_equal(out, np.copysign(t[i], x))


def test_nan_stays_nan_in_every_format():
    x = torch.tensor([float("nan"), 1.0])
    for name in NAMES + ["slowdown_fp4", "int8"]:
        assert torch.isnan(lowbit.quantize(x, name)[0]), name


def test_fnuz_has_no_negative_zero():
    out = lowbit.quantize(torch.tensor([-0.0, -1e-20]), "float8_e4m3fnuz")
    assert not torch.signbit(out).any()
    assert torch.signbit(lowbit.quantize(torch.tensor([-0.0, -1e-20]), "fp8")).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_shape_and_strides_are_kept(dtype):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 40, 7, generator=g).to(dtype)
    views = [base, base.transpose(0, 2), base[:, ::3, 1:], base.permute(2, 0, 1)[..., ::2]]
    for v in views:
        out = lowbit.quantize(v, "fp8")
        assert out.dtype == dtype and out.shape == v.shape
        ref = lowbit.quantize(v.contiguous().reshape(-1), "fp8").reshape(v.shape)
        assert torch.equal(out, ref)
        x32 = v.float().numpy()
        expect = torch.from_numpy(ml_round_trip(x32, "float8_e4m3fn")).to(dtype)
        assert torch.equal(out, expect)


def test_integer_formats_round_half_even_and_saturate():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 126.6, 200.0, -1e9, 3.2])
    assert lowbit.quantize(x, "int8").tolist() == [0, 2, 2, -0.0, -2, 127, 127, -127, 3]
    assert lowbit.quantize(x, "int4").tolist() == [0, 2, 2, -0.0, -2, 7, 7, -7, 3]


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"Did you mean 'float8_e4m3fn'.*Valid names"):
        lowbit.quantize(torch.ones(3), "float8_e4m3f")
    with pytest.raises(TypeError, match="floating-point"):
        lowbit.quantize(torch.ones(3, dtype=torch.int32), "fp8")
    with pytest.raises(TypeError, match="floating-point|complex"):
        lowbit.quantize(torch.ones(3, dtype=torch.complex64), "fp8")
    with pytest.raises(ValueError, match="rounding"):
        lowbit.quantize(torch.ones(3), "fp8", rounding="up")
    with pytest.raises(ValueError):
        lowbit.FloatFormat(9, 3)
    e = lowbit.quantize(torch.empty(0, 3), "fp4")
    assert e.shape == (0, 3) and e.dtype == torch.float32
    assert lowbit.quantize(torch.empty(0, dtype=torch.float64), "fp4", "stochastic").numel() == 0


def test_format_table_constants_match_ml_dtypes():
    import ml_dtypes

    for name, t in ML_DTYPES.items():
        fmt, fi = lowbit.get_format(name), ml_dtypes.finfo(t)
        assert fmt.max == float(fi.max), name
        assert fmt.smallest_normal == float(fi.smallest_normal), name
        assert fmt.smallest_subnormal == float(fi.smallest_subnormal), name
        assert fmt.eps == float(fi.eps), name
        assert fmt.code_bits == fi.bits, name
