"""IntSGD and HintSGD (Mishchenko, Wang, Kovalev, Richtárik: "IntSGD: Floatless Compression of
Stochastic Gradients").

Each worker sends integers Int(α·g) and the integers are summed in flight (an integer all-reduce);
the receiver applies x ← x − η/(n·α) · Σ_i Int(α·g_i).  Int is stochastic rounding
⌊t⌋ + Bernoulli(t − ⌊t⌋) (unbiased: E[Int(αg)]/α = g) or deterministic rounding to nearest.

The scale α is shared by all workers and computed from public quantities only, so it is not sent:

* constant: ``alpha=<float>``;
* adaptive (``alpha=None``; call :meth:`IntSGD.observe` after each step, state
  :class:`IntSGDState`), by ``rule``:

  - ``"adaptive"``: α_k = η_k·√d / (√(2n)·‖x_k − x_{k−1}‖ + ε), ε the float64 machine epsilon
    (the IntSGD code's choice for its convex experiments: α grows without bound as x converges);
  - ``"moving_avg"``: r_k = β·r_{k−1} + (1 − β)·‖x_k − x_{k−1}‖², α_k = η_k·√d / (√(2n·r_k) + ε);
  - ``"moving_avg_const"``: the same r_k, α_k = η_k·√d / √(2n·r_k + η_k²·σ²) (bounded by √d/σ;
    the deep-network experiments' choice, σ² = ``sigma_sq``);

  and α_0 = √d/σ before the first step.

Payload: the integers in the narrowest signed type that cannot overflow when ``n_workers``
packets are summed (``bits=None``), or in a fixed width ``bits`` with saturation (no host sync).

HintSGD (heuristic IntSGD): α = 2^8 / max_i ‖g_i‖_∞, the maximum taken over workers by an
all-reduce of one scalar, which is part of the payload (4 bytes); integers then stay within
±256 (with a fixed width of b bits, α = ⌊(2^(b−1) − 1)/n⌋ / max_i ‖g_i‖_∞ instead, so that n
workers' sum fits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..kernels import cpu
from ..quantize import clamped_stochastic_integers, round_integer
from .base import Compressor, Packet, Summable, Traits, WorkerAgreement, _check_tensor, all_finite, into, register
from .many import MultiTensor, foreach_norms
from .. import kernels

_INT_TYPES = [(8, torch.int8), (16, torch.int16), (32, torch.int32), (64, torch.int64)]


def _container(max_abs: int, n_workers: int) -> torch.dtype:
    need = max_abs * max(1, n_workers)
    for bits, dt in _INT_TYPES:
        if need <= 2 ** (bits - 1) - 1:
            return dt
    raise OverflowError(f"integers of magnitude {need} do not fit in 64 bits")


def _to_device(values: list[float], device) -> torch.Tensor:
    """A float32 vector on ``device`` without waiting for it (pinned memory, asynchronous copy)."""
    t = torch.tensor(values, dtype=torch.float32)
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _divided_into(ints: torch.Tensor, alpha: float, finite: torch.Tensor, out: torch.Tensor) -> bool:
    """out ← k/α, NaN everywhere where ``finite`` is 0, in one compiled CPU loop where the buffer
    is large enough (False: the caller runs the eager passes)."""
    return (not ints.is_cuda and cpu.wanted(out) and cpu.call(
        cpu.divided_into, ints, torch.tensor(alpha, dtype=torch.float32), finite.reshape(()), out) is not None)


def int_widths(max_abs: torch.Tensor) -> torch.Tensor:
    """Bits per coordinate of two's-complement integers of magnitude ≤ max_abs (each value of a
    tensor): 1 + ⌈log₂(max+1)⌉, and 1 for 0 — the IntSGD paper's count, in float64."""
    m = max_abs.double()
    return torch.where(m > 0, 1 + torch.ceil(torch.log2(m + 1)), torch.ones_like(m))


def int_width(max_abs: int) -> int:
    """:func:`int_widths` of one magnitude."""
    return int(int_widths(torch.tensor(float(max_abs))))


