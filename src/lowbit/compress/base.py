"""Compressor and Packet: how a gradient travels, in real bytes.

A :class:`Compressor` turns a tensor into a :class:`Packet` (``encode``) and back (``decode``).
``Packet.payload`` holds exactly the tensors that would be sent (packed codes, norms, scales,
indices); ``Packet.nbytes`` is their total size and ``Packet.to_bytes()`` produces those bytes.
``Packet.meta`` holds what the receiver already knows without it being sent (shapes, a scale that
every worker computes from public quantities, a mirrored shift).

Declared properties, checked by the tests:

* ``unbiased``: E[decode(encode(g))] = g for every g (over the codec's randomness).
* ``summable``: packets add without decoding: decode(a ⊕ b) = decode(a) + decode(b) exactly
  (IntSGD's integers, uncompressed floats), so an all-reduce can sum them in flight.

Non-finite input (NaN or ±inf anywhere in the tensor) is never an error and never costs a host
sync: it propagates, so the decoded tensor is non-finite (NaN or ±inf) — in every coordinate for
codecs that send a shared norm or scale, at least in the affected coordinates otherwise — and a
training loop detects it once per step.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..kernels import cpu
from . import many
from ..kernels.cpu import scratch  # noqa: F401  (re-exported: the codecs import it from here)

__all__ = ["Packet", "Compressor", "BucketCodec", "OptionError", "register", "make_compressor", "compressor_names"]


@dataclass
class Packet:
    """One encoded tensor: ``payload`` travels, ``meta`` is known to the receiver already."""

    payload: dict[str, torch.Tensor]
    shape: tuple
    dtype: torch.dtype = torch.float32
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Exact size of what is sent: every payload tensor's bytes."""
        return sum(t.numel() * t.element_size() for t in self.payload.values())

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_coordinate(self) -> float:
        return 8.0 * self.nbytes / max(1, self.numel)

    def to_bytes(self) -> bytes:
        """The bytes on the wire: payload tensors in order, each little-endian and contiguous."""
        parts = []
        for t in self.payload.values():
            t = t.detach().reshape(-1).contiguous().cpu()
            parts.append(t.view(torch.uint8).numpy().tobytes())
        return b"".join(parts)


@runtime_checkable
class BucketCodec(Protocol):
    """A codec that codes a DDP bucket of shaped tensors as one message without being elementwise
    (PowerSGD's factors): :class:`lowbit.distributed.bucket.BucketCoder` calls these instead of the
    multi-tensor path's ``flat_encode``/``flat_decode``."""

    def bucket_encode(self, tensors, *, states=None, generator=None) -> dict:
        """One worker's payload for ``tensors`` (shaped views of the bucket); field sizes depend on
        the shapes only."""
        ...

    def bucket_mean(self, payloads: list, shapes, out: torch.Tensor) -> torch.Tensor:
        """(1/n)·Σ_i of the n payloads' decoded tensors, written into the flat ``out``."""
        ...


