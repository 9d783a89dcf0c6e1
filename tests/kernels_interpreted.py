"""The fused codec kernels (lowbit.kernels.codecs_triton) against lowbit's torch code paths, run
on CPU tensors through Triton's interpreter.  Not collected with the suite: Triton reads
TRITON_INTERPRET when it is imported, so test_kernels.py runs this file in its own pytest process
with the variable set."""

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":  # pragma: no cover - a guard against a direct run
    pytest.skip("run by tests/test_kernels.py under TRITON_INTERPRET=1", allow_module_level=True)

import lowbit  # noqa: E402
from lowbit.compress.base import Packet  # noqa: E402
from lowbit.kernels import codecs_triton as K  # noqa: E402
from lowbit.kernels.quantize_triton import quantize_triton  # noqa: E402
from lowbit.packing import decode_lut, float_codes, pack  # noqa: E402
from lowbit.quantize import round_integer, scaled_values  # noqa: E402
from lowbit.kernels import stream  # noqa: E402
from lowbit.kernels.philox import PHILOX_ROUNDS, block_words  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

CAST_FORMATS = ["fp8", "float8_e5m2", "float8_e4m3fnuz", "float8_e4m3", "fp4", "e3m4", "float8_e4m3b11fnuz", "e2m1"]


@pytest.fixture(scope="module")
def x():
    """8,229 values over 20 binades, the first six special: ±0, ±inf, an overflow, a tiny value."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8192 + 37, generator=g) * 2.0 ** torch.randint(-12, 8, (8229,), generator=g)
    x[:6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e30, -3e-30])
    return x


@pytest.fixture(scope="module")
def segmented():
    """Six tensors of mixed sizes and magnitudes (one all zeros) in one flat buffer, and the
    buffer's segment index."""
    g = torch.Generator().manual_seed(0)
    sizes = [5, 4096, 1, 3001, 37, 4100]
    parts = [torch.randn(k, generator=g) * 10.0 ** (j - 3) for j, k in enumerate(sizes)]
    parts[2].zero_()
    seg = torch.repeat_interleave(torch.arange(len(sizes), dtype=torch.int32), torch.tensor(sizes))
    return parts, torch.cat(parts), seg


def _same(a, b):
    return (a == b) | (torch.isnan(a) & torch.isnan(b))


@pytest.mark.parametrize("name", CAST_FORMATS)
def test_stochastic_cast_decodes_to_quantize_and_to_a_neighbour(name, x):
    """One stream for both kernels (value j·Q + i of a block takes word j of counter pid·Q + i):
    the decoded stochastic cast is ``quantize_triton``'s stochastic value bit for bit, and one of
    the two neighbours of x (or an overflow), with x's sign."""
    fmt = lowbit.get_format(name)
    sr, _ = K.cast_encode(x, fmt, "stochastic", False, torch.Generator().manual_seed(5))
    dec = K.cast_decode(sr, fmt, x.numel())
    q = quantize_triton(x, fmt, "stochastic", False, torch.Generator().manual_seed(5))
    assert _same(dec, q)[6:].all()
    a, lo = dec.abs(), lowbit.quantize(x, fmt, "zero").abs()  # the lower neighbour of |x|
    above = (a > x.abs()) & (lowbit.quantize(torch.nextafter(a, torch.zeros(())), fmt, "zero") == lo)
    assert ((a == lo) | above | ~torch.isfinite(dec))[6:].all()
    assert ((torch.sign(dec) == torch.sign(x)) | (dec == 0) | ~torch.isfinite(dec))[6:].all()


@pytest.mark.parametrize("name", CAST_FORMATS)
@pytest.mark.parametrize("saturate", [False, True])
def test_nearest_cast_codes_and_values_equal_the_torch_path(name, saturate, x):
    fmt = lowbit.get_format(name)
    codes, fin = K.cast_encode(x, fmt, "nearest", saturate)
    q = lowbit.quantize(x, fmt, saturate=saturate)
    assert torch.equal(codes, pack(float_codes(q, fmt, quantized=True, nan_ok=True), fmt.code_bits))
    assert (fin is None) == fmt.has_nan and (fmt.has_nan or int(fin) == 0)  # the input holds ±inf
    assert _same(K.cast_decode(codes, fmt, x.numel()), q).all()


