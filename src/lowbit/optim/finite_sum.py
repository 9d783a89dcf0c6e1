"""Base for optimizers of a finite sum F(w) = (1/n)·Σ_i f_i(w) that pick components themselves.

Closure API (like torch's L-BFGS, with one argument): ``closure(indices)`` must compute the mean
loss of the components ``indices`` (a LongTensor; ``None`` means all n components), call
``backward()`` on it and return it.  The optimizer zeroes gradients before each call, may call
the closure several times per step (at other points, e.g. a snapshot, by temporarily loading those
values into the parameters) and restores the parameters afterwards.

Sampling: ``"permutation"`` (a fresh random order each epoch, as the slowdown reproduction does) or
``"uniform"`` (with replacement), from the optimizer's own seeded generator, whose state is part of
``state_dict`` so a reloaded run continues identically.

``codec``: any compressor (or format name) applied to the vector the method would communicate —
the fresh stochastic gradient (SAG/SAGA) or the variance-reduced direction (SVRG/HALP); its shrinkage
statistics are recorded in ``self.log`` when ``record=True``.
"""

from __future__ import annotations

import torch

from ..compress import resolve_codec
from .sampling import Sampler
from .stats import StatsLog, pair_sums, stack_sums


class FiniteSumOptimizer(torch.optim.Optimizer):
    def __init__(self, params, defaults: dict, n: int, *, batch_size: int = 1, sampling: str = "permutation",
                 codec=None, rounding: str = "nearest", seed: int = 0, record: bool = False):
        super().__init__(params, defaults)
        self.sampler = Sampler(n, batch_size, seed, sampling)
        self.n = n
        self.batch_size = batch_size
        self.sampling = sampling
        self.codec = resolve_codec(codec, rounding) if codec is not None else None
        self.record = record
        self.log = StatsLog()
        self.steps = 0
        self._codec_state: list = []

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    # -- sampling -----------------------------------------------------------------------
    def next_indices(self) -> torch.Tensor:
        return self.sampler.next()

    # -- gradients at the current point or elsewhere --------------------------------------
    def grads(self, closure, indices) -> tuple[list[torch.Tensor], torch.Tensor]:
        for p in self.params:
            p.grad = None
        with torch.enable_grad():
            loss = closure(indices)
        return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params], loss

    def grads_at(self, point: list[torch.Tensor], closure, indices) -> list[torch.Tensor]:
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, v in zip(self.params, point):
                p.copy_(v)
        try:
            return self.grads(closure, indices)[0]
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, saved):
                    p.copy_(v)

    def communicate(self, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pass the vectors a worker would send through the codec; record shrinkage stats."""
        if self.codec is None:
            return vectors
        if not self._codec_state:
            self._codec_state = [self.codec.init_state(v) for v in vectors]
        out, bits = [], 0
        for v, st in zip(vectors, self._codec_state):
            dec, nbytes = self.codec.roundtrip(v, state=st)
            bits += 8 * nbytes
            out.append(dec.to(v.dtype))
        if self.record:
            # the sums now, the statistics when the log is read (all its new rows at once)
            self.log.append({"step": self.steps, "_sums": stack_sums(pair_sums(list(zip(vectors, out)))),
                             "_layers": False, "bits": bits})
        return out

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["lowbit"] = {"sampler": self.sampler.state_dict(), "steps": self.steps, "codec_state": self._codec_state, "log": self.log.state_dict(),
                        **self._extra_state()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        sd = dict(state_dict)
        extra = sd.pop("lowbit")
        super().load_state_dict(sd)
        if "sampler" in extra:
            self.sampler.load_state_dict(extra["sampler"])
        else:  # a checkpoint written before the sampler was its own object
            self.sampler.load_state_dict({"gen": extra["rng"], "perm": extra["perm"], "pos": extra["pos"]})
        self.steps = extra["steps"]
        self._codec_state = extra["codec_state"]
        self.log.load_state_dict(extra["log"])
        self._load_extra_state(extra)

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, extra: dict) -> None:
        return None
