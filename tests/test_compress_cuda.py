"""Every compressor on CUDA tensors through the same API (runs only where a GPU is present)."""

import math

import pytest
import torch

import lowbit
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
    assert name in ("intsgd", "qsgd", "hintsgd", "topk", "randk", "powersgd") or codec.wire_bytes(g.numel()) == p.nbytes
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


def _spread(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 2.0 ** torch.randint(-30, 30, (n,), generator=g)
    x[64:96] = 0.0  # an all-zero block, a block of subnormals, one near the float32 top
    x[96:128] = torch.randn(32, generator=g) * 1e-41
    x[160:192] = torch.randn(32, generator=g) * 5e37
    return x


@needs_cuda
@pytest.mark.parametrize("fmt", ["fp4", "fp8", "float8_e5m2"])
@pytest.mark.parametrize("scaling", [None, "block"])
def test_fused_cast_packets_equal_the_cpu_packets(fmt, scaling):
    """The fused kernels (one pass, nearest rounding) send the bytes of the torch path and decode
    to its values, with and without MX block scaling; the no-clipping block exponents of
    stochastic rounding equal the torch path's too."""
    x = _spread(1 << 20 | 77, 0)
    for block in (32, 16, 8):
        codec = get_compressor("cast", format=fmt, scaling=scaling, block=block)
        gpu, cpu = codec.encode(x.cuda()), codec.encode(x)
        assert set(gpu.payload) == set(cpu.payload) and gpu.nbytes == cpu.nbytes
        for key in cpu.payload:
            assert torch.equal(gpu.payload[key].cpu(), cpu.payload[key]), key
        torch.testing.assert_close(codec.decode(gpu).cpu(), codec.decode(cpu), rtol=0, atol=0, equal_nan=True)
        if scaling:
            fit = get_compressor("cast", format=fmt, scaling="block", block=block, rounding="stochastic")
            gpu = fit.encode(x.cuda(), generator=torch.Generator(device="cuda").manual_seed(0))
            assert torch.equal(gpu.payload["scales"].cpu(), fit._scaled.scales(x))
    y = x.clone()
    y[1000] = float("inf")
    codec = get_compressor("cast", format=fmt, scaling=scaling)
    out = codec.decode(codec.encode(y.cuda()))
    if scaling or fmt == "fp4":  # a finite flag travels: a non-finite input decodes to NaN everywhere
        assert torch.isnan(out).all()
    else:  # the format's own code for the overflow
        assert not torch.isfinite(out[1000])


@needs_cuda
@pytest.mark.parametrize("case", ["fp8", "fp4", "float8_e5m2", "bfloat16", "fp8-block", "fp4-block", "natural"])
def test_stochastic_roundings_give_the_same_bits_on_the_cpu_and_the_gpu(case):
    """One random stream (lowbit.kernels.stream) and one rounding: for the same generator (a CPU
    one, from which both draw their seed) the CUDA kernels and the CPU's compiled loops give the
    same stochastic values and packets, bit for bit — a vector large enough for the CPU's compiled
    loops, of finite values over 50 binades."""
    x = _spread(1 << 20 | 77, 0)
    fmt, _, scaling = case.partition("-")
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    if fmt == "natural":
        codec = get_compressor("natural")
    else:
        codec = get_compressor("cast", format=fmt, rounding="stochastic", **({"scaling": "block"} if scaling else {}))
        if not scaling:
            q_cpu = lowbit.quantize(x, fmt, "stochastic", generator=gen())
            q_gpu = lowbit.quantize(x.cuda(), fmt, "stochastic", generator=gen())
            assert torch.equal(q_gpu.cpu().view(torch.int32), q_cpu.view(torch.int32))
    if fmt == "bfloat16":
        return
    gpu, cpu = codec.encode(x.cuda(), generator=gen()), codec.encode(x, generator=gen())
    for key in cpu.payload:
        assert torch.equal(gpu.payload[key].cpu(), cpu.payload[key]), key


@needs_cuda
def test_fused_block_cast_stochastic_is_unbiased():
    """Stochastic rounding under (never clipping) MX block scales: the mean of 4,000 draws per
    coordinate within 5 standard errors, the variance bounded by the Bernoulli's
    Δ·min(|x|, Δ), Δ ≤ X·max(1/2, |x/X|/2) the gap between the e2m1 neighbours of x/X."""
    codec = get_compressor("cast", format="fp4", scaling="block", rounding="stochastic")
    x = _spread(256, 1).cuda()
    x[:32] = torch.linspace(-3.0, 7.0, 32, device="cuda")  # block max 7 > 6: no clipping under "fit"
    gen = torch.Generator(device="cuda").manual_seed(0)
    reps = 4000
    p = codec.encode(x.repeat(reps), generator=gen)
    d = codec.decode(p).reshape(reps, -1).double()
    X = torch.ldexp(torch.ones(8, device="cuda"), p.payload["scales"][:8].int() - 127).repeat_interleave(32).double()
    gap = X * torch.clamp(x.abs().double() / X / 2, min=0.5)
    bound = (gap * torch.minimum(x.abs().double(), gap) / reps).sqrt()
    assert ((d.mean(0) - x.double()).abs() <= 5 * bound).all()
    assert (d.std(0) > 0).sum() > 100  # most coordinates do round both ways


@needs_cuda
@pytest.mark.parametrize("scaling", [None, "block"])
def test_cast_rounding_toward_zero_runs_on_cuda(scaling):
    """Rounding toward zero has no fused kernel: it takes the torch path and sends the CPU's bytes."""
    codec = get_compressor("cast", format="fp4", rounding="zero", scaling=scaling)
    x = _spread(4096 + 5, 2)
    gpu, cpu = codec.encode(x.cuda()), codec.encode(x)
    for key in cpu.payload:
        assert torch.equal(gpu.payload[key].cpu(), cpu.payload[key]), key
    torch.testing.assert_close(codec.decode(gpu).cpu(), codec.decode(cpu), rtol=0, atol=0, equal_nan=True)


GRAPHED = {  # codecs whose bucket exchange is graph-safe on CUDA (graph=True) and two that are not
    "identity": (lambda: get_compressor("identity"), True),
    "cast-fp8": (lambda: get_compressor("cast", format="fp8"), True),
    "cast-fp4-stochastic": (lambda: get_compressor("cast", format="fp4", rounding="stochastic"), True),
    "intsgd-int8": (lambda: get_compressor("intsgd", alpha=64.0, bits=8, n_workers=1), True),
    "qsgd": (lambda: get_compressor("qsgd", levels=16), True),
    "natural": (lambda: get_compressor("natural"), True),
    "ef-signsgd": (lambda: __import__("lowbit").compress.ErrorFeedback(get_compressor("signsgd")), True),
    "onebit": (lambda: get_compressor("onebit"), True),
    "intsgd-adaptive": (lambda: get_compressor("intsgd", bits=8, n_workers=1, rule="moving_avg_const",
                                               sigma_sq=1e-4), False),
    "powersgd": (lambda: get_compressor("powersgd", rank=2), False),
}


def _ddp_steps(codec, cuda_graph: bool, steps: int = 6, observe: bool = False):
    """``steps`` SGD steps of a small model under DDP (NCCL, world size 1, several buckets) with
    lowbit's hook: (parameters, hook state)."""
    from lowbit.distributed.hooks import hook_for

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 5)).cuda()
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.01)  # 10 KiB: several buckets
    state, hook = hook_for(codec, model=model, seed=3, cuda_graph=cuda_graph)
    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator(device="cuda").manual_seed(1)
    for k in range(steps):
        x, y = torch.randn(32, 40, device="cuda", generator=g), torch.randint(0, 5, (32,), device="cuda", generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        if observe:  # IntSGD's α from each parameter's step
            state.observe(0.05, [float((p.grad ** 2).sum()) * 0.05**2 for p in model.parameters()])
    torch.cuda.synchronize()
    return [p.detach().clone() for p in model.parameters()], state


@needs_cuda
@pytest.mark.parametrize("label", list(GRAPHED))
def test_graph_replayed_ddp_hook_gives_the_eager_hooks_numbers(label):
    """``hook_for(…, cuda_graph=True)``: the buckets DDP shows again are captured with their NCCL
    all-reduce or all-gather and replayed; parameters and bytes equal the eager hook's bit for bit
    (stochastic codecs too: the graph advances the registered generator as the eager calls do).
    Codecs that read host values per step (adaptive α, PowerSGD) stay eager."""
    import torch.distributed as dist

    make, graphed = GRAPHED[label]
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    try:
        eager, se = _ddp_steps(make(), False, observe=label == "intsgd-adaptive")
        replayed, sg = _ddp_steps(make(), True, observe=label == "intsgd-adaptive")
    finally:
        dist.destroy_process_group()
    for a, b in zip(replayed, eager):
        assert torch.equal(a, b), (label, (a - b).abs().max())
    assert sg.bytes_sent == se.bytes_sent
    buckets = len(sg.buckets()[-1][1])  # DDP's layout after the first step
    captured = sum(len(b.graphs) for b in sg.bucket_states.values())
    assert buckets > 1 and captured == (buckets if graphed else 0), (label, buckets, captured)
