"""DistributedCluster: one rank's side of the n-worker exchange, over torch.distributed.

The same interface as :class:`lowbit.distributed.SimulatedCluster` (``reduce``, ``mean``, ``state``,
``state_dict``), for one worker per process: rank r encodes its own vector with its own
generator :func:`~lowbit.distributed.simulated.worker_generator` (seed, r), so that a run over
real processes gives the numbers of the per-worker simulation with the same seed.

Two routes, chosen by the codec, both shared with the simulation:

* codecs with a multi-tensor path (:func:`~lowbit.distributed.bucket.one_tensor_route`: identity,
  IntSGD and HintSGD, natural compression, QSGD, TernGrad, signSGD, 1-bit SGD, PowerSGD, error
  feedback around them) take the DDP hook's bucket path: the vector is a bucket of one tensor,
  coded by :class:`~lowbit.distributed.bucket.BucketCoder`, summed in flight in its integer or
  float type by one all-reduce (summable codecs) or all-gathered as bytes with no header and
  decoded by every rank in worker order.  HintSGD's scales are agreed first by one all-reduce
  (max) of every tensor's ‖g‖∞; with the automatic width, the integers' container after coding,
  by one all-reduce (max) of every tensor's max|Int| (read on the host: it picks the dtype);
* the others (top-k, rand-k, Elias codes, block-scaled casts, which have no multi-tensor path) go
  as packets (:mod:`lowbit.distributed.wire`): an all-reduce of the agreements, then the packets
  summed in flight or all-gathered with a header of their sizes.

For ``Shifted`` (DIANA-style) codecs each rank mirrors every sender's shift h_i, as the
simulation's packets carry it (:meth:`lowbit.compress.Shifted.decode_mirrored`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..compress import Compressor, resolve_codec
from ..compress.base import Summable, WorkerAgreement
from ..compress.feedback import Shifted
from ..compress.intsgd import int_widths
from . import wire
from .bucket import BucketCoder, one_tensor_route
from .process_group import guard
from .seeding import worker_generator


class DistributedCluster:
    def __init__(self, compressor, *, seed: int = 0, group=None):
        if not dist.is_initialized():
            raise RuntimeError("DistributedCluster needs torch.distributed initialized (lowbit.distributed.init() under "
                               "torchrun, or dist.init_process_group)")
        self.group = group
        self.n = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.rows = slice(self.rank, self.rank + 1)
        self.codec: Compressor = resolve_codec(compressor)
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.state = None  # shared (public) codec state, e.g. IntSGD's α
        self.own_state = None  # this worker's codec state (error memory, warm start, shift)
        self.mirrors: list | None = None  # Shifted: every sender's shift
        self.memory: torch.Tensor | None = None  # bucket route: error-feedback memory
        self._coder: BucketCoder | None = None
        self.bytes_sent = 0  # payload bytes this rank sent (the codec's nbytes)
        self.wire_bytes = 0  # bytes on the wire, with headers and padding

    def _state(self, v):
        if self.codec.traits.shared_state:
            if self.state is None:
                self.state = self.codec.init_state(v)
            return self.state
        if self.own_state is None:
            self.own_state = self.codec.init_state(v)
        return self.own_state

    def exchange(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(this rank's decoded vector, the mean over ranks of the decoded vectors, info)."""
        return exchange_all([self], [v])[0]

    def coder(self, v: torch.Tensor) -> BucketCoder:
        """The bucket route's coder: a bucket of the one tensor ``v``."""
        self._coder = one_tensor_coder(self.codec, v, self._coder)
        return self._coder

    def states(self, v: torch.Tensor) -> list | None:
        """The bucket route's codec states, as the DDP hook passes them: public (IntSGD's α) or
        this worker's own (PowerSGD's), else None."""
        t = self.codec.traits
        return [self._state(v)] if t.shared_state or t.worker_state else None

    def _decode_from(self, i: int, packet):
        if not isinstance(self.codec, Shifted):
            return self.codec.decode(packet)
        if self.mirrors is None:
            self.mirrors = [None] * self.n
        out, self.mirrors[i] = self.codec.decode_mirrored(packet, self.mirrors[i])
        return out

    def mean(self, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        _, mean, info = self.exchange(v.reshape(-1))
        return mean.reshape(v.shape), info

    def reduce(self, rows: torch.Tensor, *, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The DIANA family's interface: ``rows`` holds this rank's one row (1 × d)."""
        if rows.shape[0] != 1:
            raise ValueError(f"a rank holds one worker's row, got {rows.shape[0]}")
        if exact:
            gathered = [torch.empty_like(rows[0]) for _ in range(self.n)]
            with guard("all-gather of exact vectors"):
                dist.all_gather(gathered, rows[0].contiguous(), group=self.group)
            self.bytes_sent += rows[0].numel() * 4
            return rows, torch.stack(gathered).mean(0), {"bits": 32 * rows[0].numel() * self.n}
        own, mean, info = self.exchange(rows[0])
        return own[None], mean, info

    def state_dict(self) -> dict:
        return {"state": self.state, "own_state": self.own_state, "mirrors": self.mirrors,
                "memory": self.memory.clone() if self.memory is not None else None,
                "generator": (str(self.generator.device), self.generator.get_state()) if self.generator else None,
                "bytes_sent": self.bytes_sent, "wire_bytes": self.wire_bytes}

    def load_state_dict(self, sd: dict) -> None:
        self.state, self.own_state, self.mirrors = sd["state"], sd["own_state"], sd["mirrors"]
        self.bytes_sent, self.wire_bytes = sd["bytes_sent"], sd["wire_bytes"]
        self.memory = sd["memory"].clone() if sd.get("memory") is not None else None
        if sd["generator"] is not None:
            dev, st = sd["generator"]
            self.generator = torch.Generator(device=dev)
            self.generator.set_state(st)


def exchange_all(clusters: list[DistributedCluster], vectors: list[torch.Tensor], *,
                 counts: bool = True) -> list[tuple]:
    """:meth:`DistributedCluster.exchange` of several tensors (one cluster each, one codec) with
    the communication batched: one all-reduce for each agreement, then one all-reduce per payload
    field and dtype (summable codecs) or one all-gather of headers and one of bytes (the others),
    whatever the number of tensors.  Returns one (own, mean, info) per tensor; ``counts=False``
    leaves out the IntSGD paper's width counts from ``info`` (and their all-reduce)."""
    if not clusters:
        return []
    c0 = clusters[0]
    codec, group, n = c0.codec, c0.group, c0.n
    dev = vectors[0].device
    for c, v in zip(clusters, vectors):
        if c.generator is None:
            c.generator = worker_generator(c.seed, c.rank, v.device)
    if one_tensor_route(codec):
        return _exchange_buckets(clusters, vectors, counts)
    agrees = isinstance(codec, WorkerAgreement)
    before = [codec.agree_before(v) for v in vectors] if agrees else [None]
    if before[0] is not None:
        agreed = wire.all_reduce_max_many(before, dev, group).to(torch.float32)
        states = list(agreed)
    else:
        states = [c._state(v) for c, v in zip(clusters, vectors)]
    packets = [codec.encode(v, state=st, generator=c.generator) for c, v, st in zip(clusters, vectors, states)]
    after = [codec.agree_after(p) for p in packets] if agrees else [None]
    if after[0] is not None:
        agreed = wire.all_reduce_max_many(after, dev, group)
        packets = [codec.conform(p, int(a)) for p, a in zip(packets, agreed.tolist())]
    out = []
    if isinstance(codec, Summable):
        totals, sent = wire.all_reduce_packets(packets, codec, group)
        ints = counts and "ints" in packets[0].payload
        widths = _width_bits(packets, totals, dev, group) if ints else [{}] * len(packets)
        for c, v, p, t, w in zip(clusters, vectors, packets, totals, widths):
            own = codec.decode(p).to(v.dtype)
            out.append((own, codec.decode(t).to(v.dtype) / n, {"bits": 8 * p.nbytes * n, **w}))
            c.bytes_sent += p.nbytes
        c0.wire_bytes += sent
    else:
        gathered, on_wire = wire.all_gather_packets_many(packets, codec, group)
        for j, (c, v, p) in enumerate(zip(clusters, vectors, packets)):
            per_rank = [g[j] for g in gathered]
            decoded = torch.stack([c._decode_from(i, q).to(v.dtype) for i, q in enumerate(per_rank)])
            out.append((decoded[c.rank], decoded.mean(0), {"bits": 8 * sum(q.nbytes for q in per_rank)}))
            c.bytes_sent += p.nbytes
        c0.wire_bytes += on_wire
    return out


def one_tensor_coder(codec: Compressor, v: torch.Tensor, cached: BucketCoder | None = None) -> BucketCoder:
    """A bucket of one tensor shaped as ``v`` (the bucket route of both clusters): ``cached``
    where it is one already."""
    if cached is not None and cached.shapes[0] == tuple(v.shape) and cached.device == v.device:
        return cached
    return BucketCoder(codec, [v.numel()], v.device, shapes=[tuple(v.shape)])


def _exchange_buckets(clusters: list[DistributedCluster], vectors: list[torch.Tensor], counts: bool) -> list[tuple]:
    """The bucket route of :func:`exchange_all`: each vector a bucket of one tensor, coded as the
    DDP hook codes a bucket; the buckets' sum buffers travel in one all-reduce, or their bytes in
    one all-gather.  The mean is decoded in float32 and returned in the vector's dtype."""
    c0 = clusters[0]
    group, n = c0.group, c0.n
    coders = [c.coder(v) for c, v in zip(clusters, vectors)]
    flats = [v.detach().reshape(-1).to(torch.float32, copy=True) for v in vectors]  # identity's payload is this buffer
    states = [c.states(v) for c, v in zip(clusters, vectors)]
    if coders[0].agreed:  # HintSGD: the maxima over ranks of every tensor's ‖g‖∞, in one all-reduce
        local = [cd.agreement(f) for cd, f in zip(coders, flats)]
        agreed = torch.cat(local)
        with guard(f"all-reduce of {c0.codec.name} scales"):
            dist.all_reduce(agreed, dist.ReduceOp.MAX, group=group)
        c0.wire_bytes += agreed.numel() * agreed.element_size()
        states = list(agreed.split([m.numel() for m in local]))
    payloads, owns = [], []
    for c, coder, flat, st in zip(clusters, coders, flats, states):
        payload, c.memory, own = coder.encode_own(flat, generator=c.generator, memory=c.memory, states=st)
        payloads.append(payload)
        owns.append(own)
    if coders[0].container:  # the automatic width: every tensor's container from the largest max|Int| over ranks
        peaks = torch.stack([cd.peak(p) for cd, p in zip(coders, payloads)])
        with guard(f"all-reduce of {c0.codec.name} widths"):
            dist.all_reduce(peaks, dist.ReduceOp.MAX, group=group)
        c0.wire_bytes += peaks.numel() * peaks.element_size()
        payloads = [cd.conform(p, a) for cd, p, a in zip(coders, payloads, peaks.tolist())]  # dtypes: a host read
    for c, coder, payload in zip(clusters, coders, payloads):
        c.bytes_sent += coder.nbytes(payload)
    means = [torch.empty_like(o) for o in owns]
    if coders[0].summable:
        sends = [cd.to_sum_buffer(p) for cd, p in zip(coders, payloads)]
        buf = torch.cat(sends) if len(sends) > 1 else sends[0]
        wide = buf.to(torch.int32) if buf.dtype == torch.int16 else buf  # neither gloo nor NCCL sums int16
        with guard(f"all-reduce of {c0.codec.name} buckets"):
            dist.all_reduce(wide, group=group)
        c0.wire_bytes += wide.numel() * wide.element_size()
        total = wide.to(buf.dtype) if wide is not buf else buf  # the fixed width's clamp makes the sum fit
        totals = [cd.from_sum_buffer(t, p) for cd, t, p in zip(coders, total.split([s.numel() for s in sends]), payloads)]
        for cd, t, m in zip(coders, totals, means):
            cd.decode_sum(t, n, m)
        widths = _bucket_width_bits(payloads, totals, owns[0].device, group) if counts else [{}] * len(clusters)
    else:
        layouts = [cd.byte_layout(p) for cd, p in zip(coders, payloads)]
        mine = [cd.to_bytes(p, owns[0][:0], lay) for cd, p, lay in zip(coders, payloads, layouts)]
        buf = torch.cat(mine) if len(mine) > 1 else mine[0]
        got = torch.empty(n * buf.numel(), dtype=torch.uint8, device=buf.device)
        with guard(f"all-gather of {c0.codec.name} buckets"):
            wire.all_gather_into(got, buf.contiguous(), group=group)
        c0.wire_bytes += buf.numel()
        per_rank = got.view(n, -1).split([m.numel() for m in mine], dim=1)
        for cd, lay, pieces, m in zip(coders, layouts, per_rank, means):
            cd.mean_decoded([cd.from_bytes(piece.contiguous(), lay)[0] for piece in pieces], m)
        widths = [{}] * len(clusters)
    return [(own.view(v.shape).to(v.dtype), m.view(v.shape).to(v.dtype), {"bits": 8 * cd.nbytes(p) * n, **w})
            for v, own, m, cd, p, w in zip(vectors, owns, means, coders, payloads, widths)]


def _bucket_width_bits(payloads, totals, device, group) -> list[dict]:
    """The IntSGD paper's count per tensor of the bucket route (one all-reduce), as the
    simulation reports it; empty where no integers travel."""
    if "ints" not in payloads[0]:
        return [{}] * len(payloads)
    peak = lambda t: t.abs().max().double() if t.numel() else torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
    local = int_widths(torch.stack([peak(p["ints"]) for p in payloads]))
    with guard("all-reduce of integer widths"):
        dist.all_reduce(local, group=group)
    summed = int_widths(torch.stack([peak(t["ints"]) for t in totals]))
    return [{"width_bits": float(w) * p["ints"].numel(), "sum_width_bits": float(ws) * p["ints"].numel()}
            for w, ws, p in zip(local.tolist(), summed.tolist(), payloads)]


def _width_bits(packets, totals, device, group) -> list[dict]:
    """The IntSGD paper's count per tensor, as the simulation reports it (one all-reduce)."""
    zero = torch.zeros((), device=device)
    local = int_widths(torch.stack([p.payload["ints"].abs().max().double() if p.numel else zero for p in packets]))
    with guard("all-reduce of integer widths"):
        dist.all_reduce(local, group=group)
    summed = int_widths(torch.stack([t.payload["ints"].abs().max().double() if p.numel else zero
                                     for p, t in zip(packets, totals)]))
    return [{"width_bits": float(w) * p.numel, "sum_width_bits": float(ws) * p.numel}
            for w, ws, p in zip(local.tolist(), summed.tolist(), packets)]
