"""Low-precision weights and optimizer state around any optimizer.

The classic low-precision SGD that the slowdown paper ("Why Does Stochastic Gradient Descent Slow
Down in Low-Precision Training?") and HALP start from keeps the model itself in few bits:

    g̃ = Q_g(∇f(w_k))                       (optional: the gradient's format)
    (w', s') = step(w_k, s_k, g̃)            (the wrapped optimizer, in full precision)
    w_{k+1} = Q_w(w'),  s_{k+1} = Q_s(s')    (weights and every state buffer rounded back)

With stochastic rounding of the weights (the default) E[w_{k+1}] = w' — an update smaller than
the grid step is kept on average instead of lost, which nearest rounding cannot do.  This is
QPyTorch's ``OptimLP`` on lowbit's exact formats.  It wraps any ``torch.optim.Optimizer`` or a
:class:`~lowbit.optim.QuantizedGradients` (then the gradient is also coded by its codec), and
records per step and group the statistics of :mod:`lowbit.optim.stats` for the weight update
u = w' − w_k against its rounded version Q_w(w') − w_k: q = ‖ũ‖/‖u‖ is the share of the step that
survives the weights' precision.
"""

from __future__ import annotations

import torch

from ..formats import get_format
from ..quantize import ROUNDINGS, quantize
from .stats import StatsLog, shrinkage
from .wrapper import OptimizerWrapper


class LowPrecision(OptimizerWrapper):
    """Keep ``optimizer``'s weights in ``weight``, its state buffers in ``state`` (one format for
    all, or ``{buffer name: format}``, e.g. ``{"momentum_buffer": "bf16", "exp_avg_sq": "fp16"}``;
    buffers not named stay as they are) and optionally round gradients to ``grad``, each format a
    name or object or None.  ``rounding`` applies to the weights (default stochastic),
    ``state_rounding`` to the buffers and gradients (default nearest)."""

    def __init__(self, optimizer, weight="bf16", *, state=None, grad=None, rounding: str = "stochastic",
                 state_rounding: str = "nearest", generator: torch.Generator | None = None, record: bool = True):
        for r in (rounding, state_rounding):
            if r not in ROUNDINGS:
                raise ValueError(f"rounding must be one of {ROUNDINGS}, got {r!r}")
        self.optimizer = optimizer
        self.weight = None if weight is None else get_format(weight)
        if isinstance(state, dict):
            self.state_formats = {k: get_format(v) for k, v in state.items() if v is not None}
            self._all_state = None
        else:
            self.state_formats, self._all_state = {}, None if state is None else get_format(state)
        self.grad = None if grad is None else get_format(grad)
        self.rounding, self.state_rounding = rounding, state_rounding
        self.generator = generator
        self.record = record
        self.log = StatsLog()
        self.steps = 0
        with torch.no_grad():  # the model starts on the weights' grid
            self._round_all_(self._params(), self.weight, self.rounding)

    def _params(self, group=None):
        groups = self.param_groups if group is None else [group]
        return [p for g in groups for p in g["params"]]

    def _round_all_(self, tensors: list, fmt, rounding: str) -> None:
        """Round many tensors in one call: their values side by side in one flat buffer (per dtype
        and device), rounded, copied back — a handful of kernels instead of several per tensor."""
        if fmt is None:
            return
        by_kind: dict[tuple, list] = {}
        for t in tensors:
            if t.is_floating_point() and t.numel():
                by_kind.setdefault((t.dtype, t.device), []).append(t)
        for group in by_kind.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            rounded = quantize(flat, fmt, rounding, generator=self.generator, grad="cut")
            torch._foreach_copy_(group, [v.view_as(t) for v, t in zip(rounded.split([t.numel() for t in group]), group)])

    def _state_format(self, name: str):
        return self.state_formats.get(name, self._all_state)

    @torch.no_grad()
    def step(self, closure=None):
        self._round_all_([p.grad for p in self._params() if p.grad is not None], self.grad, self.state_rounding)
        before = [[p.detach().clone() for p in g["params"]] for g in self.param_groups] if self.record else None
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        rows = []
        for gi, group in enumerate(self.param_groups):
            params = list(group["params"])
            full = [p.detach().clone() for p in params] if self.record else None
            self._round_all_(params, self.weight, self.rounding)
            if self.record and params:
                pairs = [(f - b, p.detach() - b) for f, p, b in zip(full, params, before[gi])]
                rows.append({"step": self.steps, "group": gi, **shrinkage(pairs)})
            buffers: dict[str, list] = {}
            for p in params:
                for name, buf in self.state.get(p, {}).items():
                    if isinstance(buf, torch.Tensor) and buf.dim() > 0:  # not step counters
                        buffers.setdefault(name, []).append(buf)
            for name, bufs in buffers.items():
                self._round_all_(bufs, self._state_format(name), self.state_rounding)
        for r in rows:
            self.log.append(r)
        self.steps += 1
        return loss

    def dataframe(self):
        """The weight-update statistics per step and group (pandas)."""
        return self.log.dataframe()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps, "log": self.log.state_dict(),
                "generator": self.generator.get_state() if self.generator is not None else None}

    def load_state_dict(self, sd: dict) -> None:
        self.optimizer.load_state_dict(sd["optimizer"])
        self.steps = sd["steps"]
        self.log.load_state_dict(sd["log"])
        if self.generator is not None and sd.get("generator") is not None:
            self.generator.set_state(sd["generator"])


__all__ = ["LowPrecision"]