class Compressor(ABC):
    """Base class: subclasses set ``name``, ``unbiased``, ``summable`` and implement
    ``encode``/``decode``; stateful codecs also implement ``init_state``."""

    name: str = "?"
    unbiased: bool = False
    summable: bool = False
    elementwise: bool = False  # each coordinate coded alone (given shared public scales)
    shared_state: bool = False  # the state is public (IntSGD's α): one object serves every worker
    worker_state: bool = False  # a per-tensor state of each worker's own (PowerSGD's warm start and error)
    sent_meta: tuple = ()  # integer meta entries a receiver cannot know (they travel in a header)
    factored: bool = False  # encodes layer inputs and errors (ISGQ), not a gradient tensor
    reduce_ops: dict = {}  # summable codecs: how each payload field combines in flight (sum/min/max/same)
    omega: float | None = None  # relative variance bound ω: E‖C(v) − v‖² ≤ ω‖v‖² (None: none declared)

    def init_state(self, tensor: torch.Tensor) -> Any:
        """Per-tensor state (error memory, warm start, shift); None for stateless codecs."""
        return None

    @abstractmethod
    def encode(self, tensor: torch.Tensor, *, state: Any = None, generator: torch.Generator | None = None) -> Packet:
        """The packet that represents ``tensor`` (drawing randomness from ``generator``)."""

    @abstractmethod
    def decode(self, packet: Packet) -> torch.Tensor:
        """The tensor a receiver reconstructs from ``packet``."""

    def __call__(self, tensor: torch.Tensor, *, state: Any = None, generator=None) -> torch.Tensor:
        """decode(encode(tensor)): the tensor the receiver sees.  Under torch.compile (no state, no
        generator) through the registered operators ``lowbit::encode`` / ``lowbit::decode``
        (:mod:`lowbit.compress.ops`)."""
        spec = getattr(self, "_spec", None)
        if state is None and generator is None and spec is not None and torch.compiler.is_compiling():
            buf = torch.ops.lowbit.encode(tensor, spec)
            return torch.ops.lowbit.decode(buf, spec, list(tensor.shape)).to(tensor.dtype)
        return self.decode(self.encode(tensor, state=state, generator=generator))

    def roundtrip(self, tensor: torch.Tensor, *, state: Any = None, generator=None) -> tuple[torch.Tensor, int]:
        """(decode(encode(tensor)), packet nbytes).  Codecs whose packet size is known without
        building the bytes override this to skip packing (a simulation shortcut that returns
        the same values and sizes, as the tests check)."""
        packet = self.encode(tensor, state=state, generator=generator)
        return self.decode(packet), packet.nbytes

    # The multi-tensor path (lowbit.compress.many): codecs of the form C(g) = s(g)·U(g/s(g)),
    # with a per-tensor scale s and an elementwise unit coder U, code many tensors in one call.
    def batchable(self, states=None) -> bool:
        """Whether :meth:`roundtrip_many` may code tensors with these states in one flat call."""
        return False

    def graph_safe(self, flat: torch.Tensor, states=None) -> bool:
        """Whether :meth:`flat_roundtrip` on ``flat`` may be captured in a CUDA graph and replayed:
        device work only, no host value that changes from step to step, no host sync."""
        return False

    def tensor_scales(self, tensors, states=None) -> torch.Tensor | None:
        """The per-tensor scales s_j (a float32 vector), or None where C is elementwise (s = 1)."""
        return None

    def flat_encode(self, flat: torch.Tensor, tensors, segments, *, states=None, generator=None) -> dict:
        """The messages of every tensor g_j of ``tensors`` (views of ``flat``, the segments of
        ``segments``) laid end to end as one payload: ``"scales"`` the per-tensor s_j (float32,
        absent where C is elementwise), then the fields of U(g/s) over the whole buffer.  Field
        sizes depend on the sizes only, never on the data (:meth:`batchable` codecs), so a
        receiver knows where each field starts.  Codecs with fused kernels override this to read
        the scales per segment inside the kernel."""
        scales = self.tensor_scales(tensors, states)
        if scales is None:
            return dict(self.unit_encode(flat, generator))
        # s = 0: an all-zero tensor, sent as zeros; NaN or inf scales make the tensor non-finite
        if flat.device.type == "cpu" and flat.dtype == torch.float32:  # tensor by tensor, a reused buffer, no spread
            u = scratch(flat.numel(), torch.float32, 2)
            for part, o, s in zip(flat.split(segments.sizes), u.split(segments.sizes), torch.where(scales == 0, 1.0, scales)):
                torch.div(part, s, out=o)
            return {"scales": scales, **self.unit_encode(u, generator)}
        s = segments.spread(scales)
        return {"scales": scales, **self.unit_encode(flat / torch.where(s == 0, 1.0, s), generator)}

    def flat_decode(self, payload: dict, segments, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """The flat buffer s_j · U⁻¹(codes) of a :meth:`flat_encode` payload (for summable codecs
        also of the in-flight sum of several), written into ``out`` when given."""
        scales = payload.get("scales")
        codes = {k: v for k, v in payload.items() if k != "scales"}
        if scales is None:
            return self.unit_decode(codes, segments.total, out=out)
        if out is not None and out.device.type == "cpu" and out.is_contiguous():
            # into out, then each tensor times its scale in place: the same products, no spread copy
            self.unit_decode(codes, segments.total, out=out)
            for part, s in zip(out.reshape(-1).split(segments.sizes), scales):
                part.mul_(s)
            return out
        r = self.unit_decode(codes, segments.total) * segments.spread(scales)
        return r if out is None else out.copy_(r)

    def flat_feedback(self, v: torch.Tensor, tensors, segments, *, states=None, generator=None,
                      out: torch.Tensor | None = None) -> tuple[dict, torch.Tensor | None]:
        """Error feedback's step on a flat buffer (Seide et al.; Karimireddy et al.): the payload of
        C(v), and v ← v − C(v) in place; also returns C(v) decoded (into ``out``), or None where a
        codec updates v without building it (a receiver then decodes the payload itself)."""
        payload = self.flat_encode(v, tensors, segments, states=states, generator=generator)
        decoded = self.flat_decode(payload, segments, out=out)
        v.sub_(decoded)
        return payload, decoded

    def flat_mean(self, payloads: list, segments, out: torch.Tensor) -> torch.Tensor | None:
        """(1/n)·Σ_i of the :meth:`flat_decode` of n payloads, summed in list order, written into
        ``out`` — where a codec has a faster way than decoding each and adding (the same
        values), else None."""
        return None

    def unit_encode(self, u: torch.Tensor, generator=None) -> dict:
        """The payload fields of U(u), u a flat vector of scaled values."""
        raise NotImplementedError(f"{self.name} has no elementwise unit coder")

    def unit_decode(self, payload: dict, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """U⁻¹: the float32 values of ``n`` unit codes (written into ``out`` when given)."""
        raise NotImplementedError(f"{self.name} has no elementwise unit coder")

    def unit_roundtrip(self, u: torch.Tensor, generator=None) -> torch.Tensor:
        """U(u): the elementwise part of the codec, on the flat vector of scaled values."""
        return self.unit_decode(self.unit_encode(u.reshape(-1), generator), u.numel()).reshape(u.shape).to(u.dtype)

    def flat_roundtrip(self, flat: torch.Tensor, tensors, segments, *, states=None, generator=None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
        """s_j · U(g_j/s_j) for every tensor g_j of ``tensors`` (views of ``flat``, in order: the
        segments of ``segments``), with s_j = :meth:`tensor_scales` (none: U(g)), written into
        ``out`` when given: the values of :meth:`flat_decode` of :meth:`flat_encode`, without
        building the codes where a codec can (the simulation's shortcut)."""
        scales = self.tensor_scales(tensors, states)
        if scales is None:
            r = self.unit_roundtrip(flat, generator)
        else:
            s = segments.spread(scales)
            r = self.unit_roundtrip(flat / torch.where(s == 0, 1.0, s), generator) * s
        return r if out is None else out.copy_(r)

    def wire_bytes(self, numel: int) -> int:
        """Bytes of the packet of a tensor of ``numel`` values (batchable codecs: data-independent)."""
        raise NotImplementedError(f"{self.name} packet sizes depend on the data")

    # Batched runs (lowbit.distributed.SimulatedCluster given R × n × d rows: R independent runs of n
    # workers each, e.g. seeds): C(v) = s_r·U(v/s_r) with a scale s_r that run r's workers share.
    def run_scales(self, rows: torch.Tensor, state: Any = None) -> torch.Tensor | None:
        """Each run's shared scale s_r (R × 1 × 1), or None where C is elementwise without one."""
        if self.elementwise and not self.shared_state:
            return None
        raise NotImplementedError(f"{self.name} cannot code batched runs")

    def run_bits(self, units: torch.Tensor) -> dict:
        """{"bits": the bits of each run's n packets} (R values) for unit-coded rows (R × n × d)."""
        R, n, d = units.shape
        return {"bits": torch.full((R,), 8.0 * n * self.wire_bytes(d), dtype=torch.float64)}

    def roundtrip_many(self, tensors, *, states=None, generator=None) -> tuple[list[torch.Tensor], int]:
        """([decode(encode(t)) for t in tensors], total bytes): each tensor its own message, coded
        in one flat call when :meth:`batchable` (see :mod:`lowbit.compress.many`)."""
        return many.roundtrip_many(self, tensors, states=states, generator=generator)

    def add(self, a: Packet, b: Packet) -> Packet:
        """a ⊕ b for summable codecs: decode(a ⊕ b) = decode(a) + decode(b)."""
        raise TypeError(f"{self.name} packets are not summable; decode them and add the tensors")

    # Agreements among workers.  A codec may need a quantity maximized over all workers: before
    # encoding (HintSGD's max‖g_i‖∞, passed to ``encode`` as ``state``) or after it (IntSGD's
    # container type, wide enough for the largest integer of any worker).  The simulated cluster
    # takes the maximum over its rows, a real run all-reduces it (one scalar).
    def agree_before(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Local statistic whose maximum over workers ``encode`` takes as ``state``; None if none."""
        return None

    def agree_after(self, packet: Packet) -> int | None:
        """Local statistic of a packet whose maximum over workers every packet must conform to."""
        return None

    def conform(self, packet: Packet, agreed: int) -> Packet:
        """``packet`` made consistent with the maximum ``agreed`` of :meth:`agree_after`."""
        return packet

    def spec(self) -> str | None:
        """A JSON string of the name and the options, what the registered operators take (set when
        a registered codec is made; None where an option is not plain data)."""
        return getattr(self, "_spec", None)

    def options(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{self.name}({opts})"


def _check_tensor(t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"compressors take floating-point tensors, got {getattr(t, 'dtype', type(t).__name__)}")


_CODECS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a Compressor available to :func:`get_compressor` by name."""

    def deco(cls):
        cls.name = name
        _CODECS[name] = cls
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if type(self) is cls:  # a plain attribute: torch.compile guards on its value
                try:
                    self._spec = json.dumps([name, self.options()], sort_keys=True)
                except TypeError:
                    self._spec = None

        cls.__init__ = __init__
        return cls

    return deco


def compressor_names() -> list[str]:
    return sorted(_CODECS)


class OptionError(TypeError):
    """An option that the named compressor does not take (the message lists the valid ones)."""


def make_compressor(name: str, **options) -> Compressor:
    """The registered compressor ``name`` built with ``options`` (see
    :func:`lowbit.compress.get_compressor`, which also wraps it); unknown names and options raise
    errors that list the valid ones."""
    key = str(name).strip().lower()
    if key not in _CODECS:
        close = difflib.get_close_matches(key, _CODECS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown compressor {name!r}.{hint} Valid names: {', '.join(compressor_names())}")
    cls = _CODECS[key]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for k in options:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise OptionError(f"unknown option {k!r} for compressor {key!r}.{hint} Valid options: {', '.join(valid) or 'none'}")
    return cls(**options)


def into(values: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``values``, or ``out`` holding them (nothing copied when they are ``out`` already)."""
    if out is None:
        return values
    if values.data_ptr() != out.data_ptr():
        out.copy_(values.reshape(out.shape))
    return out


def byte_table_decode(codes: torch.Tensor, table: torch.Tensor, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The n values of packed codes whose every byte holds k = table.shape[1] of them: byte b
    gives the k values table[b] (a 256 × k float32 table), by one gather per byte (a compiled
    loop for large buffers), written into ``out`` (flat, contiguous float32) when given."""
    codes = codes.reshape(-1)
    k = table.shape[1]
    o = out.reshape(-1) if out is not None and out.is_contiguous() else torch.empty(n, dtype=table.dtype)
    full = n // k
    if full:
        rows = o[: k * full].view(full, k)
        if not (cpu.wanted(o) and cpu.call(cpu.rows_into, table, codes[:full], rows) is not None):
            torch.index_select(table, 0, scratch(full, torch.int32).copy_(codes[:full]), out=rows)
    if n > k * full:
        o[k * full :] = table[int(codes[full])][: n - k * full]
    return o


_EACH_MIN = 1 << 14  # tensors of fewer values run the same formula eagerly (a compiled call costs more)


def each_tensor(fn, flat: torch.Tensor, *args):
    """``fn(flat, *args)`` compiled where ``flat`` is large, else eagerly (the same bits)."""
    if flat.numel() >= _EACH_MIN:
        r = cpu.call(fn, flat, *args)
        if r is not None:
            return r
    return fn(flat, *args)


def byte_rows_mean(payloads: list, field: str, table, segments, out: torch.Tensor) -> torch.Tensor:
    """(1/n)·Σ_i of n messages whose field ``field`` packs k codes to a byte and whose tensor j
    decodes by the 256 × k table ``table(payload_i, j)`` of each byte's values, summed in list
    order, into ``out``: tensor by tensor, its whole bytes in one loop
    (:func:`lowbit.kernels.cpu.rows_mean`), the values that share a byte with a neighbouring
    tensor by the same formula, eagerly."""
    n = torch.tensor(float(len(payloads)))
    pos = 0
    for j, size in enumerate(segments.sizes):
        tables = [table(p, j) for p in payloads]
        k = tables[0].shape[1]
        end = pos + size
        a = min(end, -(-pos // k) * k)  # the tensor's whole bytes: values [a, b)
        b = max(a, end // k * k)
        if b > a:
            args = ([p[field][a // k : b // k] for p in payloads], tables, n, out[a:b])
            if not (b - a >= _EACH_MIN and cpu.call(cpu.rows_mean, *args) is not None):
                cpu.rows_mean(*args)
        for lo, hi in ((pos, a), (b, end)):
            if hi > lo:
                q = torch.arange(lo, hi)
                acc = None
                for p, t in zip(payloads, tables):
                    v = t[p[field][q // k].to(torch.int64), q % k]
                    acc = v if acc is None else acc + v
                out[lo:hi] = acc / n
        pos = end
    return out


@functools.lru_cache(maxsize=None)
def byte_codes(w: int) -> torch.Tensor:
    """The 8/w codes of w bits in each of the 256 bytes (256 × 8/w, the first in the low bits)."""
    return (torch.arange(256)[:, None] >> (w * torch.arange(8 // w))) & ((1 << w) - 1)


def all_finite(t: torch.Tensor) -> torch.Tensor:
    """Whether every entry of ``t`` is finite, as a 0-d bool tensor (no host sync): one
    min/max pass, which propagates NaN, instead of a boolean tensor of t's size."""
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    lo, hi = torch.aminmax(t.reshape(-1))
    return torch.isfinite(lo) & torch.isfinite(hi)
