"""The multi-tensor path: many gradients coded in one flat call, each still its own message."""

import math

import pytest
import torch

from conftest import needs_cuda
from lowbit import get_compressor
from lowbit.compress.many import batchable, flatten, roundtrip_many, unflatten
from lowbit.optim import QuantizedGradients

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]

DETERMINISTIC = {
    "identity": {}, "cast-fp8": {"format": "fp8"}, "cast-fp4": {"format": "fp4"}, "cast-bf16": {"format": "bf16"},
    "cast-int8": {"format": "int8"}, "signsgd": {}, "onebit": {},
    "intsgd-fixed": {"alpha": 100.0, "bits": 8, "rounding": "nearest"},
    "intsgd-adaptive": {"bits": 16, "rounding": "nearest", "sigma_sq": 1e-4},
    "intsgd-adaptive8": {"bits": 8, "rounding": "nearest", "sigma_sq": 25.0},  # α_j = √d_j/5: one α per tensor
    "hintsgd-nearest": {"bits": 8, "rounding": "nearest", "n_workers": 2},  # α_j = ⌊127/2⌋/‖g_j‖∞
}
STOCHASTIC = {
    "natural": {}, "qsgd": {"levels": 4}, "qsgd-1": {"levels": 1}, "terngrad": {},
    "cast-fp8-sr": {"format": "fp8", "rounding": "stochastic"}, "intsgd": {"alpha": 20.0, "bits": 8},  # |x| ≤ 5.6 < 127/α: no saturation
    "hintsgd": {"bits": 8, "n_workers": 2},
}
NOT_BATCHED = {"qsgd-elias": {"levels": 2, "coding": "elias"}, "terngrad-clip": {"clip": 2.5},
               "cast-block": {"format": "fp4", "scaling": "block"}, "intsgd-auto": {"alpha": 10.0},
               "hintsgd": {}, "topk": {"ratio": 0.1}}


def codec_of(case, opts):
    return get_compressor(case.split("-")[0], **opts)


def tensors(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [t.to(device) for t in (
        (torch.randn(8, 3, 3, 3, generator=g) * 0.1).to(memory_format=torch.channels_last),
        torch.randn(10, generator=g),
        torch.zeros(4),
        torch.randn(33, generator=g) * 1e-3,
        torch.randn(2, 1, 3, generator=g).transpose(0, 2),
        torch.randn(7, 5, generator=g) * 3,
    )]


@pytest.mark.parametrize("device", DEVICES)
def test_flatten_keeps_every_layout(device):
    ts = tensors(device)
    flat, layouts = flatten(ts)
    assert flat.shape == (sum(t.numel() for t in ts),)
    for a, b in zip(ts, unflatten(flat, layouts)):
        assert torch.equal(a, b) and a.stride() == b.stride()
    flat[:] = 7.0  # the results are views of the flat buffer
    assert all(bool((b == 7).all()) for b in unflatten(flat, layouts))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(DETERMINISTIC))
def test_deterministic_codecs_match_tensor_by_tensor(case, device):
    codec = codec_of(case, DETERMINISTIC[case])
    ts = tensors(device)
    states = [codec.init_state(t) for t in ts]
    assert batchable(codec, states)
    outs, nbytes = roundtrip_many(codec, ts, states=states)
    assert nbytes == sum(codec.encode(t, state=s).nbytes for t, s in zip(ts, states))
    for t, s, o in zip(ts, states, outs):
        ref, _ = codec.roundtrip(t, state=s)
        assert o.shape == t.shape and o.dtype == t.dtype
        torch.testing.assert_close(o, ref, rtol=2e-7, atol=0)  # 1/α as a scale: float rounding only


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(STOCHASTIC))
def test_stochastic_codecs_keep_the_per_tensor_distribution(case, device):
    """Over K = 2000 draws: the per-coordinate mean is within 5 standard errors of the per-tensor
    path's mean (unbiased codecs: of the input too), and the mean squared error per
    tensor agrees with the per-tensor path's within 5 standard errors of the difference
    (two-sided, P(false alarm) < 1e-5 per coordinate)."""
    codec = codec_of(case, STOCHASTIC[case])
    ts = tensors(device)
    assert batchable(codec, [codec.init_state(t) for t in ts])
    K = 2000
    gen = torch.Generator(device=device).manual_seed(1)
    many = [torch.stack(o) for o in zip(*[
        [x.reshape(-1).double() for x in roundtrip_many(codec, ts, generator=gen)[0]] for _ in range(K)])]
    one = [torch.stack([codec.roundtrip(t, generator=gen)[0].reshape(-1).double() for _ in range(K)]) for t in ts]
    for t, a, b in zip(ts, many, one):
        x = t.reshape(-1).double()
        # a rare outcome may never be drawn: the variance of a draw in [0, M] with mean |x| is ≤ |x|·M
        floor = x.abs() * max(float(a.abs().max()), float(b.abs().max()))
        var_a, var_b = torch.maximum(a.var(0), floor), torch.maximum(b.var(0), floor)
        assert ((a.mean(0) - b.mean(0)).abs() <= 5 * torch.sqrt((var_a + var_b) / K) + 1e-9).all(), case
        if codec.unbiased:
            assert ((a.mean(0) - x).abs() <= 5 * torch.sqrt(var_a / K) + 1e-9).all(), case
        ea, eb = ((a - x) ** 2).sum(1), ((b - x) ** 2).sum(1)
        assert abs(float(ea.mean() - eb.mean())) <= 5 * math.sqrt(float(ea.var() + eb.var()) / K) + 1e-12, case


