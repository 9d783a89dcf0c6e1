"""encode/decode: real bytes, exact inverses on representable values."""

import math

import numpy as np
import pytest
import torch

import lowbit
from lowbit.packing import decode, encode, float_codes, pack, unpack
from oracles import ML_DTYPES

NAMES = ["float16", "bfloat16", "float8_e4m3fn", "float8_e4m3", "float8_e5m2", "float8_e3m4",
         "float8_e4m3fnuz", "float8_e5m2fnuz", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn",
         "slowdown_fp4", "slowdown_fp8", "int8", "int4", "int2", "e3m3", "float32"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 3, 7, 33, 1001])
def test_round_trip_and_true_size(name, n):
    fmt = lowbit.get_format(name)
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 3
    q = lowbit.quantize(x, fmt, saturate=True)
    codes = encode(q, fmt)
    assert codes.dtype == torch.uint8
    assert codes.numel() == math.ceil(n * fmt.code_bits / 8) == fmt.nbytes(n)
    assert torch.equal(decode(codes, fmt, (n,)), q)
    assert torch.equal(decode(codes, fmt, q.shape), q)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3", "float6_e3m2fn",
                                  "float6_e2m3fn", "float4_e2m1fn", "float8_e4m3fnuz"])
def test_every_code_decodes_and_re_encodes(name):
    fmt = lowbit.get_format(name)
    n = 2**fmt.code_bits
    codes = pack(torch.arange(n), fmt.code_bits)
    vals = decode(codes, fmt, (n,))
    finite = torch.isfinite(vals)
    again = unpack(encode(vals[finite], fmt), fmt.code_bits, int(finite.sum()))
    expect = torch.arange(n)[finite]
    if not fmt.signed_zero:  # fnuz: no −0 code to map back to
        assert torch.equal(again, expect)
    else:
        assert torch.equal(again, expect)
    assert (fmt.code_bits == 8) == (codes.numel() == n)


def test_pack_layout_is_little_endian():
    assert pack(torch.tensor([1, 2, 3]), 4).tolist() == [0x21, 0x03]
    six = pack(torch.tensor([1, 2, 3, 4]), 6)
    assert six.numel() == 3 and int.from_bytes(bytes(six.tolist()), "little") == 1 | 2 << 6 | 3 << 12 | 4 << 18
    assert unpack(six, 6, 4).tolist() == [1, 2, 3, 4]
    for w in (1, 2, 3, 5, 7, 9, 11, 13, 16, 32):
        c = torch.randint(0, 2**w, (37,), generator=torch.Generator().manual_seed(w))
        assert torch.equal(unpack(pack(c, w), w, 37), c)


def test_special_codes():
    nan_inf = torch.tensor([float("nan"), float("inf"), -float("inf")])
    e5 = lowbit.get_format("fp8_e5m2")
    out = decode(encode(nan_inf, e5), e5, (3,))
    assert torch.isnan(out[0]) and out[1] == math.inf and out[2] == -math.inf
    fn = lowbit.get_format("fp8")
    assert encode(torch.tensor([float("nan")]), fn).tolist() == [0x7F]
    with pytest.raises(ValueError, match="no NaN"):
        encode(torch.tensor([float("nan")]), "fp4")
    with pytest.raises(TypeError):
        decode(torch.zeros(3, dtype=torch.int32), fn, (3,))


@pytest.mark.parametrize("w", list(range(1, 17)) + [24, 32])
def test_pack_equals_numpys_bit_order_for_every_width(w):
    """pack's bytes against an independent oracle — numpy's packbits of each code's w bits, low
    bit first — for every width, sizes that leave a partial group, and uint8/int32/int64 codes;
    the input is left unchanged."""
    g = torch.Generator().manual_seed(w)
    for n in (0, 1, 3, 5, 8, 13, 1000, 4099):
        codes = torch.randint(0, 2**w, (n,), generator=g)
        bits = ((codes.numpy()[:, None] >> np.arange(w)) & 1).astype(np.uint8).reshape(-1)
        want = np.packbits(bits, bitorder="little")
        for dt in ((torch.uint8,) if w <= 8 else ()) + (torch.int32, torch.int64):
            c = codes.to(dt)
            keep = c.clone()
            got = pack(c, w)
            assert got.dtype == torch.uint8 and got.numpy().tobytes() == want.tobytes(), (w, n, dt)
            assert torch.equal(c, keep)


@pytest.mark.parametrize("w", [2, 4, 6])
def test_large_packs_equal_numpys_bit_order(w):
    """The CPU's word-wise packs of 2-, 4- and 6-bit codes (one compiled loop from 2^20 codes) against
    numpy's packbits, on buffers with a partial group (of 6-bit codes' 16 and of a word's 4) and on
    a view that starts mid-word."""
    g = torch.Generator().manual_seed(w)
    codes = torch.randint(0, 2**w, ((1 << 20) + 15,), generator=g).to(torch.uint8)
    for c in (codes, codes[1:], codes[: (1 << 20) + 7], codes[:4099]):  # 0-3 whole words past a group of 4
        bits = ((c.numpy()[:, None].astype(np.int64) >> np.arange(w)) & 1).astype(np.uint8).reshape(-1)
        assert pack(c, w).numpy().tobytes() == np.packbits(bits, bitorder="little").tobytes(), (w, c.numel())


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_codes_of_quantized_values_are_ml_dtypes_bits(name):
    """float_codes of values on the format's grid (signed zeros, subnormals, the largest finite,
    values over 40 binades) are the bit patterns ml_dtypes stores for them (an independent oracle);
    with a NaN or inf among them the general formula runs, and gives the same codes elsewhere."""
    fmt = lowbit.get_format(name)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50_000, generator=g) * 2.0 ** torch.randint(-30, 12, (50_000,), generator=g)
    x[:3] = torch.tensor([0.0, -0.0, fmt.max])
    q = lowbit.quantize(x, fmt, saturate=True)
    bits = np.asarray(q.numpy().astype(ML_DTYPES[name])).view(np.uint8 if fmt.code_bits <= 8 else np.uint16)
    codes = float_codes(q, fmt, quantized=True)
    assert codes.dtype == torch.int64 and np.array_equal(codes.numpy(), bits.astype(np.int64))
    if fmt.has_nan or fmt.has_inf:
        special = torch.cat([q, torch.tensor([float("nan") if fmt.has_nan else float("inf")])])
        assert torch.equal(float_codes(special, fmt, quantized=True)[:-1], codes)