@pytest.mark.parametrize("name", CAST_FORMATS)
def test_cast_decode_of_every_code_and_of_a_flagged_packet(name, x):
    """Every code decodes to the format's table; a packet flagged non-finite decodes to NaN."""
    fmt = lowbit.get_format(name)
    allc = torch.arange(2**fmt.code_bits)
    got = K.cast_decode(pack(allc, fmt.code_bits), fmt, allc.numel())
    assert _same(got, decode_lut(fmt, x.device, torch.float32)).all()
    y = x[6:]
    codes, fin = K.cast_encode(y, fmt, "nearest", False)
    assert fmt.has_nan or int(fin) == 1
    assert torch.isnan(K.cast_decode(codes, fmt, y.numel(), torch.zeros(1, dtype=torch.uint8))).all()


def test_natural_rounds_to_a_neighbouring_power_of_two(x):
    xs = x[6:]
    e, s = K.natural_encode(xs, torch.Generator().manual_seed(1))
    v = K.natural_decode(e, s, xs.numel())
    lo = torch.exp2(torch.floor(torch.log2(xs.abs())))
    assert ((v.abs() == lo) | (v.abs() == 2 * lo)).all() and (torch.sign(v) == torch.sign(xs)).all()


def test_sign_codes_equal_the_signsgd_packet(x):
    xs = x[6:]
    s, scale = K.sign_encode(xs)
    codec = lowbit.get_compressor("signsgd")
    ref = codec.encode(xs)
    assert torch.equal(s, ref.payload["signs"]) and torch.allclose(scale, ref.payload["scale"], rtol=1e-6)
    assert torch.allclose(K.sign_decode(s, scale, xs.numel()), codec.decode(ref), rtol=1e-6)


def test_int8_nearest_equals_round_integer_and_the_finite_flag_sees_every_quarter():
    t = torch.linspace(-3, 3, 8193)
    ints, fin = K.int8_encode(t, 10.0, 20, False)
    assert torch.equal(ints.float(), round_integer(t * 10.0, "nearest").clamp(-20, 20)) and int(fin) == 1
    assert torch.allclose(K.int8_decode(ints, fin, 10.0), ints.float() / 10.0)
    for bad in (float("nan"), float("inf"), -float("inf")):  # the finite flag, from any quarter of a block
        for at in (5, 4097, 8192):
            tb = t.clone()
            tb[at] = bad
            assert int(K.int8_encode(tb, 10.0, 20, False)[1]) == 0, (bad, at)


@pytest.mark.parametrize("block", [0, 32])
def test_cast_finite_flag_sees_every_quarter_and_the_last_program(block):
    """The 4-bit cast's finite flag (one byte, set to 0 from any lane that reads a NaN or ±inf,
    plain and MX-scaled): 1 for a finite input, 0 for one non-finite value in any quarter of a
    program, in the next program and in the last, partial one; the codes of the finite values are
    unchanged by it."""
    fmt = lowbit.get_format("fp4")
    t = torch.linspace(-3, 3, 8229)

    def encode(v):
        if block:
            codes, _, fin = K.cast_block_encode(v, fmt, "nearest", block, "ocp")
        else:
            codes, fin = K.cast_encode(v, fmt, "nearest", False)
        return codes, fin

    codes, fin = encode(t)
    assert int(fin) == 1
    for bad in (float("nan"), float("inf"), -float("inf")):
        for at in (5, 1029, 2100, 4000, 4097, 8228):
            tb = t.clone()
            tb[at] = bad
            c, f = encode(tb)
            assert fin.shape == f.shape == (1,) and int(f) == 0, (bad, at)
            if not block:  # the other codes are as before
                keep = torch.ones(t.numel(), dtype=torch.bool)
                keep[at] = False
                got = K.cast_decode(c, fmt, t.numel())[keep]
                assert torch.equal(got, K.cast_decode(codes, fmt, t.numel())[keep])


def test_int8_stochastic_is_unbiased():
    """100,000 draws of Int(0.3): only 0 and 1, mean within 5 standard errors of 0.3."""
    si, _ = K.int8_encode(torch.full((100000,), 0.3), 1.0, 100, True, torch.Generator().manual_seed(2))
    assert set(si.unique().tolist()) <= {0, 1} and abs(si.float().mean().item() - 0.3) < 5 * (0.21 / 1e5) ** 0.5