@pytest.mark.parametrize("case", list(NOT_BATCHED))
def test_codecs_with_data_dependent_sizes_go_tensor_by_tensor(case):
    codec = codec_of(case, NOT_BATCHED[case])
    ts = tensors("cpu")
    states = [codec.init_state(t) for t in ts]
    assert not batchable(codec, states)
    outs, nbytes = roundtrip_many(codec, ts, states=states, generator=torch.Generator().manual_seed(0))
    ref = [codec.roundtrip(t, state=codec.init_state(t), generator=g)
           for t, g in zip(ts, [torch.Generator().manual_seed(0)] * 1)]
    assert len(outs) == len(ts) and all(o.shape == t.shape for o, t in zip(outs, ts))
    assert torch.equal(outs[0], ref[0][0])  # same generator, same first draw
    assert nbytes > 0


@pytest.mark.parametrize("case", ["qsgd", "terngrad", "signsgd", "cast-fp8", "intsgd-fixed", "natural", "onebit"])
def test_non_finite_input_stays_non_finite(case):
    opts = {**DETERMINISTIC, **STOCHASTIC}[case]
    codec = codec_of(case, opts)
    for bad in (float("nan"), float("inf")):
        ts = tensors("cpu")
        ts[1] = ts[1].clone()
        ts[1][3] = bad
        outs, _ = roundtrip_many(codec, ts, generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(outs[1]).all(), (case, bad)


def _train(codec, multi_tensor, steps=4):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 5))
    model = model.to(memory_format=torch.channels_last)
    opt = QuantizedGradients(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), codec,
                             multi_tensor=multi_tensor)
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 5, (16,))
    storages = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        storages.append({p.grad.untyped_storage().data_ptr() for p in model.parameters()})
    if multi_tensor and batchable(opt.codec):  # one flat buffer, kept across steps; autograd accumulates into it
        assert len(storages[0]) == 1 and all(s == storages[0] for s in storages)
    return [p.detach().clone() for p in model.parameters()], opt.stats


def _train_accumulating(codec, multi_tensor, steps=4, micro=3):
    """``micro`` backward passes into the gradients before each step (gradient accumulation),
    zeroed in place between steps: (parameters, the gradients' storages after each step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 5))
    opt = QuantizedGradients(torch.optim.SGD(model.parameters(), lr=0.1), codec, multi_tensor=multi_tensor,
                             record=False)
    g = torch.Generator().manual_seed(1)
    storages = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        for _ in range(micro):
            x, y = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)
            torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        storages.append({p.grad.untyped_storage().data_ptr() for p in model.parameters()})
    return [p.detach().clone() for p in model.parameters()], storages


@pytest.mark.parametrize("codec", [lambda: get_compressor("cast", format="fp8"),
                                   lambda: get_compressor("intsgd", alpha=1e3, bits=16, rounding="nearest")])
def test_gradients_accumulated_into_the_flat_buffer_are_coded_as_per_parameter(codec):
    """Autograd accumulating several backward passes into the flat buffer's views (the gradients
    zeroed in place, not set to None) gives the per-parameter path's parameters; the buffer is the
    gradients' one storage from the second step on (the views were used in place, not copied)."""
    pa, sa = _train_accumulating(codec(), True)
    pb, _ = _train_accumulating(codec(), False)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert len(sa[1]) == 1 and all(s == sa[1] for s in sa[1:])


@pytest.mark.parametrize("codec", [lambda: get_compressor("cast", format="fp8"), lambda: get_compressor("signsgd"),
                                   lambda: get_compressor("intsgd", alpha=1e3, bits=16, rounding="nearest")])
