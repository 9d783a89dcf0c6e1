"""Gradients through quantize: the straight-through estimator, checked entry by entry against the
rule it states (an independent mask from the format's range and ml_dtypes' finite values), and
the explicit cut."""

import ml_dtypes
import numpy as np
import pytest
import torch

import lowbit
from lowbit import get_format


def _upstream(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fmt,saturate", [("fp8", False), ("fp8", True), ("float8_e5m2", False), ("fp4", False),
                                          ("float16", False), ("int8", False)])
def test_straight_through_passes_the_gradient_inside_the_range(fmt, saturate):
    f = get_format(fmt)
    base = torch.tensor([0.0, -0.0, 1e-9, -0.3, 1.7, f.max, -f.max, 0.999 * f.max, 1.5 * f.max, -4 * f.max,
                         float("inf"), float("-inf"), float("nan"), 3.0e38])
    x = base.clone().requires_grad_(True)
    q = lowbit.quantize(x, fmt, saturate=saturate)
    assert q.grad_fn is not None and q.requires_grad
    up = _upstream(x.shape)
    q.backward(up)
    expect = (np.isfinite(base.numpy()) & (np.abs(base.numpy()) <= f.max) & np.isfinite(q.detach().numpy()))
    if fmt in ("fp8", "float8_e5m2", "fp4"):  # ml_dtypes agrees on which values stay finite in range
        dt = {"fp8": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2, "fp4": ml_dtypes.float4_e2m1fn}[fmt]
        inside = base.numpy()[expect]
        assert np.isfinite(inside.astype(dt).astype(np.float32)).all()
    torch.testing.assert_close(x.grad, torch.where(torch.from_numpy(expect), up, torch.zeros_like(up)))
    torch.testing.assert_close(q.detach(), lowbit.quantize(base, fmt, saturate=saturate), equal_nan=True)


def test_rounding_inside_a_model_trains_the_layers_before_it():
    """The layers before the rounding get the gradient of the classic detach idiom
    h + (q(h) − h).detach(), an independent construction of the same estimator."""
    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 1)
    x = torch.randn(32, 8)
    grads = []
    for mode in ("lowbit", "idiom"):
        lin1.zero_grad(), lin2.zero_grad()
        h = torch.relu(lin1(x))
        r = lowbit.quantize(h, "fp8") if mode == "lowbit" else h + (lowbit.quantize(h.detach(), "fp8") - h).detach()
        lin2(r).pow(2).mean().backward()
        grads.append((lin1.weight.grad.clone(), lin2.weight.grad.clone()))
    assert float(grads[0][0].abs().sum()) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("scaling", ["tensor", "block"])
def test_scaled_formats_pass_the_gradient_where_finite(scaling):
    base = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * 100
    base[0, 3] = float("nan")
    x = base.clone().requires_grad_(True)
    q = lowbit.quantize(x, "fp4", scaling=scaling)
    up = _upstream(x.shape, 2)
    q.backward(up)
    keep = torch.isfinite(base) & torch.isfinite(q.detach())
    torch.testing.assert_close(x.grad, torch.where(keep, up, torch.zeros_like(up)))
    assert not bool(keep[0, 3])


def test_cut_is_explicit_and_bad_options_are_errors():
    x = torch.randn(10, requires_grad=True)
    q = lowbit.quantize(x, "fp8", grad="cut")
    assert not q.requires_grad and q.grad_fn is None
    with torch.no_grad():
        assert lowbit.quantize(x, "fp8").grad_fn is None
    with pytest.raises(ValueError, match="grad must be one of"):
        lowbit.quantize(x, "fp8", grad="straight")


def test_gradient_keeps_the_input_dtype():
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        x = torch.linspace(-3, 3, 50, dtype=dt).requires_grad_(True)
        lowbit.quantize(x, "fp8").sum().backward()
        assert x.grad.dtype == dt and torch.equal(x.grad, torch.ones_like(x))


def test_the_rounded_tensor_may_be_modified_in_place():
    x = torch.randn(20, requires_grad=True)
    q = lowbit.quantize(x, "fp8")
    q.relu_()  # the estimator keeps x, not q
    q.sum().backward()
    assert torch.equal(x.grad, (lowbit.quantize(x.detach(), "fp8") > 0).float())
