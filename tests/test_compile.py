"""torch.compile(fullgraph=True): quantize and lowbit.nn's quantizers are registered operators
(torch.library) with fake kernels and gradients, so a model that rounds compiles without graph
breaks and gives the eager numbers bit for bit."""

import pytest
import torch
from torch import nn

import lowbit


@pytest.fixture(autouse=True)
def _fresh():
    torch._dynamo.reset()
    yield


@pytest.mark.parametrize("fmt,scaling", [("fp4", None), ("fp8", None), ("bf16", None), ("fp4", "block"), ("int8", "tensor")])
def test_quantize_compiles_without_graph_breaks(fmt, scaling):
    f = torch.compile(lambda t: lowbit.quantize(t, fmt, scaling=scaling) * 2 + 1, fullgraph=True)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 3
    x[0, 0] = float("nan")
    torch.testing.assert_close(f(x), lowbit.quantize(x, fmt, scaling=scaling) * 2 + 1, rtol=0, atol=0, equal_nan=True)


def test_compiled_gradient_is_the_straight_through_estimator():
    x0 = torch.tensor([0.3, -2.0, 500.0, float("inf"), 1e-3])
    x = x0.clone().requires_grad_(True)
    torch.compile(lambda t: (lowbit.quantize(t, "fp8") * torch.arange(5.0)).sum(), fullgraph=True)(x).backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 0.0, 0.0, 4.0]))  # 500 > 448 and inf: no gradient


def test_a_lowered_model_compiles_and_matches_eager():
    torch.manual_seed(0)
    model = lowbit.nn.lower(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), nn.Linear,
                            forward="fp8", backward="fp4", backward_scaling="tensor")
    x = torch.randn(32, 6)
    out = torch.compile(model, fullgraph=True)(x)
    out.pow(2).sum().backward()
    compiled = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(x)
    eager.pow(2).sum().backward()
    assert torch.equal(out.detach(), eager.detach())  # the rounded forward: bit for bit
    for a, b in zip(compiled, (p.grad for p in model.parameters())):  # inductor fuses the float32
        torch.testing.assert_close(a, b)  # arithmetic around the roundings: float32 tolerance


def test_a_compiled_quantizer_refuses_eager_only_features():
    q = lowbit.nn.Quantizer(forward="fp8", record=True)
    with pytest.raises(Exception, match="record=False"):
        torch.compile(q, fullgraph=True)(torch.randn(4))


def test_lowering_after_compiling_another_instance_still_rounds():
    """torch.compile reuses a ResNet's graph across instances and does not guard on hooks: without
    lower()'s reset the second, quantized model would run the first one's graph (checked: it did)."""
    from lowbit.models import get_model

    def make():
        torch.manual_seed(0)
        return get_model("resnet18", width=4).eval()

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = make()
        torch.compile(plain)(x)
        quantized = lowbit.nn.lower(make(), nn.Conv2d, forward="fp4")
        compiled, eager = torch.compile(quantized)(x), quantized(x)
    # inductor's convolutions differ from eager's in the last bits, which can move a value across
    # an fp4 boundary: the compiled output is near the quantized model's and far from the plain one
    near, far = (compiled - eager).abs().max(), (compiled - plain(x)).abs().max()
    assert near < 0.05 * far, (float(near), float(far))
