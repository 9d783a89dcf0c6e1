"""Every compressor on CUDA tensors through the same API (runs only where a GPU is present)."""

import math

import pytest
import torch

from conftest import needs_cuda
from lowbit.compress import Factored, get_compressor

CASES = {
    "identity": {}, "cast": {"format": "fp8"}, "cast-fp4-block": {"format": "fp4", "scaling": "block"},
    "intsgd": {"alpha": 10.0}, "hintsgd": {}, "natural": {}, "qsgd": {"levels": 4},
    "qsgd-elias": {"levels": 2, "coding": "elias"}, "terngrad": {}, "onebit": {}, "signsgd": {},
    "topk": {"ratio": 0.05}, "randk": {"ratio": 0.05}, "powersgd": {"rank": 2},
}


@needs_cuda
@pytest.mark.parametrize("case", list(CASES))
def test_codec_on_cuda_matches_its_cpu_contract(case):
    name = case.split("-")[0]
    codec = get_compressor(name, **CASES[case])
    g = torch.randn(64, 33, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    p = codec.encode(g, state=codec.init_state(g), generator=gen)
    assert all(t.device.type == "cuda" for t in p.payload.values())
    assert p.nbytes == len(p.to_bytes())
    out = codec.decode(p)
    assert out.device.type == "cuda" and out.shape == g.shape
    cpu = codec.encode(g.cpu(), state=codec.init_state(g.cpu()), generator=torch.Generator().manual_seed(0))
    assert cpu.nbytes == p.nbytes or name in ("intsgd", "qsgd")  # data-dependent widths may differ by draw
    if codec.unbiased:  # mean of 2000 draws of a fixed vector, per coordinate within 5 SE
        x = g[0, :8].repeat(20000)
        d = codec.decode(codec.encode(x, generator=gen)).reshape(20000, 8).double()
        se = torch.maximum(d.std(0) / math.sqrt(20000), torch.sqrt(x[:8].abs().double() * d.abs().max() / 20000))
        assert ((d.mean(0) - x[:8].double()).abs() <= 5 * se + 1e-6).all()


@needs_cuda
def test_isgq_on_cuda():
    x, d = torch.randn(16, 40, device="cuda"), torch.randn(16, 24, device="cuda")
    codec = get_compressor("isgq")
    out = codec.decode(codec.encode(Factored(x, d), generator=torch.Generator(device="cuda").manual_seed(0)))
    assert out.device.type == "cuda" and out.shape == (24, 40)
