"""Rounding inside a model: activations forward, errors backward.

:class:`Quantizer` is the module QPyTorch offers under the same name, on lowbit's exact formats: its
forward pass rounds the activations x passing through it to one format, and its backward pass
rounds the error ∂L/∂x flowing back through it to another (what ISGQ sends, what low-precision
back-propagation computes with):

    forward:  y = Q_f(x)
    backward: ∂L/∂x = Q_b(m ⊙ ∂L/∂y),   m = 1 where x is finite and inside Q_f's range, else 0

(the straight-through estimator of :func:`lowbit.quantize`, then the error's own rounding).
Either side may be None (left in full precision).  :func:`lower` attaches quantizers to the
outputs of chosen layer types without changing the model's parameters or ``state_dict`` keys.

Each quantizer can record the shrinkage q = ‖Q(v)‖/‖v‖ of what it rounds, forward and backward,
as device tensors (no host synchronization): ``quantizer.stats`` (the last step's) and
``quantizer.means()`` (the mean since the last call, read once).
"""

from __future__ import annotations

import torch
from torch import nn

from .formats import get_format
from .quantize import ROUNDINGS, FusedRound, _fusable, _keep, quantize, straight_through

__all__ = ["Quantizer", "lower", "quantizers"]


class _Spec:
    """One side's rounding: a format (or None), its rounding mode, scaling and block."""

    def __init__(self, fmt, rounding: str, scaling, block: int):
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.fmt = None if fmt is None else get_format(fmt)
        self.rounding, self.scaling, self.block = rounding, scaling, block

    def __call__(self, v: torch.Tensor, generator=None) -> torch.Tensor:
        if self.fmt is None:
            return v
        return quantize(v, self.fmt, self.rounding, scaling=self.scaling, block=self.block, generator=generator,
                        grad="cut")

    def __repr__(self) -> str:
        if self.fmt is None:
            return "None"
        scaled = f", scaling={self.scaling!r}" if self.scaling else ""
        return f"{self.fmt.name}/{self.rounding}{scaled}"


