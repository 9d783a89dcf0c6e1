"""DDP communication hooks for every lowbit compressor.

    state, hook = hook_for("intsgd", model=model, seed=0, bits=8, n_workers=world)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(state, hook)

Codecs with a multi-tensor path (identity, casts without scaling, IntSGD with a fixed width,
natural compression, QSGD with fixed-width codes, TernGrad, signSGD, and error feedback around
any of them) code DDP's whole bucket in one call (:mod:`lowbit.dist.bucket`): each parameter
keeps its own scale (QSGD's norm, TernGrad's max, IntSGD's α are per layer, as in the papers),
no value is read on the host, and the hook returns the collective's future chained with the
decode, as torch's ``powerSGD_hook`` does, so communication overlaps the rest of backward.
Summable codecs are summed in flight in their integer or float type by one all-reduce; the
others are all-gathered as bytes and every rank decodes and averages the n messages.

Randomness and state are per bucket: the bucket holding parameters J (positions in
``model.parameters()``) draws on rank r from :func:`~lowbit.dist.simulated.worker_generator`
(param_seed(seed, min J), r), and keeps its error-feedback memory; IntSGD's α is per parameter.
``state.buckets()`` lists the buckets seen, and ``SimulatedDataParallel(…, buckets=…)`` with the
same seed gives the numbers of the DDP run.  The other codecs (top-k, rand-k, PowerSGD, Elias
codes, block-scaled casts, HintSGD, IntSGD with the automatic width) are exchanged parameter by
parameter through :class:`~lowbit.dist.DistributedCluster` (parameter j seeded with
param_seed(seed, j); ``SimulatedDataParallel`` without buckets), synchronously.

``state.bytes_sent`` counts the payload bytes this rank sent, ``state.wire_bytes`` everything on
the wire.  Error-feedback memory, IntSGD's α, PowerSGD's warm start and DIANA shifts live in the
state and are saved with ``state.state_dict()``.  IntSGD's adaptive α follows the iterates: call
``state.observe(lr, step_sq_norm)`` after each optimizer step.
"""

import torch
import torch.distributed as dist

from ..compress import get_compressor
from .bucket import BucketCoder, bucketable
from .cluster import DistributedCluster, exchange_all
from .simulated import worker_generator


def param_seed(seed: int, index: int) -> int:
    """The seed of parameter ``index``'s codec randomness in a run seeded with ``seed``."""
    return int(seed) * 65_537 + 131 * (int(index) + 1)


def bucket_seed(seed: int, key) -> int:
    """The seed of the randomness of the bucket laying out parameters ``key`` in that order."""
    s = param_seed(seed, key[0])
    for j in key[1:]:
        s = (s * 1_000_003 + 131 * (int(j) + 1)) % (2**61 - 1)
    return s


def carry_memory(old: dict, key: tuple, sizes, like: torch.Tensor | None) -> torch.Tensor | None:
    """Error-feedback memory of a new bucket layout ``key`` from the buckets it replaces
    (``old``: layout → (memory, sizes)); DDP lays its buckets out anew after the first step."""
    pieces = {}
    for k, (mem, szs) in old.items():
        if mem is None:
            continue
        for j, v in zip(k, torch.split(mem, list(szs))):
            pieces[j] = v
    if not any(j in pieces for j in key):
        return None
    dev = next(iter(pieces.values())).device
    return torch.cat([pieces[j] if j in pieces else torch.zeros(n, device=dev) for j, n in zip(key, sizes)])


class _Bucket:
    """One bucket's coding and state on this rank."""

    def __init__(self, coder: BucketCoder, generator: torch.Generator):
        self.coder = coder
        self.generator = generator
        self.memory: torch.Tensor | None = None  # error feedback, on the bucket's device
        self.bytes_sent = 0
        self.layout = None


