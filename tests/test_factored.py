"""ISGQ's factored data parallelism: layer inputs and output errors captured by hooks, quantized,
and multiplied back at the receiver."""

import math

import pytest
import torch
from torch import nn

from lowbit import get_compressor
from lowbit.distributed import FactoredDataParallel
from lowbit.distributed.factored import layer_factors
from lowbit.experiments import make_config, run
from lowbit.experiments.loop import Stop


@pytest.mark.parametrize("module, x", [
    (nn.Linear(7, 5), torch.randn(3, 4, 7)),
    (nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.randn(2, 3, 9, 9)),
    (nn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2), torch.randn(2, 3, 9, 9)),
])
def test_weight_gradient_is_delta_transpose_x(module, x):
    """Oracle: autograd's weight gradient (float64)."""
    module, x = module.double(), x.double()
    out = module(x)
    kept = {}
    out.register_hook(lambda g: kept.__setitem__("d", g))
    (out.sin() * 3).sum().backward()
    f = layer_factors(module, x, kept["d"])
    torch.testing.assert_close(f.dense().reshape(module.weight.shape), module.weight.grad, rtol=1e-12, atol=1e-12)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 200), nn.ReLU(inplace=True), nn.Linear(200, 10))


def _step(model, fdp, x, y, n):
    for xw, yw in zip(x.chunk(n), y.chunk(n)):
        model.zero_grad()
        with fdp.capture():
            loss = nn.functional.cross_entropy(model(xw), yw)
        loss.backward()
        fdp.collect()
    return fdp.set_grads()


def test_fine_grids_give_the_mean_gradient_and_bits_are_counted():
    model, n = _mlp(), 2
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    ref = nn.Sequential(nn.Flatten(), nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))
    ref.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(ref(x), y).backward()  # mean of equal shares' means = full-batch mean
    bits = 12
    fdp = FactoredDataParallel(model, n, get_compressor("isgq", bits=bits, grid=20))
    info = _step(model, fdp, x, y, n)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert (p.grad - q.grad).norm() <= 0.02 * q.grad.norm()
    # rows·(m + k) < m·k only for the first layer (16·264 < 12,800; 16·210 ≥ 2,000)
    assert fdp.factored_layers == {0}
    rows = 32 // n
    isgq = (rows * 64 * bits + 7) // 8 + (rows * 200 * bits + 7) // 8 + 8
    qsgd = get_compressor("qsgd", levels=2 ** (bits - 1) - 1)
    dense = sum(qsgd.wire_bytes(k) for k in (200, 10 * 200, 10))
    assert info["bits"] == 8 * n * (isgq + dense)
    assert fdp.bits_per_worker == [8 * (isgq + dense)] * n


def test_isgq_on_factors_is_unbiased_inside_the_clip_range(monkeypatch):
    """With steps that clip nothing (max/L), Q(Δ)ᵀQ(X) is unbiased (independent roundings of X
    and Δ): the mean of 3,000 draws is within 5 standard errors of ΔᵀX in every entry."""
    torch.manual_seed(1)
    codec = get_compressor("isgq", bits=3)
    monkeypatch.setattr(codec, "steps", lambda x, d: (x.abs().max() / 3, d.abs().max() / 3))
    from lowbit.compress import Factored

    f = Factored(torch.randn(6, 5), torch.randn(6, 4))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([codec.decode(codec.encode(f, generator=g)).double() for _ in range(3000)])
    se = draws.std(0) / math.sqrt(3000)
    assert ((draws.mean(0) - f.dense().double()).abs() <= 5 * se + 1e-9).all()


def test_refuses_a_codec_that_is_not_factored():
    with pytest.raises(TypeError, match="factored codec"):
        FactoredDataParallel(_mlp(), 2, get_compressor("qsgd"))


def _tiny(**over):
    base = {"name": "tiny", "kind": "deep", "epochs": 3,
            "deep": {"model": "fc", "model_options": {"widths": [256]}, "dataset": "digits", "batch_size": 64,
                     "workers": 2, "lr": 0.05, "augment": False, "device": "cpu"},
            "quant": {"codec": "isgq", "options": {"bits": 4}}}
    return make_config(base, [f"{k}={v}" for k, v in over.items()])


def test_isgq_deep_run_learns_and_resumes_identically(tmp_path):
    whole = run(_tiny(), tmp_path / "whole", quiet=True)["runs"][0]
    assert whole["final"]["test_accuracy"] > 0.8 and whole["bits_per_worker_step"] > 0
    with pytest.raises(Stop):
        run(_tiny(), tmp_path / "cut", quiet=True, stop_after=1)
    resumed = run(_tiny(), tmp_path / "cut", resume=True, quiet=True)["runs"][0]["final"]
    for k in ("train_loss", "test_accuracy", "bits"):
        assert resumed[k] == whole["final"][k], k