def test_quantized_gradients_multi_tensor_equals_per_parameter(codec):
    pa, sa = _train(codec(), True)
    pb, sb = _train(codec(), False)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert [r["bits"] for r in sa] == [r["bits"] for r in sb]
    for ra, rb in zip(sa, sb):
        assert ra["q"] == pytest.approx(rb["q"], rel=1e-6)


def _train_cuda(codec, cuda_graph, steps=5, record=False, fused=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(64, 5)).cuda().to(memory_format=torch.channels_last)
    opt = QuantizedGradients(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused), codec,
                             record=record, check_finite=record, cuda_graph=cuda_graph)
    x, y = torch.randn(16, 3, 6, 6, device="cuda"), torch.randint(0, 5, (16,), device="cuda")
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt


@needs_cuda
@pytest.mark.parametrize("make", [lambda: get_compressor("cast", format="fp8"), lambda: get_compressor("signsgd"),
                                  lambda: get_compressor("intsgd", alpha=1e3, bits=8, rounding="nearest")])
def test_cuda_graph_replay_equals_eager_launches(make):
    pa, opt = _train_cuda(make(), True)
    pb, _ = _train_cuda(make(), False)
    assert len(opt._graphs) == 1  # captured once (at the second step), replayed after
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)


@needs_cuda
def test_cuda_graph_replay_with_statistics_and_device_finite_check():
    """The statistics' kernels and the finite check captured with the codec's: the same weights
    and the same statistics as eager launches, with no host read of the check (fused SGD)."""
    make = lambda: get_compressor("cast", format="fp8")
    pa, oa = _train_cuda(make(), True, record=True, fused=True)
    pb, ob = _train_cuda(make(), False, record=True, fused=True)
    assert len(oa._graphs) == 1
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
    for ra, rb in zip(oa.stats, ob.stats):
        assert ra["q"] == rb["q"] and ra["q_layers"] == rb["q_layers"] and ra["bits"] == rb["bits"]


@needs_cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("make", [lambda: get_compressor("qsgd", levels=4), lambda: get_compressor("natural"),
                                  lambda: get_compressor("cast", format="fp8", rounding="stochastic")])