@pytest.mark.parametrize("levels", [1, 4, 16, 100])
def test_qsgd_levels_decode_as_the_torch_unpacking_and_round_to_a_neighbour(levels):
    v = torch.randn(5003, generator=torch.Generator().manual_seed(9))
    q = lowbit.get_compressor("qsgd", levels=levels)
    norm = v.norm().reshape(1)
    codes = K.levels_encode(v, norm, levels, q._lbits, torch.Generator().manual_seed(levels))
    dec = K.levels_decode(codes, norm, levels, q._lbits, v.numel())
    ref = q.decode(Packet({"norm": norm, "codes": codes}, (5003,)))  # torch unpacking of the same bytes
    assert torch.allclose(dec, ref, rtol=1e-6, atol=0)
    lev = dec.abs() / norm * levels
    assert torch.allclose(lev, lev.round(), atol=1e-3) and ((lev - v.abs() / norm * levels).abs() < 1 + 1e-4).all()


def test_terngrad_decodes_as_the_torch_unpacking():
    v = torch.randn(5003, generator=torch.Generator().manual_seed(9))
    s1 = v.abs().max().reshape(1)
    codes = K.levels_encode(v, s1, 1, 1, torch.Generator().manual_seed(3))
    ref = lowbit.get_compressor("terngrad").decode(Packet({"scale": s1, "codes": codes}, (5003,)))
    assert torch.equal(K.levels_decode(codes, s1, 1, 1, 5003), ref)


def test_l2norm_against_float64():
    v = torch.randn(5003, generator=torch.Generator().manual_seed(9))
    for w in (v, torch.tensor([3e25, 4e25]), torch.tensor([3e-25, -4e-25]), torch.zeros(0)):
        ref = torch.linalg.vector_norm(w.double())
        assert abs(K.l2norm(w).double() - ref) <= 1e-6 * ref


@pytest.mark.parametrize("levels,lbits", [(7, 3), (16, 5), (1, 1)])
def test_levels_of_many_tensors_use_each_tensors_norm(levels, lbits, segmented):
    parts, flat, seg = segmented
    norms = torch.stack([q.norm() for q in parts])
    c = K.levels_encode(flat, norms, levels, lbits, torch.Generator().manual_seed(4), seg=seg)
    out = torch.full_like(flat, 9.0)
    dec = K.levels_decode(c, norms, levels, lbits, flat.numel(), seg=seg, out=out)
    assert dec is out
    safe = torch.where(norms > 0, norms, 1.0)[seg.long()]
    lev = dec.abs() / safe * levels
    assert torch.allclose(lev, lev.round(), atol=1e-3) and ((lev - flat.abs() / safe * levels).abs() < 1 + 1e-4).all()
    assert (dec[seg.long() == 2] == 0).all()


def test_signs_and_int8_of_many_tensors_equal_each_tensor_alone(segmented):
    parts, flat, seg = segmented
    s, _ = K.sign_encode(flat)
    sc = torch.stack([q.abs().mean() for q in parts])
    dec = K.sign_decode(s, sc, flat.numel(), seg=seg)
    alone = [K.sign_decode(K.sign_encode(q)[0], sc[j : j + 1], q.numel()) for j, q in enumerate(parts)]
    assert torch.equal(dec, torch.cat(alone))
    alphas = [3.0 * 10.0 ** (3 - j) for j in range(len(parts))]
    ints, fin = K.int8_encode(flat, torch.tensor(alphas), 127, False, seg=seg)
    dec = K.int8_decode(ints, fin, None, seg=seg, inv_alpha=torch.tensor([1 / v for v in alphas]))
    ref = [K.int8_encode(q, alphas[j], 127, False) for j, q in enumerate(parts)]
    assert torch.equal(ints, torch.cat([r[0] for r in ref]))
    assert torch.equal(dec, torch.cat([K.int8_decode(r[0], r[1], alphas[j]) for j, r in enumerate(ref)]))


def test_sums_by_sign_against_float64_and_the_two_valued_decode(segmented):
    """1-bit SGD's statistics per tensor (count of x ≥ 0, the sums of each sign) against float64,
    a NaN and an inf seen in their tensor's sums only; the decode picks a_j or b_j by the bit."""
    from lowbit.compress.many import Segments

    parts, flat, seg = segmented
    sizes = [q.numel() for q in parts]
    start = [sum(sizes[:j]) for j in range(len(sizes))]
    flat = flat.clone()
    flat[start[3] + 10] = float("nan")
    flat[start[4] + 2] = float("inf")
    flat[start[5] + 7] = -0.0  # counted with the non-negative entries
    got = K.sign_sums(flat, Segments(sizes, "cpu").block_plan(K.BLOCK))
    for j, q in enumerate(flat.split(sizes)):
        d = q.double()
        ref = torch.stack([(q >= 0).sum().double(), d[q >= 0].sum(), d[~(q >= 0)].sum()])
        assert _same(got[j], ref).all() or torch.allclose(got[j], ref, rtol=1e-12, atol=0), (j, got[j], ref)
    assert torch.isnan(got[3, 2]) and torch.isinf(got[4, 1]) and torch.isfinite(got[[0, 1, 2, 5]]).all()
    a, b = got[:, 1] / got[:, 0].clamp(min=1), got[:, 2]
    s, _ = K.sign_encode(flat)
    dec = K.sign_decode(s, a.float(), flat.numel(), seg=seg, low=b.float())
    li = seg.long()
    assert _same(dec, torch.where(flat >= 0, a.float()[li], b.float()[li])).all()


