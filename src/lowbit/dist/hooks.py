"""DDP communication hooks for every lowbit compressor.

    state, hook = hook_for("intsgd", model=model, seed=0, bits=8, n_workers=world)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(state, hook)

The hook compresses each parameter's gradient in a bucket with the codec (per tensor, as
:class:`lowbit.optim.QuantizedGradients` and the papers do: QSGD's norm, TernGrad's scale and
IntSGD's integers are per layer), sends it — summable codecs (identity, intsgd, hintsgd) by
all-reduce in their own integer or float type, the others by all-gather of the packed bytes,
decoded on arrival; the bucket's tensors travel together in a few collectives — and returns the
bucket holding the mean over ranks of the decoded gradients.

Randomness and state are per parameter: parameter j (its position in ``model.parameters()``) has
its own :class:`~lowbit.dist.DistributedCluster`, seeded with :func:`param_seed` (seed, j), whose
rank-r generator is that of worker r of ``SimulatedCluster(n, codec, seed=param_seed(seed, j))``;
so a DDP run and the simulation with the same seeds give the same parameters.  Error-feedback
memory, IntSGD's α, PowerSGD's warm start and DIANA shifts live in that state and are saved with
``state.state_dict()``.  ``state.bytes_sent`` counts the payload bytes this rank sent (the sum
of the codec's ``Packet.nbytes``), ``state.wire_bytes`` everything on the wire.

IntSGD's adaptive α follows the iterates: call ``state.observe(lr, step_sq_norm)`` after each
optimizer step (a constant ``alpha`` or ``rule``-free use needs nothing).
"""

import torch
import torch.distributed as dist

from ..compress import get_compressor
from .cluster import DistributedCluster, exchange_all


def param_seed(seed: int, index: int) -> int:
    """The seed of parameter ``index``'s codec randomness in a run seeded with ``seed``."""
    return int(seed) * 65_537 + 131 * (int(index) + 1)


class HookState:
    """Per-parameter codec state of one rank, and the bytes it sent."""

    def __init__(self, codec, *, model: "torch.nn.Module | None" = None, seed: int = 0, group=None):
        self.codec = codec
        self.seed = seed
        self.group = group
        self.index = {id(p): j for j, p in enumerate(model.parameters())} if model is not None else {}
        self.clusters: dict[int, DistributedCluster] = {}
        self.steps = 0

    def _key(self, p) -> int:
        if id(p) not in self.index:  # no model given: number parameters in order of first appearance
            self.index[id(p)] = len(self.index)
        return self.index[id(p)]

    def cluster(self, p) -> DistributedCluster:
        j = self._key(p)
        if j not in self.clusters:
            self.clusters[j] = DistributedCluster(self.codec, seed=param_seed(self.seed, j), group=self.group)
        return self.clusters[j]

    @property
    def bytes_sent(self) -> int:
        return sum(c.bytes_sent for c in self.clusters.values())

    @property
    def wire_bytes(self) -> int:
        return sum(c.wire_bytes for c in self.clusters.values())

    def observe(self, lr: float, step_sq_norm: float) -> None:
        """Adaptive IntSGD: update α of every parameter from the step just taken (public)."""
        if getattr(self.codec, "adaptive", False):
            for c in self.clusters.values():
                if c.state is not None:
                    self.codec.observe(c.state, lr, step_sq_norm)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "steps": self.steps, "clusters": {j: c.state_dict() for j, c in self.clusters.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.seed, self.steps = sd["seed"], sd["steps"]
        self.clusters = {}
        for j, s in sd["clusters"].items():
            c = DistributedCluster(self.codec, seed=param_seed(self.seed, j), group=self.group)
            c.load_state_dict(s)
            self.clusters[j] = c


def compressed_hook(state: HookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP communication hook (``register_comm_hook(state, compressed_hook)``)."""
    buf = bucket.buffer()
    grads = bucket.gradients()
    clusters = [state.cluster(p) for p in bucket.parameters()]
    results = exchange_all(clusters, [g.detach() for g in grads])  # in the parameters' shapes
    for g, (_, mean, _) in zip(grads, results):
        g.copy_(mean.reshape(g.shape).to(g.dtype))  # g is a view into the bucket's buffer
    if bucket.is_last():
        state.steps += 1
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


def hook_for(compressor, *, model: "torch.nn.Module | None" = None, seed: int = 0, group=None, **options):
    """(state, hook) for ``DistributedDataParallel.register_comm_hook`` with a compressor (a name
    with ``options``, or a Compressor).  Pass the unwrapped ``model`` so that parameters are
    numbered as in the simulation."""
    codec = get_compressor(compressor, **options)
    if codec.factored:
        raise ValueError(f"{codec.name} sends a layer's inputs and output errors, which a gradient hook never "
                         "sees; train it with lowbit's simulated workers (lowbit.compress.isgq.Factored)")
    if not dist.is_initialized():
        raise RuntimeError("hook_for needs torch.distributed initialized (lowbit.dist.init() under torchrun)")
    return HookState(codec, model=model, seed=seed, group=group), compressed_hook


__all__ = ["HookState", "compressed_hook", "hook_for", "param_seed"]
