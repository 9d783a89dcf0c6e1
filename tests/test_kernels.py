"""The fused Triton kernel: the interpreter on the CPU (always, where Triton is installed) and the
real kernel on a GPU (only where one is present)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import lowbit
from conftest import needs_cuda
from oracles import ML_DTYPES, ml_round_trip, same_bits

FORMATS = ["float16", "bfloat16", "float8_e4m3fn", "float8_e4m3", "float8_e5m2", "float8_e3m4",
           "float8_e4m3fnuz", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn"]


def test_triton_kernel_in_interpreter_matches_ml_dtypes():
    pytest.importorskip("triton")
    script = textwrap.dedent(
        f"""
        import numpy as np, torch, lowbit, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from oracles import ml_round_trip, same_bits, neighbours
        from lowbit.kernels.quantize_triton import quantize_triton
        rng = np.random.default_rng(0)
        bits = rng.integers(0, 2**32, size=12288, dtype=np.uint64).astype(np.uint32).view(np.float32)
        spread = (rng.standard_normal(12288) * 2.0 ** rng.uniform(-30, 20, 12288)).astype(np.float32)
        x = np.concatenate([bits, spread, [np.inf, -np.inf, np.nan, 0.0, -0.0]]).astype(np.float32)
        for name in {FORMATS!r}:
            fmt = lowbit.get_format(name)
            for sat in (False, True):
                out = quantize_triton(torch.from_numpy(x), fmt, "nearest", sat).numpy()
                ref = lowbit.quantize(torch.from_numpy(x), fmt, saturate=sat).numpy()
                assert not same_bits(out, ref, x, fmt).any(), (name, sat)
            out = quantize_triton(torch.from_numpy(x), fmt, "nearest", False).numpy()
            assert not same_bits(out, ml_round_trip(x, name), x, fmt).any(), name
            z = quantize_triton(torch.from_numpy(x), fmt, "zero", False).numpy()
            assert not same_bits(z, lowbit.quantize(torch.from_numpy(x), fmt, "zero").numpy(), x, fmt).any()
        g = torch.Generator().manual_seed(0)
        fmt = lowbit.get_format("fp4")
        for v in (0.3, -1.7, 0.02):
            q = quantize_triton(torch.full((200000,), v), fmt, "stochastic", False, g).double()
            lo, hi = neighbours(v, fmt)
            assert set(torch.unique(q).tolist()) <= {{lo, hi}}
            p = (v - lo) / (hi - lo)
            assert abs(q.mean().item() - v) <= 5 * abs(hi - lo) * (p * (1 - p) / 200000) ** 0.5
        print("ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_cpu_falls_back_without_triton(monkeypatch):
    from lowbit import kernels

    kernels.triton_available.cache_clear()
    monkeypatch.setitem(sys.modules, "triton", None)
    try:
        assert not kernels.supports(lowbit.get_format("fp8"))
        x = torch.randn(1000)
        assert torch.equal(lowbit.quantize(x, "fp8"), torch.from_numpy(ml_round_trip(x.numpy(), "float8_e4m3fn")))
    finally:
        kernels.triton_available.cache_clear()


@needs_cuda
@pytest.mark.parametrize("name", FORMATS)
def test_cuda_matches_ml_dtypes(name):
    fmt = lowbit.get_format(name)
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    out = lowbit.quantize(torch.from_numpy(bits).cuda(), name).cpu().numpy()
    assert not same_bits(out, ml_round_trip(bits, name), bits, fmt).any()
    x = torch.randn(1 << 20, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    a = lowbit.quantize(x, name, "stochastic", generator=g)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert torch.equal(a, lowbit.quantize(x, name, "stochastic", generator=g))
    lo = lowbit.quantize(x, name, "zero")
    assert ((a == lo) | (a.abs() > lo.abs())).all()


@needs_cuda
def test_cuda_stochastic_is_unbiased():
    g = torch.Generator(device="cuda").manual_seed(1)
    for v in (0.3, -0.013, 2.2):
        q = lowbit.quantize(torch.full((1 << 22,), v, device="cuda"), "fp4", "stochastic", generator=g)
        from oracles import neighbours

        lo, hi = neighbours(v, lowbit.get_format("fp4"))
        p = (v - lo) / (hi - lo)
        se = abs(hi - lo) * (p * (1 - p) / (1 << 22)) ** 0.5
        assert abs(q.double().mean().item() - v) <= 5 * se


def test_code_rounding_equals_the_quantize_kernel_bit_for_bit(tmp_path):
    """The codec kernels' codes (``_round_code``) against the quantize kernel's values
    (``_round_bits``) on the same inputs and the same random words, nearest and stochastic, for every
    named format: the code's value (lowbit's decode table) is the rounded value, bit for bit —
    the code conversion and the special codes checked (Triton's interpreter)."""
    pytest.importorskip("triton")
    script = tmp_path / "round_code.py"
    script.write_text(textwrap.dedent(
        f"""
        import numpy as np, torch, triton, triton.language as tl, lowbit
        from lowbit.packing import decode_lut
        from lowbit.kernels.rounding import _code_constants, _constants, _round_bits, _round_code

        @triton.jit
        def both(x_ptr, r_ptr, code_ptr, val_ptr, n, S: tl.constexpr, EMIN_FIELD: tl.constexpr, SUB: tl.constexpr,
                 ADDER: tl.constexpr,
                 MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr,
                 OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, LOW: tl.constexpr,
                 LOW_EXP: tl.constexpr, MAX_BITS: tl.constexpr, OVER_BITS: tl.constexpr, INF_OUT: tl.constexpr,
                 BLOCK: tl.constexpr):
            o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            b = tl.load(x_ptr + o, mask=o < n, other=0)
            r = tl.load(r_ptr + o, mask=o < n, other=0)
            tl.store(code_ptr + o, _round_code(b, r, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M,
                                               EF, OVER_CODE, INF_CODE, NAN_CODE), mask=o < n)
            tl.store(val_ptr + o, _round_bits(b, r, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, MAX_BITS, OVER_BITS,
                                              INF_OUT, FNUZ, MODE), mask=o < n)

        rng = np.random.default_rng(0)
        n = 1 << 15
        bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32).view(np.int32)
        spread = (rng.standard_normal(n) * 2.0 ** rng.uniform(-40, 20, n)).astype(np.float32).view(np.int32)
        x = torch.from_numpy(np.concatenate([bits, spread]))
        specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45, 3e38]).view(torch.int32)
        x[:7] = specials
        r = torch.from_numpy(rng.integers(0, 2**31, size=x.numel(), dtype=np.int64).astype(np.int32))
        r[:64] = torch.tensor([0, 2**31 - 1] * 32, dtype=torch.int32)
        for name in {FORMATS!r} + ["float8_e4m3b11fnuz", "fp4"]:
            fmt = lowbit.get_format(name)
            lut = decode_lut(fmt, "cpu", torch.float32)
            for rounding, sat in (("nearest", False), ("nearest", True), ("stochastic", False), ("stochastic", True)):
                k = _constants(fmt, rounding, sat)
                c = _code_constants(fmt, rounding, sat)
                code, val = torch.empty_like(x), torch.empty_like(x)
                both[(triton.cdiv(x.numel(), 4096),)](
                    x, r, code, val, x.numel(), **c, MAX_BITS=k["MAX_BITS"], OVER_BITS=k["OVER_BITS"],
                    INF_OUT=k["INF_OUT"], BLOCK=4096)
                got, val = lut[code.long()], val.view(torch.float32)
                same = (got.view(torch.int32) == val.view(torch.int32)) | (torch.isnan(got) & torch.isnan(val))
                if not fmt.has_nan:  # no NaN code: the codec sends a finite flag beside the codes
                    same |= torch.isnan(val)
                assert same.all(), (name, rounding, sat, x[~same][:4], code[~same][:4], val[~same][:4])
        print("ok")
        """))
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_codec_kernels_in_interpreter_match_the_torch_paths():
    """Fused encode/decode kernels of cast, natural, signsgd, intsgd, QSGD and TernGrad against
    lowbit's torch code paths: the named tests of ``kernels_interpreted.py``, run in their own
    pytest process under Triton's interpreter (Triton reads TRITON_INTERPRET at import)."""
    pytest.importorskip("triton")
    here = os.path.dirname(__file__)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider",
                        os.path.join(here, "kernels_interpreted.py")], cwd=here, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0 and " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-4000:]


def test_statistics_kernel_in_interpreter_matches_float64():
    """The one-read statistics kernel (Σg², Σg̃², Σ(g̃ − g)², non-zero and flushed counts per tensor
    of a flat buffer) against numpy in float64, with an empty tensor and tensors smaller than
    and spanning several blocks (Triton's interpreter on the CPU)."""
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from lowbit.compress.many import Segments
        from lowbit.kernels import codecs_triton as K
        g = torch.Generator().manual_seed(0)
        sizes = [5000, 3, 0, 9000, 64, 4096, 300000]  # the last: more blocks than one pass of the row sum
        x = torch.randn(sum(sizes), generator=g) * 1e-3
        x[10:20] = 0.0
        y = torch.round(x * 4000) / 4000
        t = K.tensor_sums(x, y, Segments(sizes, "cpu").block_plan(K.BLOCK)).numpy()
        X, Y, off = x.double().numpy(), y.double().numpy(), 0
        for j, s in enumerate(sizes):
            a, b = X[off:off + s], Y[off:off + s]
            want = [np.sum(a * a), np.sum(b * b), np.sum((b - a) ** 2), np.sum(a != 0), np.sum((a != 0) & (b == 0))]
            assert np.allclose(t[j], want, rtol=1e-12, atol=0), (j, t[j], want)
            off += s
        print("ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_stochastic_integer_rounding_kernel_is_unbiased_in_interpreter():
    """IntSGD's one-pass Int(α·x) kernel: every draw is ⌊αx⌋ or ⌈αx⌉, integers ≥ 2^23, ±inf and NaN
    pass through, and the mean of 600 draws of 256 values lies within 6 standard errors of α·x
    (a Bernoulli's variance is at most 1/4; 6σ over 256 values fails with probability below 1e-6)."""
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import torch
        from lowbit.kernels.codecs_triton import round_stochastic
        x = torch.rand(256, generator=torch.Generator().manual_seed(0)) * 10 - 5
        draws = torch.stack([round_stochastic(x, 3.0, torch.Generator().manual_seed(i)) for i in range(600)])
        t = x * 3.0
        assert ((draws == torch.floor(t)) | (draws == torch.ceil(t))).all()
        assert ((draws.mean(0) - t).abs() <= 6 * 0.5 / 600 ** 0.5).all()
        special = torch.tensor([2.0 ** 24 + 2, float("inf"), -float("inf"), float("nan")])
        r = round_stochastic(special, 1.0, torch.Generator().manual_seed(1))
        assert r[0] == 2.0 ** 24 + 2 and r[1] == float("inf") and r[2] == -float("inf") and torch.isnan(r[3])
        print("ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
