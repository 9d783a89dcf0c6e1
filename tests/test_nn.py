"""lowbit.nn: rounding activations forward and errors backward, checked against lowbit.quantize
applied by hand (itself checked against ml_dtypes), and lower() on a real model."""

import math

import pytest
import torch
from loops import cross_entropy_losses
from torch import nn

import lowbit
from lowbit.nn import Quantizer, lower, quantizers


def test_forward_rounds_activations_and_backward_rounds_errors():
    x0 = torch.tensor([0.013, -0.4, 1.7, 300.0, 1000.0, -2.5, float("nan"), 7e-5])
    up = torch.tensor([0.3, -1.1, 0.07, 2.0, 5.0, -0.6, 1.0, 0.011])
    q = Quantizer(forward="fp8", backward="fp4")
    x = x0.clone().requires_grad_(True)
    y = q(x)
    torch.testing.assert_close(y.detach(), lowbit.quantize(x0, "fp8"), equal_nan=True, rtol=0, atol=0)
    y.backward(up)
    keep = torch.isfinite(x0) & (x0.abs() <= lowbit.get_format("fp8").max)  # 1000 > 448 and NaN: no gradient
    expect = lowbit.quantize(torch.where(keep, up, torch.zeros_like(up)), "fp4")
    torch.testing.assert_close(x.grad, expect, rtol=0, atol=0)


def test_either_side_may_stay_in_full_precision():
    x0 = torch.randn(50, generator=torch.Generator().manual_seed(0))
    up = torch.randn(50, generator=torch.Generator().manual_seed(1))
    x = x0.clone().requires_grad_(True)
    y = Quantizer(forward=None, backward="fp8")(x)
    assert torch.equal(y.detach(), x0)
    y.backward(up)
    assert torch.equal(x.grad, lowbit.quantize(up, "fp8"))
    x = x0.clone().requires_grad_(True)
    Quantizer(forward="fp8")(x).backward(up)
    assert torch.equal(x.grad, up)


def test_stochastic_error_rounding_is_unbiased():
    """Mean of 4,000 backward passes within 5 standard errors of the error, per coordinate (the
    Bernoulli variance of each coordinate's rounding bounds the standard error)."""
    up = torch.randn(32, generator=torch.Generator().manual_seed(2))
    q = Quantizer(backward="fp4", rounding="stochastic", generator=torch.Generator().manual_seed(3))
    grads = []
    for _ in range(4000):
        x = torch.zeros(32, requires_grad=True)
        q(x).backward(up)
        grads.append(x.grad)
    g = torch.stack(grads)
    se = g.std(0) / math.sqrt(len(grads))
    exact = g.std(0) == 0  # values on fp4's grid round to themselves
    assert bool(((g.mean(0) - up).abs() <= 5 * se + 1e-7).all())
    assert torch.equal(g[0][exact], up[exact])


def test_lower_attaches_quantizers_to_chosen_layers_and_keeps_the_state_dict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    keys = list(model.state_dict())
    x = torch.randn(8, 1, 8, 8)
    conv, lin = model[0], model[3]
    with torch.no_grad():
        by_hand = lin(lowbit.quantize(model[2](model[1](lowbit.quantize(conv(x), "fp8"))), "fp8"))
        by_hand = lowbit.quantize(by_hand, "fp8")
    lower(model, (nn.Conv2d, nn.Linear), forward="fp8", backward="fp8", record=True)
    assert list(model.state_dict()) == keys
    assert sorted(quantizers(model)) == ["0.output_quantizer", "3.output_quantizer"]
    out = model(x)
    torch.testing.assert_close(out.detach(), by_hand, rtol=0, atol=0)
    out.pow(2).mean().backward()
    assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0
    for q in quantizers(model).values():
        assert set(q.stats) == {"q_forward", "q_backward"} and 0.5 < float(q.stats["q_forward"]) < 1.5
    with pytest.raises(ValueError, match="already has"):
        lower(model, nn.Linear, forward="fp8")
    with pytest.raises(ValueError, match="no layer"):
        lower(nn.Sequential(nn.ReLU()), nn.Linear, forward="fp8")


def test_a_model_trains_with_low_precision_activations_and_errors():
    torch.manual_seed(0)
    X = torch.randn(256, 10)
    y = (X[:, 0] - 2 * X[:, 1] > 0).long()
    model = lower(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2)), nn.Linear,
                  forward="fp8", backward="fp8", backward_rounding="stochastic")
    losses = cross_entropy_losses(model, torch.optim.SGD(model.parameters(), lr=0.5), X, y, 60)
    assert losses[-1] < 0.5 * losses[0]