@pytest.mark.parametrize("blocks", [[3, 0, 64, 40], [1300, 7, 65, 0, 512, 513]])
def test_row_sums_per_tensor_against_float64(blocks):
    """The per-tensor sum of the blocks' partial sums (64 rows a step, or 512 where a tensor has
    more than 64 blocks: several steps, a partial last one, an empty tensor) against float64."""
    from lowbit.kernels.reductions import _per_tensor

    g = torch.Generator().manual_seed(1)
    part = torch.randn(sum(blocks), 3, generator=g, dtype=torch.float64) * 1e3
    per = torch.tensor(blocks, dtype=torch.int64)  # as Segments.block_plan makes them
    first = torch.tensor([sum(blocks[:j]) for j in range(len(blocks))], dtype=torch.int64)
    got = _per_tensor(part, (None, None, per, first, max(blocks)))
    want = torch.stack([q.sum(0) for q in part.split(blocks)])
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-9), (got - want).abs().max()


@pytest.mark.parametrize("start,n", [(0, 8229), (1, 8228), (2, 7)])
def test_decode_into_a_given_buffer_and_an_unaligned_input(start, n, x):
    fmt = lowbit.get_format("fp4")
    y = x[6:][:n]
    codes, fin = K.cast_encode(y, fmt, "nearest", False)
    buf = torch.zeros(n + 3)
    got = K.cast_decode(codes, fmt, n, fin, out=buf[start : start + n])
    assert torch.equal(got, K.cast_decode(codes, fmt, n, fin)) and torch.equal(buf[start : start + n], got)
    codes2, _ = K.cast_encode(torch.cat([torch.zeros(1), y])[1:], fmt, "nearest", False)
    assert torch.equal(codes2, codes)


@pytest.mark.parametrize("name", ["fp4", "fp8", "float8_e5m2"])
def test_mx_block_cast_equals_the_scaled_format_path(name, x):
    """MX block scaling in one pass: the bytes and values of ScaledFormat's torch path (zero,
    subnormal and huge blocks included); the stochastic variant rounds each scaled value to a
    neighbour."""
    from lowbit.scaling import ScaledFormat

    z = x[6:].clone()
    z[64:96], z[96:128], z[128:160] = 0.0, z[96:128] * 1e-40, z[128:160] * 1e32
    fmt = lowbit.get_format(name)
    for block, rule in ((32, "ocp"), (16, "fit"), (2, "ocp")):
        sf = ScaledFormat(fmt, "block", block, rule)
        scales, v = scaled_values(sf, z, "nearest", None)
        codes, sc, fin = K.cast_block_encode(z, fmt, "nearest", block, rule)
        ref = pack(float_codes(v.reshape(-1), fmt, quantized=True, nan_ok=True), fmt.code_bits)
        assert torch.equal(sc, scales) and torch.equal(codes, ref) and int(fin) == 1, (block, rule)
        dec = K.cast_decode(codes, fmt, z.numel(), fin, scales=sc, block=block)
        assert torch.equal(dec, sf.unscale(v.reshape(-1), scales, (scales.numel() * block,))[: z.numel()])
    codes, sc, fin = K.cast_block_encode(x, fmt, "stochastic", 32, "fit", torch.Generator().manual_seed(1))
    X = torch.ldexp(torch.ones(sc.numel()), sc.int() - 127).repeat_interleave(32)[6 : x.numel()]
    d, v = K.cast_decode(codes, fmt, x.numel(), None, scales=sc, block=32)[6:] / X, x[6:] / X
    lo = lowbit.quantize(v, fmt, "zero")
    up = lowbit.quantize(torch.nextafter(d.abs(), torch.zeros(())), fmt, "zero")
    assert ((d == lo) | ((d.abs() > v.abs()) & (up == lo.abs()))).all() and int(fin) == 0


