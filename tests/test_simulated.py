"""SimulatedCluster: batched compression over workers equals compressing each worker alone."""

import pytest
import torch

from lowbit.compress import get_compressor
from lowbit.dist import SimulatedCluster


@pytest.mark.parametrize("name,opts", [("identity", {}), ("cast", {"format": "fp8"}),
                                       ("intsgd", {"alpha": 30.0, "rounding": "nearest", "n_workers": 5}),
                                       ("natural", {}), ("qsgd", {"levels": 4})])
def test_batched_exchange_equals_per_worker(name, opts):
    v = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    cl = SimulatedCluster(5, get_compressor(name, **opts), generator=torch.Generator().manual_seed(1))
    out, info = cl.exchange(v)
    codec = get_compressor(name, **opts)
    if codec.unbiased and name != "intsgd":  # random draws differ between the two paths; check shape and size
        assert out.shape == v.shape
    else:
        each = torch.stack([codec(v[i]) for i in range(5)])
        assert torch.equal(out, each)
    per_worker = sum(8 * codec.encode(v[i]).nbytes for i in range(5))
    assert abs(info["bits"] - per_worker) <= 8 * 5  # one flag byte per packet at most
    mean, _ = cl.mean(v)
    assert mean.shape == (300,)


def test_integer_width_counts():
    cl = SimulatedCluster(3, get_compressor("intsgd", alpha=1.0, rounding="nearest", n_workers=3))
    v = torch.tensor([[1.0, -3.0], [0.0, 7.0], [2.0, 2.0]])
    _, info = cl.exchange(v)
    # widths 1+⌈log2(max+1)⌉: 3, 4, 3 bits per coordinate; the sum (max 6) needs 4
    assert info["width_bits"] == (3 + 4 + 3) * 2 and info["sum_width_bits"] == 4 * 2


def test_error_feedback_state_per_worker_in_the_batch():
    codec = get_compressor("cast", format="fp4", error_feedback=True)
    cl = SimulatedCluster(4, codec)
    v = torch.randn(4, 64, generator=torch.Generator().manual_seed(2)) * 0.1
    total = torch.zeros(4, 64)
    for _ in range(50):
        out, _ = cl.exchange(v)
        total += out
    assert torch.allclose(total, 50 * v - cl.state.memory, atol=1e-4)
