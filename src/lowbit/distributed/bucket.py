"""One bucket of gradients as one message: how a DDP bucket (a flat buffer of several tensors)
is coded, sent and decoded — by the DDP hook and, with the same code, by the simulation.

A bucket holds tensors g_1 … g_m laid end to end.  One call of the codec's multi-tensor path
(:meth:`MultiTensor.flat_encode`) codes them all, each with its own scale s_j (QSGD's ‖g_j‖₂,
TernGrad's max|g_j|, IntSGD's 1/α_j), so every tensor keeps the distribution of its own
per-tensor message; codes of consecutive tensors share bytes, so the coded part is at most
Σ_j wire_bytes(d_j).  Error feedback (Seide et al.; Karimireddy et al.)
keeps one flat memory per bucket: v = g + e, send C(v), e ← v − C(v).

Tensors with at most ``exact_below`` values, or with one dimension (biases, normalization
weights), also travel exactly as float32 when ``exact_below`` > 0, and the receivers use those
values: the few bytes of their codes are sent too (counted), which spares a pass over the bucket.

Two ways to combine the messages of n workers:

* summable codecs (identity, IntSGD with a fixed width): the payload's integer (or float) fields
  are summed in flight by one all-reduce; the finite flags travel in the same buffer as counts
  of non-finite workers.  Overflow cannot happen: a fixed width of b bits clamps each worker's
  integers to ⌊(2^(b−1) − 1)/n⌋, so the sum of n fits.  The clamp is the only bias — none while
  |α_j g| ≤ ⌊(2^(b−1) − 1)/n⌋, which IntSGD's adaptive α is designed to keep (IntSGD, Sec. 3).
  The mean is decode(Σ_i payload_i)/n.
* the others: every worker's bytes are all-gathered (sizes depend on the sizes only, so no
  header travels) and each receiver decodes the n messages and averages them in worker order;
  or, in the hook's ``mode="scatter"``, a compressed reduce-scatter and all-gather of chunks
  (:func:`lowbit.distributed.hooks._scatter`).

``SimulatedDataParallel(…, buckets=…)`` runs the same functions on n rows, so a DDP run and its
simulation with the same seed and buckets give the same numbers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..compress import Compressor
from ..compress import many
from ..compress.base import BucketCodec, Summable, scratch
from ..compress.feedback import ErrorFeedback
from ..compress.many import segments as segments_of
from .seeding import bucket_seed, param_seed  # noqa: F401  (re-exported)


def carry_memory(old: dict, key: tuple, sizes) -> torch.Tensor | None:
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


def ddp_layouts(sizes, ready: list[int], bucket_mb: float) -> list:
    """The buckets ``DistributedDataParallel(…, bucket_cap_mb=bucket_mb)`` lays out for parameters
    of ``sizes`` float32 values, as [(first step, [parameter positions of each bucket]), …], the
    form :meth:`lowbit.distributed.hooks.HookState.buckets` reports: DDP (torch ≥ 2.1, without
    ``find_unused_parameters``) puts every parameter in one bucket for the first step, then lays
    them out once by the order their gradients became ready in that step's backward (``ready``),
    closing a bucket when it reaches ``bucket_mb`` MiB — its own assignment function,
    ``torch.distributed._compute_bucket_assignment_by_size``, computes the second layout here."""
    if sorted(ready) != list(range(len(sizes))):
        raise ValueError(f"the ready order must name every parameter once, got {ready}")
    tensors = [torch.empty(int(sizes[j]), device="meta") for j in ready]
    rebuilt, _ = dist._compute_bucket_assignment_by_size(tensors, [int(bucket_mb * 1024 * 1024)],
                                                          [False] * len(ready), list(ready))
    return [(0, [list(range(len(sizes)))]), (1, [list(b) for b in rebuilt])]


def parameter_states(store: dict, key, params, codec: Compressor) -> list:
    """The codec states of parameters ``key`` (positions, with the tensors ``params``) from
    ``store``, made by ``codec.init_state`` where missing: IntSGD's public α, or one worker's own
    PowerSGD warm start and error."""
    for j, p in zip(key, params):
        if j not in store:
            store[j] = codec.init_state(p)
    return [store[j] for j in key]


def observe_states(codec: Compressor, states, lr: float, step_sq_norm) -> None:
    """Adaptive IntSGD: update α of every per-parameter state from the step just taken.
    ``states``: (parameter position, state or None) pairs; ``step_sq_norm``: ‖x_{k+1} − x_k‖² of
    the whole model, or a sequence of each parameter's own, indexed by position."""
    if not getattr(codec, "adaptive", False):
        return
    per = not isinstance(step_sq_norm, (int, float, torch.Tensor))
    for j, st in states:
        if st is not None:
            codec.observe(st, lr, step_sq_norm[j] if per else step_sq_norm)