class HookState:
    """Per-bucket (or per-parameter) codec state of one rank, and the bytes it sent.

    ``exact_below``: tensors of at most this many values, and 1-D tensors, also travel exactly
    (0: none)."""

    def __init__(self, codec, *, model: "torch.nn.Module | None" = None, seed: int = 0, group=None,
                 exact_below: int = 0):
        self.codec = codec
        self.seed = seed
        self.group = group
        self.exact_below = int(exact_below)
        self.index = {id(p): j for j, p in enumerate(model.parameters())} if model is not None else {}
        self.clusters: dict[int, DistributedCluster] = {}
        self.bucket_states: dict[tuple, _Bucket] = {}
        self._saved_buckets: dict = {}
        self._this_step: list = []
        self.layouts: list = []  # (first step, bucket layouts): DDP's buckets, each time they change
        self.param_states: dict[int, object] = {}  # public per-parameter codec state (IntSGD's α)
        self.steps = 0
        self.bucketed = bucketable(codec)

    def _key(self, p) -> int:
        if id(p) not in self.index:  # no model given: number parameters in order of first appearance
            self.index[id(p)] = len(self.index)
        return self.index[id(p)]

    def cluster(self, p) -> DistributedCluster:
        j = self._key(p)
        if j not in self.clusters:
            self.clusters[j] = DistributedCluster(self.codec, seed=param_seed(self.seed, j), group=self.group)
        return self.clusters[j]

    def bucket(self, params, device) -> tuple[tuple, _Bucket]:
        key = tuple(self._key(p) for p in params)
        if key not in self.bucket_states:
            coder = BucketCoder(self.codec, [p.numel() for p in params], device, exact_below=self.exact_below,
                                shapes=[tuple(p.shape) for p in params])
            gen = worker_generator(bucket_seed(self.seed, key), dist.get_rank(self.group), device)
            b = _Bucket(coder, gen)
            saved = self._saved_buckets.pop(key, None)  # from load_state_dict
            if saved is not None:
                b.memory, b.bytes_sent = saved["memory"], saved["bytes_sent"]
                b.generator.set_state(saved["generator"][1])
            else:
                b.memory = carry_memory({k: (o.memory, o.coder.sizes) for k, o in self.bucket_states.items()},
                                        key, coder.sizes, None)
            self.bucket_states[key] = b
        self._this_step.append(key)
        return key, self.bucket_states[key]

    def _end_step(self) -> None:
        layout = sorted(self._this_step)
        if not self.layouts or self.layouts[-1][1] != layout:
            self.layouts.append((self.steps, layout))
        self._this_step = []
        self.steps += 1

    def states(self, key: tuple, params) -> list | None:
        """The public per-parameter codec states of a bucket (IntSGD's α), or None."""
        if not self.codec.shared_state:
            return None
        for j, p in zip(key, params):
            if j not in self.param_states:
                self.param_states[j] = self.codec.init_state(p)
        return [self.param_states[j] for j in key]

    def buckets(self) -> list:
        """The bucket layouts seen: [(first step, [parameter positions of each bucket, in the
        bucket's order]), …], one entry each time DDP laid them out anew (it does once, after
        the first step); pass it to ``SimulatedDataParallel(buckets=…)``."""
        return [(s, [list(k) for k in lay]) for s, lay in self.layouts]

    @property
    def bytes_sent(self) -> int:
        return sum(c.bytes_sent for c in self.clusters.values()) + sum(b.bytes_sent for b in self.bucket_states.values())

    @property
    def wire_bytes(self) -> int:
        return sum(c.wire_bytes for c in self.clusters.values()) + sum(b.bytes_sent for b in self.bucket_states.values())

    def observe(self, lr: float, step_sq_norm: float) -> None:
        """Adaptive IntSGD: update α of every parameter from the step just taken (public)."""
        if getattr(self.codec, "adaptive", False):
            for st in self.param_states.values():
                self.codec.observe(st, lr, step_sq_norm)
            for c in self.clusters.values():
                if c.state is not None:
                    self.codec.observe(c.state, lr, step_sq_norm)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "steps": self.steps, "exact_below": self.exact_below, "layouts": list(self.layouts),
                "clusters": {j: c.state_dict() for j, c in self.clusters.items()},
                "param_states": dict(self.param_states),
                "buckets": {k: {"memory": b.memory, "generator": (str(b.generator.device), b.generator.get_state()),
                                "bytes_sent": b.bytes_sent} for k, b in self.bucket_states.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.seed, self.steps = sd["seed"], sd["steps"]
        self.exact_below = sd.get("exact_below", 0)
        self.layouts = list(sd.get("layouts", []))
        self.clusters = {}
        for j, s in sd["clusters"].items():
            c = DistributedCluster(self.codec, seed=param_seed(self.seed, j), group=self.group)
            c.load_state_dict(s)
            self.clusters[j] = c
        self.param_states = dict(sd.get("param_states", {}))
        self._saved_buckets = dict(sd.get("buckets", {}))  # restored when DDP shows each bucket again
        self.bucket_states = {}


def _per_parameter(state: HookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """Codecs without a multi-tensor path: one message per parameter, exchanged synchronously."""
    buf = bucket.buffer()
    grads = bucket.gradients()
    clusters = [state.cluster(p) for p in bucket.parameters()]
    results = exchange_all(clusters, [g.detach() for g in grads])  # in the parameters' shapes
    for g, (_, mean, _) in zip(grads, results):
        g.copy_(mean.reshape(g.shape).to(g.dtype))  # g is a view into the bucket's buffer
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


_all_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.10


def compressed_hook(state: HookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP communication hook (``register_comm_hook(state, compressed_hook)``)."""
    if not state.bucketed:
        if bucket.is_last():
            state.steps += 1
        return _per_parameter(state, bucket)
    buf = bucket.buffer()
    params = bucket.parameters()
    key, b = state.bucket(params, buf.device)
    if bucket.is_last():
        state._end_step()
    coder, group = b.coder, state.group
    n = dist.get_world_size(group)
    flat = buf if buf.dtype == torch.float32 else buf.float()
    exact = coder.exact_part(flat)
    payload, b.memory = coder.encode(flat, generator=b.generator, memory=b.memory, states=state.states(key, params))
    b.bytes_sent += coder.nbytes(payload)

    def finish(mean_exact: torch.Tensor) -> torch.Tensor:
        coder.join(flat, mean_exact)
        if flat is not buf:
            buf.copy_(flat)
        return buf

    if coder.summable:
        send = coder.to_sum_buffer(payload)
        side = dist.all_reduce(exact, group=group, async_op=True) if exact.numel() else None
        work = dist.all_reduce(send, group=group, async_op=True)

        def summed(_fut):
            if side is not None:
                side.wait()
            coder.decode_sum(coder.from_sum_buffer(send, payload), n, flat)
            return finish(exact.div_(n))

        return work.get_future().then(summed)
    if b.layout is None:
        b.layout = coder.byte_layout(payload)
    mine = coder.to_bytes(payload, exact, b.layout)
    got = torch.empty(n * mine.numel(), dtype=torch.uint8, device=mine.device)
    work = _all_gather_into(got, mine, group=group, async_op=True)

    def gathered(_fut):
        parts = [coder.from_bytes(piece, b.layout) for piece in got.view(n, -1)]
        coder.mean_decoded([p for p, _ in parts], flat)
        mean_exact = exact
        if exact.numel():
            mean_exact = parts[0][1].clone()
            for _, e in parts[1:]:
                mean_exact += e
            mean_exact /= n
        return finish(mean_exact)

    return work.get_future().then(gathered)


def hook_for(compressor, *, model: "torch.nn.Module | None" = None, seed: int = 0, group=None, exact_below: int = 0,
             **options):
    """(state, hook) for ``DistributedDataParallel.register_comm_hook`` with a compressor (a name
    with ``options``, or a Compressor).  Pass the unwrapped ``model`` so that parameters are
    numbered as in the simulation."""
    codec = get_compressor(compressor, **options)
    if codec.factored:
        raise ValueError(f"{codec.name} sends a layer's inputs and output errors, which a gradient hook never "
                         "sees; train it with lowbit's simulated workers (lowbit.compress.isgq.Factored)")
    if not dist.is_initialized():
        raise RuntimeError("hook_for needs torch.distributed initialized (lowbit.dist.init() under torchrun)")
    return HookState(codec, model=model, seed=seed, group=group, exact_below=exact_below), compressed_hook


__all__ = ["HookState", "compressed_hook", "hook_for", "param_seed"]