@dataclass
class IntSGDState:
    """Adaptive-scale state: the moving average r of ‖x_k − x_{k−1}‖² and the current α."""

    d: int
    r: float = 0.0
    alpha: float | None = None
    steps: int = 0


@register("intsgd")
class IntSGD(MultiTensor, Summable, WorkerAgreement, Compressor):
    traits = Traits(unbiased=True, summable=True, elementwise=True, shared_state=True)
    reduce_ops = {"ints": "sum", "finite": "min", "scales": "same"}

    def __init__(self, alpha: float | None = None, rounding: str = "stochastic", bits: int | None = None,
                 n_workers: int = 1, rule: str = "adaptive", beta: float = 0.0, sigma_sq: float = 1e-8):
        if rule not in ("adaptive", "moving_avg", "moving_avg_const"):
            raise ValueError(f"rule must be 'adaptive', 'moving_avg' or 'moving_avg_const', got {rule!r}")
        self.rule = rule
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"intsgd rounding is 'stochastic' or 'nearest', got {rounding!r}")
        if bits is not None and bits not in (8, 16, 32, 64):
            raise ValueError(f"bits must be 8, 16, 32, 64 or None (auto), got {bits}")
        self.alpha = alpha
        self.rounding = rounding
        self.bits = bits
        self.n_workers = n_workers
        self.beta = beta
        self.sigma_sq = sigma_sq
        self.traits = replace(self.traits, unbiased=rounding == "stochastic", bits=bits)

    @property
    def adaptive(self) -> bool:
        """Whether α follows the iterates (then call :meth:`observe` after each step)."""
        return self.alpha is None

    def init_state(self, tensor: torch.Tensor) -> IntSGDState:
        return IntSGDState(d=tensor.numel())

    def observe(self, state: IntSGDState, lr: float, step_sq_norm) -> float | torch.Tensor:
        """Update α after a step of size ‖x_k − x_{k−1}‖² = step_sq_norm taken with stepsize lr.

        ``step_sq_norm`` may be a tensor of R values (R independent runs batched): α and r are
        then tensors of R values too."""
        eps = 2.220446049250313e-16
        sq = step_sq_norm if isinstance(step_sq_norm, torch.Tensor) else float(step_sq_norm)
        state.r = sq if state.steps == 0 else self.beta * state.r + (1 - self.beta) * sq
        n, top = self.n_workers, lr * math.sqrt(state.d)
        if self.rule == "adaptive":
            state.alpha = top / ((2 * n * sq) ** 0.5 + eps)
        elif self.rule == "moving_avg":
            state.alpha = top / ((2 * n * state.r) ** 0.5 + eps)
        else:
            denom = (2 * n * state.r + lr**2 * self.sigma_sq) ** 0.5
            fallback = self._alpha0(state.d)
            if isinstance(denom, torch.Tensor):
                state.alpha = torch.where(denom > 0, top / denom.clamp(min=1e-300), fallback)
            else:
                state.alpha = top / denom if denom > 0 else fallback
        state.steps += 1
        return state.alpha

    def _alpha0(self, d: int) -> float:
        return math.sqrt(d) / math.sqrt(self.sigma_sq)

    def scale(self, tensor: torch.Tensor, state: IntSGDState | None):
        if self.alpha is not None:
            return float(self.alpha)
        if state is not None and state.alpha is not None:
            return state.alpha
        return self._alpha0(tensor.numel())

    def _pack_ints(self, ints: torch.Tensor) -> tuple[torch.Tensor, int]:
        if self.bits is not None:
            dt = dict((b, d) for b, d in _INT_TYPES)[self.bits]
            lim = (2 ** (self.bits - 1) - 1) // max(1, self.n_workers)
            return ints.clamp_(-lim, lim).to(dt), -1
        m = int(torch.nan_to_num(ints.abs(), nan=0.0, posinf=0.0).max()) if ints.numel() else 0
        return ints.to(_container(m, self.n_workers)), m

    def _round(self, t: torch.Tensor, alpha, generator) -> torch.Tensor:
        """Int(α·t) as floats: half to even (``nearest``, torch.round), or stochastic — on CUDA
        in one Triton pass (probabilities in multiples of 2^-23, a Philox stream), else
        :func:`lowbit.quantize.round_integer`."""
        if self.rounding == "nearest":
            scaled = t * alpha
            return torch.round(scaled, out=scaled)
        if k := kernels.fused_codecs(t, when=isinstance(alpha, float)):
            return k.round_stochastic(t, alpha, generator)
        return round_integer(t * alpha if not (isinstance(alpha, float) and alpha == 1.0) else t, self.rounding,
                             generator=generator)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        t = tensor.detach().reshape(-1).to(torch.float32)
        return self._encode_alpha(t, self.scale(t, state), generator, tuple(tensor.shape), tensor.dtype)

    def _encode_alpha(self, t, alpha: float, generator, shape, dtype) -> Packet:
        if k := kernels.fused_codecs(t, when=self.bits == 8):
            ints, finite = k.int8_encode(t, alpha, 127 // max(1, self.n_workers), self.rounding == "stochastic", generator)
            payload = {"ints": ints, "finite": finite}
            return Packet(payload, shape, dtype, {"alpha": alpha, "max_abs": -1, "width": 8})
        coded = None
        if self.bits in (8, 16) and self.rounding == "stochastic" and isinstance(alpha, float):
            lim, dt = (2 ** (self.bits - 1) - 1) // max(1, self.n_workers), dict(_INT_TYPES)[self.bits]
            coded = clamped_stochastic_integers(t, alpha, lim, dt, generator=generator)  # CPU: one loop
        if coded is None:
            (ints, m), finite = self._pack_ints(self._round(t, alpha, generator)), all_finite(t)
        else:
            (ints, finite), m = coded, -1
        payload = {"ints": ints, "finite": finite.reshape(1).to(torch.uint8)}
        meta = {"alpha": alpha, "max_abs": m, "width": int_width(m) if m >= 0 else self.bits}
        return Packet(payload, shape, dtype, meta)

    # multi-tensor path (fixed width only: the automatic container depends on the data):
    # a given α codes the flat buffer directly; adaptive α_j enter as scales s_j = 1/α_j.
    def batchable(self, states=None) -> bool:
        return self.bits is not None

    @property
    def agreed_container(self) -> bool:  # a bucket of one tensor, automatic width: the container agreed after
        return self.bits is None

    def payload_peak(self, payload: dict) -> torch.Tensor:
        """max|Int| of a payload's integers (float64, 0 when empty): what the workers maximize."""
        ints = payload["ints"]
        return ints.abs().max().double() if ints.numel() else torch.zeros((), dtype=torch.float64, device=ints.device)

    def conform_payload(self, payload: dict, agreed: int) -> dict:
        """The payload's integers in the container of the largest max|Int| over the workers."""
        dt = _container(int(agreed), self.n_workers)
        return payload if payload["ints"].dtype == dt else {**payload, "ints": payload["ints"].to(dt)}

    def _alphas(self, tensors, states) -> list[float]:
        return [self.scale(t, None if states is None else states[j]) for j, t in enumerate(tensors)]

    def tensor_scales(self, tensors, states=None):
        if self.alpha is not None:
            return None
        return _to_device([1.0 / a for a in self._alphas(tensors, states)], tensors[0].device)

    def unit_roundtrip(self, u, generator=None):
        """decode(encode(u)) without building the packet (the same values: integers decoded in
        float32, every entry NaN when any input is not finite, the fixed width's clamp)."""
        alpha = float(self.alpha) if self.alpha is not None else 1.0
        if kernels.fused_codecs(u, when=self.bits == 8):
            return self.decode(self._encode_alpha(u, alpha, generator, tuple(u.shape), u.dtype))
        k = self._round(u.reshape(-1), alpha, generator).reshape(u.shape)
        if self.bits is not None:
            lim = (2 ** (self.bits - 1) - 1) // max(1, self.n_workers)
            k = k.clamp(-lim, lim)
        v = k.to(torch.float32) / alpha if alpha != 1.0 else k.to(torch.float32)
        v = torch.where(all_finite(u), v, torch.full_like(v, float("nan")))
        return v.to(u.dtype)

    def unit_encode(self, u, generator=None):
        alpha = float(self.alpha) if self.alpha is not None else 1.0
        return self._encode_alpha(u.reshape(-1), alpha, generator, (u.numel(),), u.dtype).payload

    def unit_decode(self, payload, n, out=None):
        alpha = float(self.alpha) if self.alpha is not None else 1.0
        ints = payload["ints"]
        if out is not None and not ints.is_cuda and out.dtype == torch.float32 and out.is_contiguous():
            if _divided_into(ints.reshape(-1), alpha, payload["finite"], out.reshape(-1)):
                return out
            torch.div(ints.reshape(-1), alpha, out=out.reshape(-1))  # decode's division, straight into out
            if not bool((payload["finite"] != 0).all()):  # a one-byte flag, read on the host
                out.fill_(float("nan"))
            return out
        return into(self.decode(Packet(payload, (n,), torch.float32, {"alpha": alpha})), out)

    def _alpha_tables(self, tensors, states, device):
        alphas = self._alphas(tensors, states)  # α_j and 1/α_j as the per-tensor kernels use them
        table = _to_device(alphas + [1.0 / a for a in alphas], device)
        return table[: len(alphas)], table[len(alphas):]

    def flat_encode(self, flat, tensors, segments, *, states=None, generator=None):
        """Integers Int(α_j·g_j) of every tensor and the finite flag; ``"scales"`` (1/α_j, adaptive
        α only) is public: every worker computes it, it is not sent (``reduce_ops``: same)."""
        if not (k := kernels.fused_codecs(flat, when=self.bits == 8)):
            return super().flat_encode(flat, tensors, segments, states=states, generator=generator)
        lim, stochastic = 127 // max(1, self.n_workers), self.rounding == "stochastic"
        if self.alpha is not None:
            ints, finite = k.int8_encode(flat, float(self.alpha), lim, stochastic, generator)
            return {"ints": ints, "finite": finite}
        a, inv = self._alpha_tables(tensors, states, flat.device)
        ints, finite = k.int8_encode(flat, a, lim, stochastic, generator, seg=segments.index)
        return {"scales": inv, "ints": ints, "finite": finite}

    def flat_decode(self, payload, segments, *, out=None):
        ints = payload["ints"]
        if not (k := kernels.fused_codecs(ints, when=ints.dtype == torch.int8)):
            return super().flat_decode(payload, segments, out=out)
        if "scales" not in payload:
            return k.int8_decode(ints, payload["finite"], float(self.alpha), out=out)
        return k.int8_decode(ints, payload["finite"], None, seg=segments.index, inv_alpha=payload["scales"], out=out)

    def graph_safe(self, flat, states=None) -> bool:  # adaptive α: host values
        return kernels.fused_codecs(flat, when=self.alpha is not None and self.bits == 8) is not None

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        if not (k := kernels.fused_codecs(flat, when=self.bits == 8)):
            return super().flat_roundtrip(flat, tensors, segments, states=states, generator=generator, out=out)
        lim, stochastic = 127 // max(1, self.n_workers), self.rounding == "stochastic"
        if self.alpha is not None:
            ints, finite = k.int8_encode(flat, float(self.alpha), lim, stochastic, generator)
            return k.int8_decode(ints, finite, float(self.alpha), out=out)
        a, inv = self._alpha_tables(tensors, states, flat.device)
        ints, finite = k.int8_encode(flat, a, lim, stochastic, generator, seg=segments.index)
        return k.int8_decode(ints, finite, None, seg=segments.index, inv_alpha=inv, out=out)

    def wire_bytes(self, numel: int) -> int:
        return numel * self.bits // 8 + 1

    # batched runs (lowbit.distributed.SimulatedCluster on R × n × d rows): each run has its own α
    def run_scales(self, rows, state=None):
        if self.alpha is not None:
            return None  # the unit coder applies the fixed α
        a = self.scale(rows[0, 0], state)
        a = torch.as_tensor(a, dtype=rows.dtype, device=rows.device)
        return (1.0 / a).reshape(-1, 1, 1).expand(rows.shape[0], 1, 1)

    def run_bits(self, units) -> dict:
        """Bits of each run's n packets of integers ``units`` (R × n × d): the container each run's
        workers agree on (or the fixed width) plus the finite flag, and the IntSGD paper's counts
        d·(1 + ⌈log₂(max|Int_i| + 1)⌉) per worker and for the summed message."""
        R, n, d = units.shape
        units = units * float(self.alpha) if self.alpha is not None else units  # the integers
        peak = units.abs().amax(2)  # R × n
        if self.bits is not None:
            width = torch.full((R,), float(self.bits), dtype=torch.float64)
        else:
            need = peak.amax(1).double() * max(1, self.n_workers)
            width = torch.full((R,), 64.0, dtype=torch.float64)
            for b in (32, 16, 8):
                width = torch.where(need <= 2 ** (b - 1) - 1, float(b), width)
        bits = n * (width * d + 8 + self._header_bits())
        return {"bits": bits, "width_bits": d * int_widths(peak).sum(1),
                "sum_width_bits": d * int_widths(units.sum(1).abs().amax(1))}

    def _header_bits(self) -> int:
        return 0

    def decode(self, packet: Packet) -> torch.Tensor:
        ints = packet.payload["ints"]
        if k := kernels.fused_codecs(ints, when=ints.dtype == torch.int8 and isinstance(packet.meta["alpha"], float)):
            v = k.int8_decode(ints, packet.payload["finite"], packet.meta["alpha"])
            return v.reshape(packet.shape).to(packet.dtype)
        alpha = packet.meta["alpha"]
        if isinstance(alpha, float) and _divided_into(ints.reshape(-1), alpha, packet.payload["finite"],
                                                      v := torch.empty(ints.numel(), dtype=torch.float32, device=ints.device)):
            return v.reshape(packet.shape).to(packet.dtype)
        v = torch.div(ints, alpha)  # float32: the int → float conversion in the pass
        if v.dtype != torch.float32:
            v = v.to(torch.float32)
        v = v.masked_fill_(packet.payload["finite"] == 0, float("nan")) if v.numel() else v
        return v.reshape(packet.shape).to(packet.dtype)

    def agree_after(self, packet: Packet) -> int | None:
        return packet.meta["max_abs"] if self.bits is None else None

    def conform(self, packet: Packet, agreed: int) -> Packet:
        """The integers in the container every worker chose: the one for the largest max|Int|."""
        dt = _container(int(agreed), self.n_workers)
        if packet.payload["ints"].dtype == dt:
            return packet
        return Packet({**packet.payload, "ints": packet.payload["ints"].to(dt)}, packet.shape, packet.dtype,
                      dict(packet.meta))

    def add(self, a: Packet, b: Packet) -> Packet:
        if a.meta["alpha"] != b.meta["alpha"]:
            raise ValueError("IntSGD packets sum only under the same shared scale α")
        ints = a.payload["ints"] + b.payload["ints"]
        m = a.meta["max_abs"] + b.meta["max_abs"] if min(a.meta["max_abs"], b.meta["max_abs"]) >= 0 else -1
        finite = a.payload["finite"] & b.payload["finite"]
        return Packet({"ints": ints, "finite": finite}, a.shape, a.dtype,
                      {**a.meta, "max_abs": m, "width": int_width(m) if m >= 0 else a.meta["width"]})


@register("hintsgd")
class HintSGD(IntSGD):
    """IntSGD with the heuristic scale α = L / max‖g‖_∞ (over workers when ``gmax`` is given by
    the caller through ``state``, else this tensor's own): L = 2^8 with the automatic width, and
    L = ⌊(2^(b−1) − 1)/n⌋ with a fixed width of b bits, so that |α·g_i| ≤ L for every entry and
    the sum over n workers fits b bits without clamping: stochastic rounding stays unbiased."""

    traits = replace(IntSGD.traits, shared_state=False)
    reduce_ops = {"ints": "sum", "gmax": "same", "finite": "min", "scales": "same"}
    agreed_scales = True  # multi-tensor path: s_j = max_i ‖g_ij‖∞ / L, agreed by an all-reduce (max)

    def __init__(self, rounding: str = "stochastic", n_workers: int = 1, bits: int | None = None):
        super().__init__(alpha=None, rounding=rounding, bits=bits, n_workers=n_workers)

    def agree_before(self, tensor: torch.Tensor) -> torch.Tensor:
        """‖g‖∞ of this worker: the scale uses its maximum over workers."""
        t = tensor.detach().reshape(-1).to(torch.float32)
        return t.abs().max() if t.numel() else torch.zeros((), device=t.device)

    @property
    def adaptive(self) -> bool:
        return False

    # multi-tensor path (fixed width): s_j = gmax_j / L, so α_j = L / gmax_j as in encode, where gmax_j is
    # ‖g_j‖∞ of this worker (states None) or the maximum over the workers (states: the agreed
    # vector, which the bucket paths all-reduce before coding; "scales" is then public)
    def batchable(self, states=None) -> bool:
        return self.bits is not None

    def agreement(self, tensors) -> torch.Tensor:
        """‖g_j‖∞ of every tensor (float32, one vector): the workers agree on its maximum."""
        return foreach_norms(tensors, float("inf"))

    def tensor_scales(self, tensors, states=None):
        gmax = states if isinstance(states, torch.Tensor) else self.agreement(tensors)
        gmax = gmax.to(device=tensors[0].device, dtype=torch.float32)
        return torch.where(gmax > 0, gmax / self.levels, torch.ones_like(gmax))

    def _alpha_tables(self, tensors, states, device):
        s = self.tensor_scales(tensors, states).to(device)
        return 1.0 / s, s

    def graph_safe(self, flat, states=None) -> bool:
        return False

    def init_state(self, tensor):
        return None

    @property
    def levels(self) -> int:
        """L: the largest integer one worker sends."""
        return 256 if self.bits is None else (2 ** (self.bits - 1) - 1) // max(1, self.n_workers)

    def run_scales(self, rows, state=None):
        gmax = rows.float().abs().amax((1, 2), keepdim=True).to(rows.dtype)  # over each run's workers
        return torch.where(gmax > 0, gmax / self.levels, torch.ones_like(gmax))

    def _header_bits(self) -> int:
        return 32  # gmax travels with the integers

    def wire_bytes(self, numel: int) -> int:
        return super().wire_bytes(numel) + 4  # and gmax (in a bucket: the agreement's float)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        t = tensor.detach().reshape(-1).to(torch.float32)
        gmax = t.abs().max() if state is None else torch.as_tensor(state, dtype=torch.float32, device=t.device)
        gmax = gmax.reshape(1).to(torch.float32)
        alpha = torch.where(gmax > 0, self.levels / gmax, torch.ones_like(gmax))
        scaled = t * alpha
        if self.rounding == "nearest":  # torch.round: half to even, as round_integer
            ints, m = self._pack_ints(torch.round(scaled, out=scaled))
        else:
            ints, m = self._pack_ints(round_integer(scaled, self.rounding, generator=generator))
        payload = {"ints": ints, "gmax": gmax, "finite": all_finite(t).reshape(1).to(torch.uint8)}
        return Packet(payload, tuple(tensor.shape), tensor.dtype,
                      {"alpha": alpha, "max_abs": m, "width": int_width(m) if m >= 0 else self.bits})

    def add(self, a: Packet, b: Packet) -> Packet:
        if not torch.equal(a.payload["gmax"], b.payload["gmax"]):
            raise ValueError("HintSGD packets sum only under the same shared max‖g‖∞")
        ints = a.payload["ints"] + b.payload["ints"]
        fixed = min(a.meta["max_abs"], b.meta["max_abs"]) < 0  # a fixed width: no data-dependent maximum
        m = -1 if fixed else a.meta["max_abs"] + b.meta["max_abs"]
        return Packet({"ints": ints, "gmax": a.payload["gmax"], "finite": a.payload["finite"] & b.payload["finite"]},
                      a.shape, a.dtype, {**a.meta, "max_abs": m, "width": a.meta["width"] if fixed else int_width(m)})