def bucketable(codec: Compressor) -> bool:
    """Whether ``codec`` codes a whole bucket in one call: its multi-tensor path, or a
    :class:`~lowbit.compress.base.BucketCodec` (PowerSGD; not inside error feedback, which it has)."""
    if isinstance(codec, BucketCodec):
        return True
    feedback = isinstance(codec, ErrorFeedback)
    inner = codec.inner if feedback else codec
    if not many.batchable(inner) or isinstance(inner, ErrorFeedback):
        return False
    return not (feedback and inner.agreed_scales)  # an agreement on g + e: not offered


def one_tensor_route(codec: Compressor) -> bool:
    """Whether ``codec`` codes a bucket of one tensor (a parameter, a DIANA vector) through
    :class:`BucketCoder`: every :func:`bucketable` codec, and those whose integer container is
    agreed after coding (IntSGD and HintSGD with the automatic width: ``agreed_container``)."""
    return bucketable(codec) or (isinstance(codec, many.MultiTensor) and codec.agreed_container)


_MEAN_SLOT = 7  # scratch slot of the running sum's addend (the codecs' own decodes use the low slots)


def _align(n: int) -> int:
    return (n + 7) // 8 * 8


class BucketCoder:
    """The coding of one bucket: which tensors are coded and which travel exactly, and the
    functions that encode, combine and decode its messages."""

    def __init__(self, codec: Compressor, sizes, device, *, exact_below: int = 0, shapes=None):
        self.codec = codec
        self.inner = codec.inner if isinstance(codec, ErrorFeedback) else codec
        self.feedback = isinstance(codec, ErrorFeedback)
        self.sizes = [int(s) for s in sizes]
        self.device = torch.device(device)
        shapes = shapes or [(s,) for s in self.sizes]
        self.shapes = [tuple(sh) for sh in shapes]
        self.matrices = isinstance(codec, BucketCodec)  # coded by shape (PowerSGD), not value by value
        lossless = self.inner.traits.omega == 0.0  # identity: everything is exact already
        self.exact = [exact_below > 0 and not lossless and (s <= exact_below or len(sh) <= 1)
                      for s, sh in zip(self.sizes, shapes)]
        offs = [0]
        for s in self.sizes:
            offs.append(offs[-1] + s)
        self.offsets = offs
        self.exact_sizes = [s for s, e in zip(self.sizes, self.exact) if e]
        self.segments = segments_of(self.sizes, self.device) if self.sizes else None
        self.summable = isinstance(self.inner, Summable) and not self.feedback
        self.agreed = not self.matrices and getattr(self.inner, "agreed_scales", False)  # HintSGD's max‖g‖∞
        self.container = not self.matrices and getattr(self.inner, "agreed_container", False)  # automatic width
        self._index = None
        self._decoded = None  # error feedback: the sender's decode of its own message, reused

    # -- the exact part of a flat bucket ------------------------------------------------------------
    @property
    def index(self) -> torch.Tensor:
        """Positions in the bucket of the values that travel exactly."""
        if self._index is None:
            idx = [torch.arange(self.offsets[j], self.offsets[j + 1]) for j, e in enumerate(self.exact) if e]
            self._index = torch.cat(idx).to(self.device) if idx else torch.zeros(0, dtype=torch.long, device=self.device)
        return self._index

    def exact_part(self, flat: torch.Tensor) -> torch.Tensor:
        """The values of the small tensors (a few thousand at most): a copy."""
        return flat.index_select(0, self.index) if self.exact_sizes else flat[:0]

    def mean_exact(self, exacts: list) -> torch.Tensor:
        """(1/n)·Σ_i of the workers' exact values, summed in worker order."""
        total = exacts[0].clone()
        for e in exacts[1:]:
            total += e
        return total.div_(len(exacts))

    def join(self, out: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        """Write the exact values into their places in the decoded bucket ``out``."""
        if self.exact_sizes:
            out.index_copy_(0, self.index, exact)
        return out

    def tensors(self, coded: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(coded, self.sizes))

    def shaped(self, coded: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(sh) for t, sh in zip(torch.split(coded, self.sizes), self.shapes)]

    # -- one worker's message ---------------------------------------------------------------------
    def encode(self, coded: torch.Tensor, *, generator=None, memory=None, states=None) -> tuple[dict, torch.Tensor | None]:
        """(payload, new error-feedback memory or None) of the coded part; ``memory`` is updated in
        place (and returned)."""
        payload, memory, _ = self.encode_decoded(coded, generator=generator, memory=memory, states=states)
        return payload, memory

    def encode_decoded(self, coded: torch.Tensor, *, generator=None, memory=None, states=None):
        """(payload, new error-feedback memory or None, the payload decoded or None): with error
        feedback the sender decodes its own message anyway (e ← v − C(v)), and a receiver that is
        also the sender can use that decode instead of a second one (``mean_decoded(known=…)``)."""
        codec, seg = self.inner, self.segments
        if self.matrices:
            return codec.bucket_encode(self.shaped(coded), states=states, generator=generator), None, None
        if self.feedback:
            # v = g + e in e's own buffer (the same sums as a new tensor), then e ← v − C(v) in place:
            # on the CPU two fresh bucket-sized tensors per step cost more than the passes
            v = coded.clone() if memory is None else memory.add_(coded)
            if self._decoded is None or self._decoded.device != v.device:
                self._decoded = torch.empty_like(v)
            payload, decoded = codec.flat_feedback(v, self.tensors(v), seg, states=states, generator=generator,
                                                   out=self._decoded)
            return payload, v, decoded
        return codec.flat_encode(coded, self.tensors(coded), seg, states=states, generator=generator), None, None

    def encode_own(self, coded: torch.Tensor, *, generator=None, memory=None, states=None):
        """(payload, new error-feedback memory or None, the sender's own decoded message, a new
        tensor): what a worker of the DIANA family keeps (its shift follows its own Δ̂_i).  The
        decode is taken before anything is sent: an all-reduce sums some payloads in place."""
        payload, memory, own = self.encode_decoded(coded, generator=generator, memory=memory, states=states)
        own = own.clone() if own is not None else self.mean_decoded([payload], torch.empty_like(coded))
        return payload, memory, own

    def agreement(self, coded: torch.Tensor) -> torch.Tensor:
        """This worker's vector of the scales' agreement (``agreed`` codecs: HintSGD's ‖g_j‖∞ of
        every tensor); the maximum over the workers goes to :meth:`encode` as ``states``."""
        return self.inner.agreement(self.tensors(coded))

    def agree(self, coded: torch.Tensor, group=None) -> torch.Tensor:
        """:meth:`agreement` all-reduced (max) over ``group``: one float per tensor, waited for."""
        m = self.agreement(coded)
        dist.all_reduce(m, dist.ReduceOp.MAX, group=group)
        return m

    def peak(self, payload: dict) -> torch.Tensor:
        """(``container`` codecs) this worker's max|Int|: the workers agree on their maximum."""
        return self.inner.payload_peak(payload)

    def conform(self, payload: dict, agreed) -> dict:
        """(``container`` codecs) the payload in the container of the agreed maximum ``agreed``."""
        return self.inner.conform_payload(payload, agreed)

    def public(self, key: str) -> bool:
        """Whether payload field ``key`` is known to every receiver (not sent)."""
        return self.summable and self.inner.reduce_ops.get(key) == "same"

    def nbytes(self, payload: dict) -> int:
        """Bytes a worker sends for this bucket: the payload's sent fields and the exact values."""
        sent = sum(t.numel() * t.element_size() for k, t in payload.items() if not self.public(k))
        agreement = 4 * len(self.sizes) if self.agreed else 0  # its all-reduce: one float32 per tensor
        return sent + 4 * sum(self.exact_sizes) + agreement

    # -- summable codecs: one buffer summed in flight ------------------------------------------------
    def sum_layout(self, payload: dict):
        """(the summed fields, the flag fields, the buffer's dtype): fields with op "sum", and the
        0/1 finite flags with op "min" carried as counts of non-finite workers."""
        ops = self.inner.reduce_ops
        summed = [k for k in payload if ops.get(k) == "sum"]
        flags = [k for k in payload if ops.get(k) == "min"]
        bad = [k for k in payload if ops.get(k) not in ("sum", "min", "same")]
        if bad or len({payload[k].dtype for k in summed}) > 1:
            raise TypeError(f"{self.inner.name}: fields {bad or summed} do not sum in one buffer")
        return summed, flags, payload[summed[0]].dtype

    def to_sum_buffer(self, payload: dict) -> torch.Tensor:
        summed, flags, dt = self.sum_layout(payload)
        parts = [payload[k].reshape(-1) for k in summed] + [(1 - payload[k].reshape(-1).to(dt)) for k in flags]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def from_sum_buffer(self, buf: torch.Tensor, like: dict) -> dict:
        summed, flags, _ = self.sum_layout(like)
        out, pos = {}, 0
        for k in summed:
            n = like[k].numel()
            out[k] = buf[pos : pos + n].view(like[k].shape)
            pos += n
        for k in flags:
            n = like[k].numel()
            out[k] = (buf[pos : pos + n] == 0).to(like[k].dtype).view(like[k].shape)
            pos += n
        for k, t in like.items():
            if self.public(k):
                out[k] = t
        return {k: out[k] for k in like}

    def sum_payloads(self, payloads: list[dict]) -> dict:
        """Σ_i payload_i as the all-reduce computes it (the simulation's side)."""
        total = self.to_sum_buffer(payloads[0]).clone()
        for p in payloads[1:]:
            total += self.to_sum_buffer(p)
        return self.from_sum_buffer(total, payloads[0])

    def decode_sum(self, total: dict, n: int, out: torch.Tensor) -> torch.Tensor:
        """The mean decode(Σ_i payload_i)/n, written into ``out`` (the coded part)."""
        self.inner.flat_decode(total, self.segments, out=out)
        return out.div_(n) if n > 1 else out

    # -- the others: bytes all-gathered ---------------------------------------------------------------
    def byte_layout(self, payload: dict) -> list[tuple[str, int, int, torch.dtype, tuple]]:
        """(field, offset, nbytes, dtype, shape) of each sent field, then "exact"; 8-byte aligned."""
        rows, pos = [], 0
        for k, t in payload.items():
            nb = t.numel() * t.element_size()
            rows.append((k, pos, nb, t.dtype, tuple(t.shape)))
            pos = _align(pos + nb)
        if self.exact_sizes:
            nb = 4 * sum(self.exact_sizes)
            rows.append(("exact", pos, nb, torch.float32, (sum(self.exact_sizes),)))
        return rows

    def to_bytes(self, payload: dict, exact: torch.Tensor, layout) -> torch.Tensor:
        total = _align(layout[-1][1] + layout[-1][2]) if layout else 0
        if len(layout) == 1 and layout[0][2] == total:  # one field filling the message: itself
            k = layout[0][0]
            return (exact if k == "exact" else payload[k]).reshape(-1).view(torch.uint8)
        buf = torch.zeros(total, dtype=torch.uint8, device=self.device)
        for k, off, nb, dt, _ in layout:
            t = exact if k == "exact" else payload[k]
            buf[off : off + nb] = t.reshape(-1).view(torch.uint8)
        return buf

    @staticmethod
    def from_bytes(buf: torch.Tensor, layout) -> tuple[dict, torch.Tensor | None]:
        payload, exact = {}, None
        for k, off, nb, dt, shape in layout:
            t = buf[off : off + nb].view(dt).view(shape)
            if k == "exact":
                exact = t
            else:
                payload[k] = t
        return payload, exact

    def mean_decoded(self, payloads: list[dict], out: torch.Tensor, known: dict | None = None) -> torch.Tensor:
        """(1/n)·Σ_i decode(payload_i) in worker order, written into ``out`` (the coded part);
        ``known``: {i: decode(payload_i)} already at hand (the same values, not decoded again)."""
        seg, known = self.segments, known or {}
        if self.matrices:
            return self.inner.bucket_mean(payloads, self.shapes, out)
        if not known and out.device.type == "cpu" and self.inner.flat_mean(payloads, seg, out) is not None:
            return out

        def decoded(i, into):
            if i in known:
                return known[i] if into is None else into.copy_(known[i])
            return self.inner.flat_decode(payloads[i], seg, out=into)

        decoded(0, out)
        if len(payloads) > 1:
            # a reused buffer on the CPU: a fresh one costs its page faults on every step
            tmp = scratch(out.numel(), torch.float32, _MEAN_SLOT) if out.device.type == "cpu" else torch.empty_like(out)
            for i in range(1, len(payloads)):
                out += decoded(i, None) if i in known else decoded(i, tmp)
        return out.div_(len(payloads)) if len(payloads) > 1 else out


__all__ = ["BucketCoder", "bucketable", "one_tensor_route", "bucket_seed", "carry_memory", "ddp_layouts", "observe_states", "param_seed",
           "parameter_states"]
