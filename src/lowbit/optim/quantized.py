"""QuantizedGradients: round every gradient through a codec before any torch optimizer steps, and
measure what the rounding did.

The low-precision SGD slowdown paper models the quantized gradient as g̃ = q·g + ε with a
shrinkage factor q ≤ 1, so that SGD with g̃ behaves like SGD with the smaller stepsize μ·q.  This
wrapper records q (and the other statistics of :mod:`lowbit.optim.stats`) per step and parameter
group, and can compensate the shrinkage by scaling the learning rate:

* ``compensate="fixed"``: lr · 1/q_min with q_min given (the paper's remedy: a larger nominal step);
* ``compensate="adaptive"``: lr · 1/q̂, with q̂ an exponential moving average (``beta``, bias
  corrected) of the measured q, updated before each step (one host sync per step and group).
"""

from __future__ import annotations

import torch

from ..compress import Compressor, resolve_codec  # noqa: F401  (resolve_codec: re-exported)
from ..compress import many
from ..compress.many import flatten, foreach_norms, roundtrip_flat, segments, sizes_of, unflatten
from .stats import SUM_KEYS, StatsLog, from_sums, pair_sums, stack_sums, tensor_sums
from .wrapper import OptimizerWrapper


class QuantizedGradients(OptimizerWrapper):
    """Wrap ``optimizer`` so that each ``step`` first replaces every gradient by
    decode(encode(gradient)) of ``codec`` (a Compressor, a compressor name, or a format name).

    Non-finite gradients never reach the weights (``check_finite``).  Where the wrapped optimizer
    can skip a step on the device (torch's fused optimizers, ``fused=True``: they read a
    ``found_inf`` flag, as under GradScaler) the check costs no host synchronization: a step with
    a non-finite gradient, and every step after it, leaves the weights and the optimizer's state
    unchanged, and FloatingPointError is raised at the next read of the host — the statistics,
    :meth:`state_dict`, or :meth:`raise_if_nonfinite` — naming the step.  (The codec's own state,
    e.g. error-feedback memory, has then seen the non-finite gradient; :meth:`state_dict` raises
    before it could be saved.)  With any other optimizer the check reads one value on the host
    each step and raises before anything is changed.

    With ``multi_tensor`` (default: on CUDA, where kernel launches dominate) a group's gradients
    are coded in one flat call when the codec allows it (:mod:`lowbit.compress.many`: each gradient stays its own message, with its
    own scale and its own bytes), so a step costs a few kernel launches instead of several per
    parameter; codecs with per-tensor state or data-dependent sizes go parameter by parameter.
    The gradients then live in one flat buffer, as views of it (like DDP's
    ``gradient_as_bucket_view``): fresh gradients (after ``zero_grad()``) are copied into it by
    one multi-tensor copy, gradients accumulated into its views are used in place, and the
    decode kernel writes the decoded values back into it (through one copy when statistics are
    recorded).

    The statistics are kept as their raw per-tensor sums (one small copy per step) and derived
    when the log is read.

    ``cuda_graph=True`` (CUDA, multi-tensor path, codecs that are
    :meth:`~lowbit.compress.MultiTensor.graph_safe`): the codec's kernels are captured once in a
    CUDA graph and replayed each step, so the host launches one graph instead of a handful of
    kernels — what matters when the host, not the device, limits the step; the statistics' kernels
    and the finite check are captured with them.  Stochastic codecs
    draw fresh numbers at every replay (the generator's offset advances, as in eager mode).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, codec, *, compensate: str | None = None,
                 q_min: float | None = None, beta: float = 0.9, rounding: str = "nearest", record: bool = True,
                 check_finite: bool = True, generator: torch.Generator | None = None, multi_tensor: bool | None = None,
                 cuda_graph: bool = False):
        if compensate not in (None, "fixed", "adaptive"):
            raise ValueError(f"compensate must be None, 'fixed' or 'adaptive', got {compensate!r}")
        if compensate == "fixed" and not (q_min and 0 < q_min <= 1):
            raise ValueError("compensate='fixed' needs q_min in (0, 1]")
        self.optimizer = optimizer
        self.codec = resolve_codec(codec, rounding)
        self.compensate = compensate
        self.q_min = q_min
        self.beta = beta
        self.record = record
        self.check_finite = check_finite
        self.generator = generator
        self.multi_tensor = multi_tensor
        self.log = StatsLog(check=self.raise_if_nonfinite)
        self.steps = 0
        self._skipped = None  # device counter of steps skipped since a non-finite gradient
        self._ema = [0.0 for _ in optimizer.param_groups]
        self._codec_state: dict[int, object] = {}
        self._buffers: dict[int, tuple] = {}  # group → (flat gradient buffer, [(param, view)])
        self._reused: dict[int, bool] = {}  # group → whether this step found its buffer in place
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple, tuple] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's: gradients set to None (autograd then writes fresh ones, with no
        accumulation kernel) or zeroed in place (those in the flat buffer stay views of it)."""
        for p in (p for g in self.param_groups for p in g["params"]):
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:  # as torch's zero_grad: a view (of the flat buffer) cannot be detached in place
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    def _flat_grads(self, gi: int, ps: list):
        """(flat buffer, its views) holding the gradients of ``ps``, installed as their .grad: the
        group's buffer as it is when every p.grad is still its view (autograd accumulated into
        it); the gradients copied into it (one multi-tensor copy) when they are fresh tensors of
        the same layouts; else a new buffer."""
        buf = self._buffers.get(gi)
        if buf is not None and len(buf[1]) == len(ps) and all(p is q for p, (q, _) in zip(ps, buf[1])):
            views = [v for _, v in buf[1]]
            grads = [p.grad for p in ps]
            if all(g is v for g, v in zip(grads, views)):
                self._reused[gi] = True
                return buf
            if all(g.shape == v.shape and g.stride() == v.stride() and g.dtype == v.dtype for g, v in zip(grads, views)):
                torch._foreach_copy_(views, grads)
                for p, v in zip(ps, views):
                    p.grad = v
                self._reused[gi] = True
                return buf
        flat, layouts = flatten([p.grad for p in ps])
        views = unflatten(flat, layouts)
        for p, v in zip(ps, views):
            p.grad = v
        self._buffers[gi] = (flat, list(zip(ps, views)))
        self._reused[gi] = False
        return self._buffers[gi]

    def _replay(self, gi: int, flat: torch.Tensor, tensors: list, states: list, stats: bool):
        """Code the buffer in place by replaying a CUDA graph of the codec's kernels (and, with
        ``stats``, of the statistics' kernels), captured on first use after one eager run outside
        the capture that compiles the kernels and builds the segment index; returns the bytes sent
        and the graph's tensor of stacked sums (overwritten by the next replay) or None."""
        key = (gi, flat.data_ptr(), flat.numel(), stats)
        entry = self._graphs.get(key)
        if entry is None:
            for k in [k for k in self._graphs if k[0] == gi]:  # the group's buffer moved: drop its old graph
                del self._graphs[k]
            seg = segments(sizes_of(tensors), flat.device)  # kept with the graph: it reads seg.index

            def run():
                _, out, _, nbytes = roundtrip_flat(self.codec, tensors, states=states, generator=self.generator,
                                                   flat=flat, out=None if stats else flat)
                if not stats:
                    return nbytes, None
                sums = stack_sums(tensor_sums(flat, out, seg))
                flat.copy_(out)
                return nbytes, sums

            saved = flat.clone()
            here = torch.cuda.current_stream(flat.device)
            side = torch.cuda.Stream(flat.device)
            side.wait_stream(here)
            with torch.cuda.stream(side):
                run()
                _ = seg.index
                flat.copy_(saved)
            here.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.generator is not None:
                graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                nbytes, sums = run()
            entry = self._graphs[key] = (graph, nbytes, sums, seg)
        entry[0].replay()
        return entry[1], entry[2]

    def _device_skip(self) -> bool:
        """Whether the wrapped optimizer skips a step on the device when told (``found_inf``)."""
        return self.check_finite and bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))

    def raise_if_nonfinite(self) -> None:
        """Raise FloatingPointError if a step was skipped on the device for a non-finite gradient
        (one host read; see the class docstring)."""
        if self._skipped is None:
            return
        k = int(self._skipped)
        if k:
            raise FloatingPointError(f"non-finite gradient at step {self.steps - k}; that step and the {k - 1} "
                                     "after it were skipped (weights and optimizer state unchanged)")

    @property
    def stats(self) -> list[dict]:
        return self.log.rows()

    def dataframe(self):
        return self.log.dataframe()

    def q_hat(self, group: int = 0) -> float:
        return self._ema[group] / (1 - self.beta ** self.steps) if self.steps else 1.0

    def _check(self) -> None:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads and not bool(torch.isfinite(foreach_norms(grads, 2)).all()):  # NaN/inf make ‖g‖ non-finite
            bad = [i for i, g in enumerate(self.param_groups)
                   if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in g["params"])]
            raise FloatingPointError(f"non-finite gradient at step {self.steps} in parameter group(s) {bad}; "
                                     "nothing was updated")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        device_skip = self._device_skip()
        if self.check_finite and not device_skip:
            self._check()
        factors = []
        rows = []
        bad = []  # per group: a device flag, was its gradient non-finite (device_skip only)
        want_stats = self.record or self.compensate == "adaptive"
        for gi, group in enumerate(self.param_groups):
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                if id(p) not in self._codec_state:
                    self._codec_state[id(p)] = self.codec.init_state(p.grad)
            grads = [p.grad for p in ps]
            states = [self._codec_state[id(p)] for p in ps]
            if device_skip and ps and not want_stats:
                bad.append(~torch.isfinite(foreach_norms(grads, 2).sum()))
            devices = {g.device for g in grads}
            multi = self.multi_tensor if self.multi_tensor is not None else all(d.type == "cuda" for d in devices)
            sums = None
            if (ps and multi and many.batchable(self.codec, states) and len(devices) == 1
                    and all(g.dtype == torch.float32 for g in grads)):
                flat, views = self._flat_grads(gi, ps)
                tensors = [v for _, v in views]
                if (self.cuda_graph and self._reused[gi] and flat.is_cuda
                        and many.graph_safe(self.codec, flat, states)
                        and (self.generator is None or self.generator.device.type == "cuda")):
                    nbytes, sums = self._replay(gi, flat, tensors, states, want_stats)
                    sums = None if sums is None else sums.clone()  # the graph's next replay overwrites it
                else:
                    # without statistics the decoded values are written straight into the buffer;
                    # the gradients are views of it, so they now hold them
                    _, out, _, nbytes = roundtrip_flat(self.codec, tensors, states=states, generator=self.generator,
                                                       flat=flat, out=None if want_stats else flat)
                    if want_stats:  # queued before flat is overwritten; per tensor, then for the group
                        sums = stack_sums(tensor_sums(flat, out, segments(sizes_of(tensors), flat.device)))
                        flat.copy_(out)
                outs = None  # the gradients already are the views of the buffer
            else:  # parameter by parameter (also for non-float32 gradients)
                outs, pairs, nbytes = [], [], 0
                for g, st_ in zip(grads, states):
                    gt, nb = self.codec.roundtrip(g, state=st_, generator=self.generator)
                    outs.append(gt.to(g.dtype))
                    pairs.append((g, gt))
                    nbytes += nb
                if want_stats and ps:
                    sums = stack_sums(pair_sums(pairs))
            if device_skip and sums is not None:  # ‖g‖² of a non-finite gradient is not finite
                bad.append(~torch.isfinite(sums[0].sum()))
            bits = 8 * nbytes
            for p, gt in zip(ps, outs or ()):
                p.grad = gt
            factor = 1.0
            if self.compensate == "fixed":
                factor = 1.0 / self.q_min
            elif self.compensate == "adaptive" and ps:
                q = from_sums(dict(zip(SUM_KEYS, sums)))["q"]
                self._ema[gi] = self.beta * self._ema[gi] + (1 - self.beta) * float(q)
                qh = self._ema[gi] / (1 - self.beta ** (self.steps + 1))
                factor = 1.0 / max(qh, 1e-12)
            factors.append(factor)
            if self.record:
                row = {"step": self.steps, "group": gi, "bits": bits, "lr": group["lr"] * factor}
                if sums is not None:
                    row["_sums"] = sums
                rows.append(row)
        saved = [g["lr"] for g in self.param_groups]
        for g, f in zip(self.param_groups, factors):
            g["lr"] = g["lr"] * f
        told = device_skip and bool(bad)
        if told:
            # sticky: once a gradient was non-finite, every later step is skipped too, until raised
            now = torch.stack(bad).any()
            if self._skipped is None:
                self._skipped = torch.zeros((), dtype=torch.int64, device=now.device)
            self._skipped += ((self._skipped > 0) | now).to(torch.int64)
            self.optimizer.found_inf = (self._skipped > 0).to(torch.float32)
        try:
            self.optimizer.step()
        finally:
            for g, lr in zip(self.param_groups, saved):
                g["lr"] = lr
            if told:
                del self.optimizer.found_inf
        for r in rows:
            self.log.append(r)
        self.steps += 1
        return loss

    def state_dict(self) -> dict:
        self.raise_if_nonfinite()
        params = [p for g in self.param_groups for p in g["params"]]
        return {
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "ema": list(self._ema),
            "codec_state": [self._codec_state.get(id(p)) for p in params],
            "log": self.log.state_dict(),
            "generator": self.generator.get_state() if self.generator is not None else None,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.optimizer.load_state_dict(sd["optimizer"])
        self.steps = sd["steps"]
        self._skipped = None
        self._ema = list(sd["ema"])
        params = [p for g in self.param_groups for p in g["params"]]
        self._codec_state = {id(p): s for p, s in zip(params, sd["codec_state"]) if s is not None}
        self.log.load_state_dict(sd["log"])
        if self.generator is not None and sd.get("generator") is not None:
            self.generator.set_state(sd["generator"])
