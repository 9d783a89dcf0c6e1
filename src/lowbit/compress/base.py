"""Compressor and Packet: how a gradient travels, in real bytes.

A :class:`Compressor` turns a tensor into a :class:`Packet` (``encode``) and back (``decode``).
``Packet.payload`` holds exactly the tensors that would be sent (packed codes, norms, scales,
indices); ``Packet.nbytes`` is their total size and ``Packet.to_bytes()`` produces those bytes.
``Packet.meta`` holds what the receiver already knows without it being sent (shapes, a scale that
every worker computes from public quantities, a mirrored shift).

Declared properties (one :class:`Traits` record, ``codec.traits``), checked by the tests; among them:

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
from ..kernels.cpu import each_tensor, scratch  # noqa: F401  (re-exported: the codecs import them from here)

__all__ = ["Packet", "Traits", "Compressor", "Summable", "WorkerAgreement", "BucketCodec", "OptionError", "register",
           "make_compressor", "compressor_names"]


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


@dataclass(frozen=True)
class Traits:
    """What a codec declares about itself, in one record (the tests check each claim)."""

    unbiased: bool = False  # E[decode(encode(g))] = g for every g
    summable: bool = False  # packets add without decoding (implements :class:`Summable`)
    elementwise: bool = False  # each coordinate coded alone (given shared public scales)
    shared_state: bool = False  # the state is public (IntSGD's α): one object serves every worker
    worker_state: bool = False  # a per-tensor state of each worker's own (PowerSGD's warm start and error)
    factored: bool = False  # encodes layer inputs and errors (ISGQ), not a gradient tensor
    omega: float | None = None  # relative variance bound ω: E‖C(v) − v‖² ≤ ω‖v‖² (None: none declared)
    bits: float | None = None  # bits per coordinate on the wire, a tensor's few scalars aside (None: data-dependent)
    sent_meta: tuple = ()  # integer meta entries a receiver cannot know (they travel in a header)


class Compressor(ABC):
    """A codec: ``encode``/``decode``, ``init_state`` for stateful codecs, and its declared
    :class:`Traits` (``traits``; a codec whose claims depend on its options replaces the record in
    ``__init__``).  What only some codecs can do is an opt-in protocol:
    :class:`lowbit.compress.many.MultiTensor` (many tensors in one call), :class:`Summable`
    (packets add in flight), :class:`WorkerAgreement` (a value agreed over workers),
    :class:`BucketCodec` (a DDP bucket as one message)."""

    name: str = "?"
    traits: Traits = Traits()

    @property
    def unbiased(self) -> bool:
        return self.traits.unbiased

    @property
    def summable(self) -> bool:
        return self.traits.summable

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


class Summable(ABC):
    """Protocol of codecs whose packets add without decoding (``traits.summable``): IntSGD's
    integers, identity's floats, so an all-reduce sums them in flight."""

    reduce_ops: dict = {}  # how each payload field combines in flight: sum, min, max, or same

    @abstractmethod
    def add(self, a: Packet, b: Packet) -> Packet:
        """a ⊕ b with decode(a ⊕ b) = decode(a) + decode(b)."""


class WorkerAgreement(ABC):
    """Protocol of codecs that need a quantity maximized over all workers: before encoding
    (HintSGD's max‖g_i‖∞, passed to ``encode`` as ``state``) or after it (IntSGD's container type,
    wide enough for the largest integer of any worker).  The simulated cluster takes the maximum
    over its rows, a real run all-reduces it (one scalar)."""

    def agree_before(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Local statistic whose maximum over workers ``encode`` takes as ``state``; None if none."""
        return None

    def agree_after(self, packet: Packet) -> int | None:
        """Local statistic of a packet whose maximum over workers every packet must conform to."""
        return None

    def conform(self, packet: Packet, agreed: int) -> Packet:
        """``packet`` made consistent with the maximum ``agreed`` of :meth:`agree_after`."""
        return packet


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
        t, r = table, rows
        if k == 2 and (pairs := cpu.as_pairs(o[: k * full])) is not None:  # one 8-byte row per byte
            t, r = table.contiguous().view(torch.int64).reshape(-1), pairs
        if not (cpu.wanted(o) and cpu.call(cpu.rows_into, t, codes[:full], r) is not None):
            torch.index_select(table, 0, scratch(full, torch.int32).copy_(codes[:full]), out=rows)
    if n > k * full:
        o[k * full :] = table[int(codes[full])][: n - k * full]
    return o


def byte_rows_mean(payloads: list, field: str, table, segments, out: torch.Tensor, loop=None) -> torch.Tensor:
    """(1/n)·Σ_i of n messages whose field ``field`` packs k codes to a byte, summed in list order,
    into ``out`` (CPU); ``table(payload_i)``: the (tensors, 256, k) float32 values of each byte
    in each tensor.  Byte b takes the table of the tensor of its first value.  Every whole byte
    in one loop (:func:`lowbit.kernels.cpu.rows_mean`, which reads each byte's tensor from
    :meth:`~lowbit.compress.many.Segments.byte_index`), or, where a codec computes the same
    values without the tables, ``loop(codes, index, j, n, out)`` over the runs of
    :meth:`~lowbit.compress.many.Segments.byte_runs` (index None: all of tensor j; None from
    it: the tables' loop).  Then the values of a tensor that share a byte with the tensor before
    it, and the last partial byte, by the same formula eagerly.  Few loops, not one per tensor:
    a call costs about 40 µs, 2.5 ms over ResNet-18's 62 tensors."""
    n = torch.tensor(float(len(payloads)))
    tables = [table(p) for p in payloads]
    k = tables[0].shape[2]
    full = segments.total // k
    done = False
    if loop is not None and full * k >= cpu.LOOP_MIN:
        done = all(loop([p[field][b0:b1] for p in payloads], index, j, n, out[b0 * k : b1 * k]) is not None
                   for b0, b1, j, index in segments.byte_runs(k))
    if full and not done:
        codes = [p[field][:full] for p in payloads]
        index = segments.byte_index(k) if len(segments.sizes) > 1 else None
        whole = out[: full * k]
        pairs = cpu.as_pairs(whole) if k == 2 else None  # two values per byte: 8-byte rows
        if pairs is not None:
            args = (codes, [t.reshape(-1, 2).contiguous().view(torch.int64).reshape(-1) for t in tables], index, n, pairs)
        else:
            args = (codes, [t.reshape(-1, k) for t in tables], index, n, whole.view(-1, k))
        if not (full * k >= cpu.LOOP_MIN and cpu.call(cpu.rows_mean, *args) is not None):
            cpu.rows_mean(*args)
    pos = 0
    for j, size in enumerate(segments.sizes):
        end = pos + size
        fix = [(pos, min(end, -(-pos // k) * k))]  # values in a byte that an earlier tensor starts
        if end > full * k:
            fix.append((max(pos, full * k), end))  # the last partial byte
        for lo, hi in fix:
            if hi > lo:
                q = torch.arange(lo, hi)
                acc = None
                for p, t in zip(payloads, tables):
                    v = t[j][p[field][q // k].to(torch.int64), q % k]
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