def test_cuda_graph_replays_draw_fresh_random_numbers(make, cuda_graph):
    """Each replay codes the same gradients with new, independent random numbers: over K = 400
    steps the mean's squared error Σ_i (m_i − g_i)² matches Σ_i s_i²/K (s_i² the sample variance;
    its expectation for independent unbiased draws, ≈ 1 ± 0.05 here; repeated or correlated
    numbers inflate it), and the summed error Σ_i (m_i − g_i) is within 5 standard errors of 0."""
    g = torch.Generator(device="cuda").manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4096, device="cuda"))
    opt = QuantizedGradients(torch.optim.SGD([p], lr=0.0), make(), record=False, check_finite=False,
                             cuda_graph=cuda_graph, generator=g)
    g0 = torch.randn(4096, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    draws = []
    for _ in range(402):
        opt.zero_grad(set_to_none=False)  # zeroed in place: p.grad stays the flat buffer's view
        if p.grad is None:
            p.grad = g0.clone()
        else:
            p.grad += g0  # into the buffer's view, as autograd accumulates
        opt.step()
        draws.append(p.grad.clone())
    assert len(opt._graphs) == int(cuda_graph)
    d = torch.stack(draws[2:]).double()
    assert not torch.equal(draws[-1], draws[-2])
    err = d.mean(0) - g0.double()
    var_mean = d.var(0) / len(d)
    ratio = float((err**2).sum() / var_mean.sum())
    assert 0.7 < ratio < 1.4, ratio
    assert abs(float(err.sum())) <= 5 * float(var_mean.sum()) ** 0.5


def _segmented(device, seed=0):
    from lowbit.compress.many import segments

    ts = tensors(device, seed)
    flat, _ = flatten(ts)
    views = list(torch.split(flat, [t.numel() for t in ts]))
    return flat, views, segments([t.numel() for t in ts], flat.device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(DETERMINISTIC) + list(STOCHASTIC))
def test_flat_messages_decode_to_the_flat_roundtrip(case, device):
    """flat_decode(flat_encode(·)) — what a DDP bucket sends — gives exactly the values of the
    flat round trip with the same generator state, in no more bytes than the per-tensor packets."""
    opts = {**DETERMINISTIC, **STOCHASTIC}[case]
    codec = codec_of(case, opts)
    flat, views, seg = _segmented(device)
    gen = lambda: torch.Generator(device=flat.device).manual_seed(5)  # noqa: E731
    want = codec.flat_roundtrip(flat, views, seg, generator=gen())
    payload = codec.flat_encode(flat, views, seg, generator=gen())
    got = codec.flat_decode(payload, seg, out=torch.empty_like(flat))
    assert torch.equal(got, want), (got - want).abs().max()
    public = {"scales"} if "intsgd" in case else set()
    sent = sum(t.numel() * t.element_size() for k, t in payload.items() if k not in public)
    assert sent <= seg.wire_bytes(codec)


@pytest.mark.parametrize("case", ["identity", "intsgd-fixed", "intsgd-adaptive8", "intsgd"])
def test_summed_flat_messages_decode_to_the_mean(case):
    """Summable codecs: the in-flight sum of n workers' integers (or floats) decodes to the mean
    of the n decoded messages — exactly for integers; and a non-finite worker makes it NaN."""
    from lowbit.distributed.bucket import BucketCoder

    opts = {**DETERMINISTIC, **STOCHASTIC}[case]
    codec = get_compressor("intsgd", **{**opts, "n_workers": 3}) if "intsgd" in case else codec_of(case, opts)
    ts = tensors("cpu")
    coder = BucketCoder(codec, [t.numel() for t in ts], "cpu")
    assert coder.summable
    states = [codec.init_state(t) for t in ts] if codec.traits.shared_state else None
    flats = [flatten(tensors("cpu", seed))[0] for seed in range(3)]
    payloads = [coder.encode(f.clone(), generator=torch.Generator().manual_seed(i), states=states)[0]
                for i, f in enumerate(flats)]
    got = coder.decode_sum(coder.sum_payloads(payloads), 3, torch.empty_like(flats[0]))
    want = coder.mean_decoded(payloads, torch.empty_like(flats[0]))
    tol = 0 if case == "identity" else 1e-6
    assert torch.allclose(got, want, rtol=tol, atol=tol)
    flats[1][4] = float("nan")
    payloads[1] = coder.encode(flats[1].clone(), states=states)[0]
    assert torch.isnan(coder.decode_sum(coder.sum_payloads(payloads), 3, torch.empty_like(flats[0]))).any()


def test_powersgd_bucket_message_keeps_channels_last_states_and_matches_per_tensor():
    """PowerSGD's bucket message (one per DDP bucket) factors each tensor as its per-tensor encode
    does — states of channels-last weights included — and the mean of two messages is the mean of
    the decoded products (to float rounding: one product of the factors side by side)."""
    from lowbit.distributed.bucket import BucketCoder

    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 8, 3, 3, generator=g).to(memory_format=torch.channels_last)
    shapes = [tuple(w.shape), (16,), (40, 30)]
    flat = torch.randn(sum(math.prod(s) for s in shapes), generator=g)
    codec = get_compressor("powersgd", rank=2)
    coder = BucketCoder(codec, [math.prod(s) for s in shapes], "cpu", shapes=shapes)
    a = [codec.init_state(w), codec.init_state(torch.empty(16)), codec.init_state(torch.empty(40, 30))]
    b = [codec.init_state(torch.empty(s)) for s in shapes]
    for step in range(3):
        payload, _ = coder.encode(flat, states=a, generator=torch.Generator().manual_seed(step))
        gen = torch.Generator().manual_seed(step)  # the tensors draw their first Q in bucket order
        per = [codec.encode(t.reshape(s), state=st, generator=gen) for t, s, st in zip(flat.split(coder.sizes), shapes, b)]
        mean = coder.mean_decoded([payload, payload], torch.empty_like(flat))
        want = torch.cat([codec.decode(p).reshape(-1) for p in per])
        assert torch.allclose(mean, want, rtol=1e-5, atol=1e-6), (mean - want).abs().max()
        assert torch.equal(payload["values"], flat.split(coder.sizes)[1])
    assert all(torch.allclose(x.error, y.error, atol=1e-6) for x, y in zip(a, b) if x.error is not None)


