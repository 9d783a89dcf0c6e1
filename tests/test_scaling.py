"""Per-tensor and per-block (MX-style) scaling, with encode/decode."""

import pytest
import torch

import lowbit
from lowbit import ScaledFormat
from lowbit.packing import decode, encode


def test_tensor_scaling_maps_amax_to_max():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1e-6
    q = lowbit.quantize(x, "fp8", scaling="tensor")
    i = x.abs().argmax()
    assert torch.isclose(q[i], x[i], rtol=2**-4)
    rel = ((q - x).norm() / x.norm()).item()
    assert rel < 0.05  # without scaling every value would flush to zero
    assert (lowbit.quantize(x, "fp8") == 0).all()


@pytest.mark.parametrize("name", ["fp4", "fp8", "float6_e2m3fn", "int8"])
def test_block_scales_are_powers_of_two_and_bound_the_block(name):
    fmt = lowbit.get_format(name)
    sf = ScaledFormat(name, "block", 32)
    x = torch.randn(8, 100, generator=torch.Generator().manual_seed(1)) * torch.logspace(-8, 3, 8)[:, None]
    enc = encode(x, sf)
    assert enc.scales.dtype == torch.uint8 and enc.scales.numel() == 25
    blocks = torch.nn.functional.pad(x.reshape(-1), (0, 0)).reshape(-1)
    amax = torch.nn.functional.pad(blocks, (0, 25 * 32 - 800)).reshape(25, 32).abs().amax(1)
    scale = torch.ldexp(torch.ones(25), enc.scales.to(torch.int32) - 127)
    assert ((amax / scale) < 2 ** (fmt.emax + 1)).all() and ((amax / scale) >= 2**fmt.emax).all()
    dec = decode(enc, sf)
    assert dec.shape == x.shape
    assert torch.equal(dec, lowbit.quantize(x, name, scaling="block"))
    assert enc.nbytes == fmt.nbytes(800) + 25 == sf.nbytes(800)


def test_block_scaling_relative_error_is_format_bounded():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(2)) * 1e-9
    q = lowbit.quantize(x, "fp8", scaling="block")
    blocks = x.reshape(-1, 32)
    amax = blocks.abs().amax(1, keepdim=True)
    err = (q.reshape(-1, 32) - blocks).abs()
    # e4m3 keeps 3 mantissa bits (error ≤ amax·2^-4), except the MX clamp of values in
    # (448, 512)·X to 448·X: error ≤ amax·(1 − 448/512) = amax/8
    assert (err <= amax / 8).all()
    assert (err <= amax * 2**-4)[blocks.abs() <= 448 / 512 * amax].all()


def test_stochastic_block_scaling_is_unbiased():
    x = torch.tensor([0.3, -0.01, 0.77, 1.0] * 8)
    g = torch.Generator().manual_seed(3)
    reps = torch.stack([lowbit.quantize(x, "fp4", "stochastic", scaling="block", generator=g) for _ in range(4000)])
    se = reps.std(0) / 4000**0.5
    assert ((reps.mean(0) - x).abs() <= 5 * se + 1e-7).all()


def test_bad_scaling_names():
    with pytest.raises(ValueError, match="scaling"):
        lowbit.quantize(torch.ones(4), "fp8", scaling="row")