@pytest.mark.parametrize("name", ["fp4", "fp8", "float8_e5m2"])
@pytest.mark.parametrize("block", [32, 2, 1024])
def test_mx_stochastic_block_cast_draws_the_stream_of_every_kernel(name, block, x):
    """The stochastic MX encode draws value e's word as every other kernel does: its codes decode,
    block by block, to ``quantize_triton``'s saturating stochastic rounding of x / X_b for the
    same generator state, bit for bit (X_b the block's E8M0 scale; x / X_b is exact)."""
    fmt = lowbit.get_format(name)
    z = x[6:].clone()
    codes, sc, fin = K.cast_block_encode(z, fmt, "stochastic", block, "fit", torch.Generator().manual_seed(7))
    X = torch.ldexp(torch.ones(sc.numel()), sc.int() - 127).repeat_interleave(block)[: z.numel()]
    dec = K.cast_decode(codes, fmt, z.numel(), None, scales=sc, block=block) / X
    q = quantize_triton(z / X, fmt, "stochastic", True, torch.Generator().manual_seed(7))
    assert int(fin) == 1 and torch.equal(dec, q)


@triton.jit
def _words_kernel(seed_ptr, out_ptr, Q: tl.constexpr):
    pid = tl.program_id(0)
    r0, r1, r2, r3 = block_words(seed_ptr, pid, Q, PHILOX_ROUNDS)
    o = pid * 4 * Q + tl.arange(0, Q)
    tl.store(out_ptr + o, r0)
    tl.store(out_ptr + o + Q, r1)
    tl.store(out_ptr + o + 2 * Q, r2)
    tl.store(out_ptr + o + 3 * Q, r3)


def test_the_cpu_draws_the_kernels_words():
    """lowbit.kernels.stream's CPU words are the kernels' block_words, less their top bit."""
    seed = torch.tensor([987654321], dtype=torch.int64)
    got = torch.empty(3 * 4096, dtype=torch.int32)
    _words_kernel[(3,)](seed, got, Q=1024)
    assert torch.equal(got & 0x7FFFFFFF, stream.words(torch.empty(3 * 4096, dtype=torch.int32), 987654321))


@pytest.mark.parametrize("name", CAST_FORMATS + ["bfloat16", "fp16"])
def test_cpu_stochastic_rounding_is_the_kernels_bit_for_bit(name, x):
    """One stream and one rounding on both devices: for the same generator state the CPU's
    stochastic ``quantize`` and cast codec give the kernels' values bit for bit."""
    fmt = lowbit.get_format(name)
    q = quantize_triton(x, fmt, "stochastic", False, torch.Generator().manual_seed(5))
    assert _same(lowbit.quantize(x, name, "stochastic", generator=torch.Generator().manual_seed(5)), q).all()
    if fmt.bits <= 8:  # the codec on finite values (a packet with a non-finite value decodes to NaN)
        z = x[6:]
        codes, _ = K.cast_encode(z, fmt, "stochastic", False, torch.Generator().manual_seed(5))
        c = lowbit.get_compressor("cast", format=name, rounding="stochastic")
        dec = c.decode(c.encode(z, generator=torch.Generator().manual_seed(5)))
        assert _same(dec, K.cast_decode(codes, fmt, z.numel())).all()


@pytest.mark.parametrize("name", ["fp4", "fp8"])
def test_cpu_mx_and_natural_stochastic_codecs_are_the_kernels_bit_for_bit(name, x):
    """The same for block-scaled (MX) casts and natural compression, on finite values."""
    fmt, x = lowbit.get_format(name), x[6:]
    c = lowbit.get_compressor("cast", format=name, rounding="stochastic", scaling="block", block=32)
    codes, sc, _ = K.cast_block_encode(x, fmt, "stochastic", 32, c._scaled.rule, torch.Generator().manual_seed(7))
    dec = c.decode(c.encode(x, generator=torch.Generator().manual_seed(7)))
    assert _same(dec, K.cast_decode(codes, fmt, x.numel(), None, scales=sc, block=32)).all()
    e, s = K.natural_encode(x, torch.Generator().manual_seed(7))
    nat = lowbit.get_compressor("natural")
    assert _same(nat.decode(nat.encode(x, generator=torch.Generator().manual_seed(7))), K.natural_decode(e, s, x.numel())).all()
