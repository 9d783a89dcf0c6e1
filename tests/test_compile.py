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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device present"))])
@pytest.mark.parametrize("fmt", ["fp8", "float8_e5m2"])
def test_float8_rounding_compiles_to_fusable_operations_with_the_eager_values(fmt, device):
    """Under torch.compile, float8 rounding to nearest is torch's conversion plus lowbit's overflow
    rule (no opaque operator: inductor fuses it), equal to the eager kernel bit for bit on values
    around every boundary: ties, the largest value's rounding boundary, subnormals, ±0, ±inf, NaN."""
    from lowbit.formats import get_format

    f = get_format(fmt)
    edge = f.max + 2.0 ** (f.emax - f.man_bits - 1)  # the overflow boundary
    special = torch.tensor([edge, -edge, edge * (1 - 2**-20), edge * (1 + 2**-20), f.max, 2 * f.max, -0.0, 0.0,
                            float("inf"), float("-inf"), float("nan"), f.min_subnormal if hasattr(f, "min_subnormal")
                            else 2.0**-9, 1.0 + 2.0 ** -(f.man_bits + 1), 3.0 * 2.0 ** -(f.man_bits + 1)])
    g = torch.Generator().manual_seed(0)
    x = torch.cat([special, torch.randn(4096, generator=g) * torch.logspace(-12, 6, 4096, base=2.0)]).to(device)
    graph = torch.compile(lambda t: lowbit.quantize(t, fmt) * 2, fullgraph=True)
    torch.testing.assert_close(graph(x), lowbit.quantize(x, fmt) * 2, rtol=0, atol=0, equal_nan=True)
    got = torch.compile(lambda t: lowbit.quantize(t, fmt), fullgraph=True)(x)
    want = lowbit.quantize(x, fmt)
    assert torch.equal(torch.signbit(got[~want.isnan()]), torch.signbit(want[~want.isnan()]))  # −0 stays −0
    gm = torch._dynamo.export(lambda t: lowbit.quantize(t, fmt))(x).graph_module
    assert "lowbit" not in gm.code  # no opaque operator left for inductor


def test_a_compiled_float8_quantizer_rounds_both_ways_as_eager():
    """forward fp8, backward e5m2 through the fused path: the rounded activations and the rounded,
    straight-through-masked errors equal eager's bit for bit."""
    q = lowbit.nn.Quantizer(forward="fp8", backward="float8_e5m2")
    x0 = torch.randn(512, generator=torch.Generator().manual_seed(1)) * 100
    x0[:3] = torch.tensor([500.0, float("inf"), -1e-4])  # beyond fp8's max: no gradient
    w = torch.randn(512, generator=torch.Generator().manual_seed(2)) * 3e4
    outs = []
    for fn in (q, torch.compile(q, fullgraph=True)):
        x = x0.clone().requires_grad_(True)
        y = fn(x)
        (y.nan_to_num(0.0) * w).sum().backward()
        outs.append((y.detach(), x.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=0, atol=0, equal_nan=True)
    assert outs[0][1][0] == 0 and outs[0][1][1] == 0


_cuda = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device present"))
_DETERMINISTIC = [("cast", {"format": "fp8"}), ("cast", {"format": "fp4"}), ("cast", {"format": "fp4", "scaling": "block"}),
                  ("identity", {}), ("signsgd", {}), ("onebit", {}), ("topk", {"ratio": 0.05}),
                  ("intsgd", {"alpha": 100.0, "bits": 8, "rounding": "nearest"})]


@pytest.mark.parametrize("device", ["cpu", _cuda])
@pytest.mark.parametrize("name,options", _DETERMINISTIC)
def test_codecs_are_registered_operators_that_compile(name, options, device):
    """lowbit::encode gives the packet's fields back to back (exactly its nbytes), lowbit::decode the
    codec's decoded tensor bit for bit, and codec(x) compiles with fullgraph=True to the same."""
    from lowbit.compress import ops

    codec = lowbit.get_compressor(name, **options)
    x = (torch.randn(24, 40, generator=torch.Generator().manual_seed(3)) * 5).to(device)
    packet = codec.encode(x)
    buf = ops.encode(x, codec)
    rows, total, _ = ops.layout(codec.spec(), x.shape, x.device)
    assert buf.dtype == torch.uint8 and buf.numel() == total == packet.nbytes
    for field, off, nb, dt, shape in rows:
        assert torch.equal(buf[off : off + nb].view(dt).view(shape), packet.payload[field])
    want = codec(x)
    assert torch.equal(ops.decode(buf, codec, x.shape), want)
    got = torch.compile(lambda t: codec(t) * 1.0, fullgraph=True)(x)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name,options", [("natural", {}), ("qsgd", {"levels": 16}), ("terngrad", {})])
def test_compiled_stochastic_codecs_draw_from_the_global_generator(name, options):
    """Under compilation a stochastic codec draws from torch's global generator: the same seed,
    the same draws as the operators called eagerly; another seed, other draws."""
    from lowbit.compress import ops

    codec = lowbit.get_compressor(name, **options)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(4))
    f = torch.compile(lambda t: codec(t), fullgraph=True)
    torch.manual_seed(7)
    a = f(x)
    torch.manual_seed(7)
    b = ops.decode(ops.encode(x, codec), codec, x.shape)
    torch.manual_seed(8)
    c = f(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name,options", [("qsgd", {"levels": 4, "coding": "elias"}), ("hintsgd", {"bits": 8})])
def test_codecs_whose_sizes_depend_on_the_data_are_refused_as_operators(name, options):
    from lowbit.compress import ops

    codec = lowbit.get_compressor(name, **options)
    with pytest.raises(ValueError, match="depend on the data"):
        ops.encode(torch.randn(1000), codec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device present")
@pytest.mark.parametrize("fmt,rounding", [("fp4", "nearest"), ("bf16", "nearest"), ("fp6", "zero")])
def test_cuda_rounding_compiles_to_the_triton_operator(fmt, rounding):
    """On CUDA, compiled rounding other than float8 nearest calls the quantize kernel as a Triton
    operator (lowbit::quantize_triton): eager's values and straight-through gradient."""
    x0 = torch.randn(3000, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)) * 4
    x0[:3] = torch.tensor([1e6, float("inf"), float("nan")])
    w = torch.arange(3000.0, device="cuda")
    f = lambda t: (lowbit.quantize(t, fmt, rounding).nan_to_num(0.0) * w).sum()  # noqa: E731
    gm = torch._dynamo.export(lambda t: lowbit.quantize(t, fmt, rounding))(x0).graph_module
    assert "quantize_triton" in gm.code
    grads = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        x = x0.clone().requires_grad_(True)
        fn(x).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
    got = torch.compile(lambda t: lowbit.quantize(t, fmt, rounding), fullgraph=True)(x0)
    torch.testing.assert_close(got, lowbit.quantize(x0, fmt, rounding), rtol=0, atol=0, equal_nan=True)