@needs_cuda
@pytest.mark.parametrize("name", ["onebit", "signsgd", "qsgd", "terngrad"])
def test_bucket_encode_and_mean_do_not_synchronize_on_cuda(name):
    """A bucket's encode and the mean of two messages on the GPU read nothing on the host once the
    bucket's segment index exists (1-bit SGD's segment sums skip segment_reduce's host checks)."""
    from lowbit.distributed.bucket import BucketCoder

    sizes = [9408, 64, 64, 36864, 512, 10]
    x = torch.randn(sum(sizes), device="cuda")
    coder = BucketCoder(get_compressor(name), sizes, "cuda")
    p, _ = coder.encode(x)
    coder.mean_decoded([p, p], torch.empty_like(x))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        p, _ = coder.encode(x)
        coder.mean_decoded([p, p], torch.empty_like(x))
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_inf_norms_on_the_cpu_equal_torchs():
    """TernGrad's scales max|g_j| on the CPU come from aminmax: torch's inf-norms bit for bit, a NaN
    or ±inf included, −0 and all-zero tensors giving +0, an empty tensor 0."""
    from lowbit.compress.many import foreach_norms

    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(n, generator=g) * 10.0 ** k for n, k in [(5, -3), (1000, 2), (7, 0), (3, 0), (4, 0), (5, 0)]]
    ts[2].zero_()
    ts[3][1] = float("nan")
    ts[4][2] = -float("inf")
    ts[5] = -torch.zeros(5)
    got = foreach_norms(ts, float("inf"))
    want = torch.stack(torch._foreach_norm(ts, float("inf"))).float()
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got[~got.isnan()].view(torch.int32), want[~want.isnan()].view(torch.int32))
    assert torch.equal(foreach_norms([torch.zeros(0), ts[0]], float("inf")), torch.stack([torch.zeros(()), want[0]]))


@pytest.mark.skipif(not __import__("lowbit.kernels.cpu", fromlist=["x"]).TORCH_OK,
                    reason="the CPU's compiled loops run with torch >= 2.13")
def test_compiled_float64_norms_and_sums_against_exact_sums():
    """QSGD's ‖g_j‖₂, signSGD's ‖g_j‖₁ and 1-bit SGD's Σx, Σ|x| on large CPU tensors come from compiled float64 loops
    (another order of addition than torch's).  Oracle: math.fsum, the exactly rounded sum.  Any
    order of n float64 additions is within (n−1)·2^−53·Σ|terms| of it (each square and each
    float32 value exact in float64); the float32 norms and counts must be exact, on tensors over
    40 binades, with tails that exercise the vector widths, ±inf and NaN."""
    from lowbit.compress.many import foreach_norms
    from lowbit.kernels import cpu

    g = torch.Generator().manual_seed(1)
    sizes = [(1 << 14) + 1, 65_537, 100_003, (1 << 20) + 7]
    ts = [torch.randn(n, generator=g) * torch.logspace(-20, 20, n)[torch.randperm(n, generator=g)] for n in sizes]
    ts += [torch.randn(1 << 16, generator=g) * 10.0 ** k for k in (-30, 0, 30)]
    for t in ts:
        n = t.numel()
        sq = [float(v) ** 2 for v in t.double().tolist()]
        exact = math.fsum(sq)
        got = float(cpu.call(cpu.sum_squares, t))
        assert abs(got - exact) <= (n - 1) * 2.0**-53 * exact
        norm = foreach_norms([t, t[:5]], 2)  # the big one compiled (≥ 2^20 values in all), the small eager
        assert torch.equal(norm, torch.tensor([math.sqrt(exact), math.sqrt(math.fsum(sq[:5]))], dtype=torch.float64).float())
        pos = torch.empty(n, dtype=torch.uint8)
        tot, mag, count = cpu.call(cpu.signs_and_sums, t, pos).tolist()
        vals = t.double().tolist()
        absum = math.fsum(abs(v) for v in vals)
        assert abs(tot - math.fsum(vals)) <= (n - 1) * 2.0**-53 * absum and abs(mag - absum) <= (n - 1) * 2.0**-53 * absum
        assert count == int((t >= 0).sum()) and torch.equal(pos, (t >= 0).to(torch.uint8))
        l1 = foreach_norms([t, t[:5]], 1)  # signSGD's ‖g_j‖₁: float64 sums, the same float32 norms
        assert torch.equal(l1, torch.tensor([absum, math.fsum(abs(v) for v in vals[:5])], dtype=torch.float64).float())
        scales = get_compressor("signsgd").tensor_scales([t, t[:5]])
        assert torch.equal(scales, torch.stack([l1[0] / n, l1[1] / 5]))
    bad = ts[-1].clone()
    bad[3] = float("inf")
    assert math.isinf(float(cpu.call(cpu.sum_squares, bad)))
    bad[4] = float("nan")
    assert math.isnan(float(cpu.call(cpu.sum_squares, bad)))
    assert math.isnan(cpu.call(cpu.signs_and_sums, bad, torch.empty(bad.numel(), dtype=torch.uint8))[0])
