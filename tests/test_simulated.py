"""SimulatedCluster: batched compression over workers equals compressing each worker alone."""

import pytest
import torch

from lowbit.compress import get_compressor
from lowbit.distributed import SimulatedCluster


@pytest.mark.parametrize("name,opts", [("identity", {}), ("cast", {"format": "fp8"}),
                                       ("intsgd", {"alpha": 30.0, "rounding": "nearest", "n_workers": 5}),
                                       ("natural", {}), ("qsgd", {"levels": 4})])
def test_batched_exchange_equals_per_worker(name, opts):
    """Deterministic codecs: the batched exchange equals each worker coding its own row.  The
    stochastic ones draw differently in the two paths, so: every batched value is one of the two
    grid points of its own row next to v (natural: the powers of two around |v|; QSGD: the levels
    ‖v_i‖·⌊·⌋/s and ‖v_i‖·⌈·⌉/s), with v's sign, and the mean of K = 2,000 batched exchanges lies
    within 6 standard errors of v in every coordinate — the two-point rounding's own, gap·√(p(1−p)/K),
    plus 6 draws' worth of the gap where p is too small for the normal approximation (1,500
    coordinates: a false failure has probability below 1e-5).  Bits equal the per-worker packets'; the cluster's mean is the decoded rows' mean."""
    v = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    cl = SimulatedCluster(5, get_compressor(name, **opts), generator=torch.Generator().manual_seed(1))
    out, info = cl.exchange(v)
    codec = get_compressor(name, **opts)
    if name in ("natural", "qsgd"):
        a = v.abs().double()
        if name == "natural":
            lo = torch.exp2(torch.floor(torch.log2(a)))
            grid = (lo, 2 * lo)
        else:
            s, norm = opts["levels"], v.double().norm(dim=1, keepdim=True)
            grid = (torch.floor(a * s / norm) * norm / s, torch.ceil(a * s / norm) * norm / s)
        o = out.abs().double()
        near = torch.minimum((o - grid[0]).abs(), (o - grid[1]).abs())
        assert (near <= 1e-5 * a.amax(dim=1, keepdim=True)).all() and (out * v >= 0).all()
        K = 2000
        draws = torch.stack([cl.exchange(v)[0] for _ in range(K)]).double()
        gap = grid[1] - grid[0]
        p_up = torch.where(gap > 0, (a - grid[0]) / gap.clamp(min=1e-300), 0.0)
        sd = gap * (p_up * (1 - p_up)).clamp(min=0).sqrt()  # the two-point rounding's standard deviation
        slack = gap * 6 / K  # a few draws' worth: the count of round-ups is far from normal where p is tiny
        err = draws.mean(0) - v.double()
        assert (err.abs() <= 6 * sd / K**0.5 + slack + 1e-6 * a).all()
        # and summed over the coordinates, signed by v: a shrinkage of 0.2% (E = 0.998·v) shows as |z| ≈ 8
        assert abs(float((err * v.sign()).sum() / ((sd**2).sum() / K).sqrt())) <= 6
    else:
        each = torch.stack([codec(v[i]) for i in range(5)])
        assert torch.equal(out, each)
    per_worker = sum(8 * codec.encode(v[i]).nbytes for i in range(5))
    assert abs(info["bits"] - per_worker) <= 8 * 5  # one flag byte per packet at most
    twin = SimulatedCluster(5, get_compressor(name, **opts), generator=torch.Generator().manual_seed(1))
    mean, _ = twin.mean(v)  # the same draws as ``out``
    assert torch.allclose(mean, out.mean(0), rtol=0, atol=1e-6)


def test_the_simulated_cluster_is_a_cluster():
    from lowbit.distributed import Cluster

    assert isinstance(SimulatedCluster(3, get_compressor("identity")), Cluster)
    assert not isinstance(object(), Cluster)


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


