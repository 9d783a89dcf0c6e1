"""The compressors as registered operators, for torch.compile.

``lowbit::encode(x, codec)`` gives the bytes of x's packet and ``lowbit::decode(buf, codec, shape)``
the tensor a receiver reconstructs from them; ``codec`` is the compressor's spec, a JSON string of
its name and options (:meth:`~lowbit.compress.Compressor.spec`).  Both have fake implementations, so a function that codes
a tensor — ``codec(x)``, which takes this path under compilation — compiles with
``fullgraph=True`` on the CPU and on CUDA, where the operators run the codecs' fused kernels.

The message is the packet's payload tensors back to back, wider element types first (so that every
field starts at a multiple of its element size and is read back as a view, with no padding: the
message has exactly the packet's ``nbytes``); its layout depends on the codec and the shape only,
and is found once per (codec, shape, device type) by coding zeros.
Codecs whose sizes depend on the data (IntSGD with the automatic width, Elias-coded QSGD) are
refused, and so are those that need a state to encode (IntSGD without a fixed α; error feedback
is a wrapper with a state and no spec): as an operator a codec is a function of its input.  Stochastic codecs then draw from torch's global generator.
"""

from __future__ import annotations

import contextlib
import functools
import json

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .base import Compressor, Packet
from .factory import get_compressor

_LAYOUTS: dict[tuple, tuple[list, int, dict]] = {}


@functools.lru_cache(maxsize=64)
def codec_of(spec: str) -> Compressor:
    """The compressor a spec string names (kept: one instance per spec)."""
    name, options = json.loads(spec)
    return get_compressor(name, **options)


def _fields(packet: Packet) -> list[tuple[str, torch.Tensor]]:
    return sorted(packet.payload.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))


@contextlib.contextmanager
def _eager():
    """Run real code while torch.compile traces (the fake kernel needs the layout): real tensors,
    and ``torch.compiler.is_compiling()`` false, so the codec takes its eager path."""
    flag = getattr(torch.compiler, "_is_compiling_flag", None)
    with unset_fake_temporarily():
        if flag is not None:
            torch.compiler._is_compiling_flag = False
        try:
            yield
        finally:
            if flag is not None:
                torch.compiler._is_compiling_flag = flag


def layout(spec: str, shape, device: torch.device) -> tuple[list, int, dict]:
    """([(field, offset, nbytes, dtype, shape)], total bytes, the packet's meta) of the message of
    a tensor of ``shape``."""
    shape = tuple(int(s) for s in shape)
    key = (spec, shape, torch.device(device).type)
    if key not in _LAYOUTS:
        with _eager():  # code real zeros, also while torch.compile traces
            dev = torch.device(device)
            if dev.type == "cuda" and dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            packet = codec_of(spec).encode(torch.zeros(shape, device=dev))
        rows, off = [], 0
        for name, t in _fields(packet):
            nb = t.numel() * t.element_size()
            rows.append((name, off, nb, t.dtype, tuple(t.shape)))
            off += nb
        _LAYOUTS[key] = (rows, off, dict(packet.meta))
    return _LAYOUTS[key]


@torch.library.custom_op("lowbit::encode", mutates_args=())
def _encode_op(x: torch.Tensor, codec: str) -> torch.Tensor:
    rows, total, meta = layout(codec, x.shape, x.device)
    packet = codec_of(codec).encode(x.detach())
    buf = torch.zeros(total, dtype=torch.uint8, device=x.device)
    got = _fields(packet)
    if [(n, tuple(t.shape), t.dtype) for n, t in got] != [(r[0], r[4], r[3]) for r in rows] or packet.meta != meta:
        raise ValueError(f"{codec_of(codec)!r}: the packet's fields depend on the data, so it has no fixed layout")
    for (_, off, nb, _, _), (_, t) in zip(rows, got):
        buf[off : off + nb] = t.detach().reshape(-1).contiguous().view(torch.uint8)
    return buf


@_encode_op.register_fake
def _(x, codec):
    if not all(isinstance(s, int) for s in x.shape):
        raise ValueError("lowbit::encode needs a static shape: compile with dynamic=False")
    return x.new_empty(layout(codec, x.shape, x.device)[1], dtype=torch.uint8)


@torch.library.custom_op("lowbit::decode", mutates_args=())
def _decode_op(buf: torch.Tensor, codec: str, shape: list[int]) -> torch.Tensor:
    rows, _, meta = layout(codec, shape, buf.device)
    payload = {name: buf[off : off + nb].view(dt).view(sh) for name, off, nb, dt, sh in rows}
    out = codec_of(codec).decode(Packet(payload, tuple(shape), torch.float32, dict(meta))).reshape(shape).to(torch.float32)
    if out.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr():
        out = out.clone()  # an operator returns no alias of its input (identity decodes to a view)
    return out


@_decode_op.register_fake
def _(buf, codec, shape):
    return buf.new_empty(shape, dtype=torch.float32)


def _spec(codec: Compressor) -> str:
    spec = codec.spec()
    if spec is None:
        raise ValueError(f"{codec!r} has options that are not plain data: it cannot be named to an operator")
    return spec


def encode(x: torch.Tensor, codec: Compressor) -> torch.Tensor:
    """The bytes of ``x``'s packet (uint8) through the registered operator."""
    return torch.ops.lowbit.encode(x, _spec(codec))


def decode(buf: torch.Tensor, codec: Compressor, shape) -> torch.Tensor:
    """The float32 tensor of ``shape`` that ``buf`` (from :func:`encode`) decodes to."""
    return torch.ops.lowbit.decode(buf, _spec(codec), list(shape))


__all__ = ["codec_of", "decode", "encode", "layout"]
