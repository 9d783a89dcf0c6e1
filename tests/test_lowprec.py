"""LowPrecision: weights and optimizer state in low precision, against a float64 loop that rounds
with ml_dtypes (the independent oracle for the formats)."""

import copy
import math

import ml_dtypes
import numpy as np
import pytest
import torch
from loops import cross_entropy_losses

from lowbit.optim import LowPrecision, QuantizedGradients


def _bf16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    A, b = torch.randn(40, 6, generator=g), torch.randn(40, generator=g)
    return A, b


def test_sgd_with_momentum_in_bfloat16_matches_a_reference_loop():
    """m' = β·m + g, w ← bf16(w − lr·m'), m ← bf16(m') with nearest rounding, step by step against
    numpy arithmetic in float32 (torch's SGD precision) rounded with ml_dtypes, from the same
    gradients."""
    A, b = _problem()
    w = torch.nn.Parameter(torch.zeros(6))
    opt = LowPrecision(torch.optim.SGD([w], lr=0.05, momentum=0.9), weight="bf16", state="bf16", rounding="nearest")
    wr, m = np.zeros(6, dtype=np.float32), None
    f32 = np.float32
    for _ in range(25):
        opt.zero_grad()
        ((A @ w - b) ** 2).mean().backward()
        g = w.grad.numpy().copy()
        full = g.copy() if m is None else f32(0.9) * m + g  # the step uses the buffer before its rounding
        wr = _bf16(wr + f32(-0.05) * full).astype(np.float32)
        m = _bf16(full).astype(np.float32)
        opt.step()
        assert np.array_equal(opt.state[w]["momentum_buffer"].numpy(), m)
        assert np.array_equal(w.detach().numpy(), wr)
        w.data.copy_(torch.from_numpy(wr))  # the next gradient at the reference's point
    assert len(opt.dataframe()) == 25


def test_stochastic_weights_keep_updates_smaller_than_the_grid_step():
    """Below 1, bfloat16's grid step is 2^-8 ≈ 0.0039: 2,000 updates of -1e-4 (a fortieth of a
    step) vanish under nearest rounding and add up to -0.2 under stochastic rounding, whose mean is
    exact. Each weight's spread after 2,000 steps is about 0.0039·sqrt(2000·0.0256) ≈ 0.028, the
    mean of 64 weights' about 0.0035: ±0.02 is more than 5 standard deviations."""
    finals = {}
    for rounding in ("nearest", "stochastic"):
        w = torch.nn.Parameter(torch.ones(64))
        opt = LowPrecision(torch.optim.SGD([w], lr=1e-4), weight="bf16", rounding=rounding,
                           generator=torch.Generator().manual_seed(0))
        for _ in range(2000):
            w.grad = torch.ones(64)
            opt.step()
        finals[rounding] = float(w.detach().mean())
    assert finals["nearest"] == 1.0
    assert abs(finals["stochastic"] - (1 - 0.2)) < 0.02


def test_composes_with_quantized_gradients_and_round_trips_its_state():
    A, b = _problem(1)

    def make(w):
        inner = QuantizedGradients(torch.optim.Adam([w], lr=0.01), "fp8")
        return LowPrecision(inner, weight="bf16", state={"exp_avg": "bf16", "exp_avg_sq": "fp16"},
                            generator=torch.Generator().manual_seed(3))

    def run(opt, w, n):
        for _ in range(n):
            opt.zero_grad()
            ((A @ w - b) ** 2).mean().backward()
            opt.step()

    w = torch.nn.Parameter(torch.zeros(6))
    opt = make(w)
    run(opt, w, 10)
    st = opt.state[w]
    for name, dt in (("exp_avg", ml_dtypes.bfloat16), ("exp_avg_sq", np.float16)):
        v = st[name].numpy()
        assert np.array_equal(v, v.astype(dt).astype(np.float32)), name  # every entry on its format's grid
    assert np.array_equal(w.detach().numpy(), w.detach().numpy().astype(ml_dtypes.bfloat16).astype(np.float32))
    saved, w_saved = copy.deepcopy(opt.state_dict()), w.detach().clone()
    run(opt, w, 10)
    w2 = torch.nn.Parameter(w_saved.clone())
    opt2 = make(w2)
    opt2.load_state_dict(saved)
    run(opt2, w2, 10)
    assert torch.equal(w.detach(), w2.detach())


def test_bad_rounding_is_an_error():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="rounding must be one of"):
        LowPrecision(torch.optim.SGD([w], lr=0.1), rounding="up")


def _readme_run(**quantizers):
    """The README's model: fp8 activations and errors, bf16 weights and momentum, 50 steps."""
    import lowbit
    from torch import nn

    torch.manual_seed(0)
    model = lowbit.nn.lower(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)), nn.Linear,
                            **quantizers)
    opt = LowPrecision(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), weight="bf16",
                       state={"momentum_buffer": "bf16"})
    return cross_entropy_losses(model, opt, torch.randn(256, 64), torch.randint(0, 10, (256,)), 50)


def test_the_readme_low_precision_model_trains_and_unscaled_fp8_errors_diverge():
    scaled = _readme_run(forward="fp8", backward="fp8", backward_scaling="tensor")
    assert scaled[0] > 2.0 and scaled[-1] < 0.2  # fits the 256 samples as fp32 does (0.09)
    unscaled = _readme_run(forward="fp8", backward="fp8")
    assert not math.isfinite(unscaled[-1]) or unscaled[-1] > 1.0, unscaled[-1]