def _shrinkage(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    b = before.detach().double().norm()
    return torch.where(b > 0, after.detach().double().norm() / b.clamp(min=1e-300), torch.ones_like(b))


class _RoundBothWays(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module):
        y = module.forward_spec(x.detach(), module.generator)
        if y.data_ptr() == x.data_ptr():  # left in full precision: a tensor of its own all the same
            y = y.clone()
        elif y._is_view():  # a reshaped temporary: no view of it leaves the function (in-place ops follow)
            y = y.detach()
        f = module.forward_spec
        keep = None if f.fmt is None else _keep(x, y, f.fmt, f.scaling)
        ctx.save_for_backward(x if keep is None else keep)  # not y: in-place ops may follow
        ctx.masked = keep is not None
        ctx.module = module
        if module.record:
            module._note("q_forward", _shrinkage(y, x))
        return y

    @staticmethod
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        module, f = ctx.module, ctx.module.forward_spec
        g = grad if f.fmt is None else straight_through(grad, saved, f.fmt, keep=saved if ctx.masked else None)
        out = module.backward_spec(g, module.generator)
        if module.record:
            module._note("q_backward", _shrinkage(out, g))
        return out, None


class Quantizer(nn.Module):
    """Round activations forward to ``forward`` and errors backward to ``backward`` (format names,
    objects or None), each with its own rounding (``rounding``, ``backward_rounding``: nearest,
    stochastic or zero) and optional scaling (``scaling``, ``backward_scaling``: None, "tensor" or
    "block" with ``block`` values per scale).  ``generator`` feeds stochastic rounding; ``record``
    keeps the last shrinkage factors in ``stats``."""

    def __init__(self, forward=None, backward=None, *, rounding: str = "nearest", backward_rounding: str | None = None,
                 scaling: str | None = None, backward_scaling: str | None = None, block: int = 32,
                 generator: torch.Generator | None = None, record: bool = False):
        super().__init__()
        self.forward_spec = _Spec(forward, rounding, scaling, block)
        self.backward_spec = _Spec(backward, backward_rounding or rounding, backward_scaling, block)
        self.generator = generator
        self.record = record
        self.stats: dict[str, torch.Tensor] = {}
        self._sums: dict[str, list] = {}

    def _note(self, key: str, value: torch.Tensor) -> None:
        self.stats[key] = value
        total = self._sums.setdefault(key, [torch.zeros((), dtype=torch.float64, device=value.device), 0])
        total[0] = total[0] + value
        total[1] += 1

    def means(self, reset: bool = True) -> dict[str, float]:
        """Mean of each recorded statistic since the last reset (one host read per statistic)."""
        out = {k: float(s / n) for k, (s, n) in self._sums.items() if n}
        if reset:
            self._sums = {}
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # two registered operators, the same rounding both ways
            if self.record or self.generator is not None:
                raise RuntimeError("a compiled Quantizer takes record=False and no generator (statistics and "
                                   "generators are eager-mode features)")
            f, b = self.forward_spec, self.backward_spec
            fusable = [s.fmt is None or _fusable(s.fmt, s.rounding, s.scaling) for s in (f, b)]
            if all(fusable) and x.dtype == torch.float32 and (f.fmt or b.fmt) is not None:  # torch operations both ways, fused by inductor
                return FusedRound.apply(x, f.fmt and f.fmt.name, b.fmt and b.fmt.name)
            if b.fmt is not None:
                x = torch.ops.lowbit.round_grad(x, b.fmt.name, b.rounding, b.scaling or "", b.block)
            if f.fmt is None:
                return x
            return quantize(x, f.fmt, f.rounding, scaling=f.scaling, block=f.block)
        if not (x.requires_grad and torch.is_grad_enabled()):
            y = self.forward_spec(x.detach(), self.generator)
            if self.record and self.training:
                self._note("q_forward", _shrinkage(y, x))
            return y
        return _RoundBothWays.apply(x, self)

    def extra_repr(self) -> str:
        return f"forward={self.forward_spec!r}, backward={self.backward_spec!r}"


def _round_output(module, inputs, output):
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"lowbit.nn.lower rounds tensor outputs; {type(module).__name__} returned {type(output).__name__}")
    return module.output_quantizer(output)


def lower(model: nn.Module, layer_types=(nn.Conv2d, nn.Linear), **quantizer_options) -> nn.Module:
    """Attach a :class:`Quantizer` (built from ``quantizer_options``) to the output of every
    submodule of ``model`` that is an instance of ``layer_types``, in place; returns ``model``.
    The quantizer is a child named ``output_quantizer`` (it has no parameters, so the
    ``state_dict`` keys stay the same) applied by a forward hook.  torch.compile does not guard on
    hooks, so ``lower`` drops compiled code (``torch._dynamo.reset()``): a model compiled before
    recompiles, and none runs without its quantizers."""
    layer_types = tuple(layer_types) if isinstance(layer_types, (list, tuple)) else (layer_types,)
    hits = [m for m in model.modules() if isinstance(m, layer_types) and not isinstance(m, Quantizer)]
    if not hits:
        raise ValueError(f"the model has no layer of the types {[t.__name__ for t in layer_types]}")
    for m in hits:
        if hasattr(m, "output_quantizer"):
            raise ValueError(f"{type(m).__name__} already has an output quantizer")
        m.add_module("output_quantizer", Quantizer(**quantizer_options))
        m.register_forward_hook(_round_output)
    # torch.compile does not guard on hooks: code compiled for another instance of these classes
    # would run without the quantizers, so compiled code is dropped (it recompiles on next call)
    torch._dynamo.reset()
    return model


def quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """The model's quantizers by name (for their ``stats``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Quantizer)}