def test_batched_rows_with_their_own_scales():
    """QSGD, TernGrad and signSGD in batched mode: one multi-tensor call with a scale per row.
    signSGD equals each worker's own message; QSGD stays unbiased — the mean of 4,000 draws lies
    within 6 standard errors of v in every coordinate (the rounding variance of a coordinate is at
    most (‖v‖/(2s))²; 6σ over 1,500 coordinates fails with probability below 1e-5)."""
    v = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    out, info = SimulatedCluster(5, get_compressor("signsgd")).exchange(v)
    each = torch.stack([get_compressor("signsgd")(v[i]) for i in range(5)])
    assert torch.allclose(out, each, rtol=1e-6, atol=0)
    assert info["bits"] == 5 * 8 * get_compressor("signsgd").wire_bytes(300)
    s, draws = 4, 4000
    cl = SimulatedCluster(5, get_compressor("qsgd", levels=s), generator=torch.Generator().manual_seed(1))
    acc = torch.zeros_like(v, dtype=torch.float64)
    for _ in range(draws):
        acc += cl.exchange(v)[0].double()
    bound = 6 * (v.norm(dim=1, keepdim=True).double() / (2 * s)) / draws**0.5
    assert ((acc / draws - v.double()).abs() <= bound).all()
    tern = SimulatedCluster(5, get_compressor("terngrad"), generator=torch.Generator().manual_seed(2)).exchange(v)[0]
    scale = v.abs().amax(1, keepdim=True)  # each row's own TernGrad scale: entries are 0 or ±max|v_i|
    assert ((tern == 0) | torch.isclose(tern.abs(), scale.expand_as(tern))).all() and (tern != 0).any(1).all()


@pytest.mark.parametrize("name,options,seed", [("natural", {}, None), ("intsgd", {"alpha": 50.0, "bits": 8}, None),
                                               ("qsgd", {"levels": 4}, None), ("signsgd", {}, None),
                                               ("qsgd", {"levels": 4}, 3), ("intsgd", {"alpha": 50.0}, 3)])
def test_reduce_in_place_writes_the_same_decoded_rows_over_the_input(name, options, seed):
    from lowbit import get_compressor
    from lowbit.distributed import SimulatedCluster

    rows = torch.randn(6, 500, generator=torch.Generator().manual_seed(2))

    def make():
        gen = None if seed is not None else torch.Generator().manual_seed(5)
        return SimulatedCluster(6, get_compressor(name, **options), generator=gen, seed=seed)

    out, mean, info = make().reduce(rows)
    work = rows.clone()
    out2, mean2, info2 = make().reduce(work, inplace=True)
    assert out2 is work and torch.equal(work, out) and torch.equal(mean2, mean) and info2["bits"] == info["bits"]
    assert not torch.equal(out, rows)


def test_the_former_package_name_gives_the_same_objects():
    import lowbit.dist as old
    import lowbit.distributed as new
    from lowbit.dist.hooks import hook_for
    from lowbit.distributed.hooks import hook_for as hook_for_new

    assert old.SimulatedCluster is new.SimulatedCluster and hook_for is hook_for_new
    import lowbit.dist.simulated

    assert lowbit.dist.simulated is new.simulated


@pytest.mark.parametrize("name,opts", [("signsgd", {"error_feedback": True}), ("hintsgd", {"bits": 8, "n_workers": 3}),
                                       ("qsgd", {"levels": 4})])
def test_per_worker_bucket_route_resumes_from_its_state_dict(name, opts):
    """Per-worker streams of a codec of fixed sizes take the bucket route (each row a bucket of
    one tensor); a cluster rebuilt from ``state_dict`` after 3 steps — generators and, with error
    feedback, every worker's memory — continues exactly as the one that ran on."""
    rows = [torch.randn(3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    a = SimulatedCluster(3, get_compressor(name, **opts), seed=4)
    for r in rows[:3]:
        a.reduce(r.clone())
    assert a._coder is not None
    sd = a.state_dict()
    if "error_feedback" in opts:
        assert all(m is not None for m in sd["memory"])
    b = SimulatedCluster(3, get_compressor(name, **opts), seed=4)
    b.load_state_dict(sd)
    means = []
    for r in rows[3:]:
        own_a, mean_a, info_a = a.reduce(r.clone())
        own_b, mean_b, info_b = b.reduce(r.clone())
        assert torch.equal(own_a, own_b) and torch.equal(mean_a, mean_b) and info_a["bits"] == info_b["bits"]
        means.append(mean_a)
    _, fresh, _ = SimulatedCluster(3, get_compressor(name, **opts), seed=4).reduce(rows[3].clone())
    assert not torch.equal(fresh, means[0])  # the restored state is what made them equal
