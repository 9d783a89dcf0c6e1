"""Packets over torch.distributed: the bytes of :class:`lowbit.compress.Packet` on the wire.

* :func:`all_reduce_packet` — summable codecs: each payload field is all-reduced in its own dtype
  (IntSGD's integers, identity's floats) by the codec's ``reduce_ops`` (sum, min, max, or same:
  a field every rank already agrees on, not sent).  Every rank receives the summed packet.
  int16, which neither gloo nor NCCL reduces, travels as int32 (counted so in ``wire_bytes``).
* :func:`all_gather_packets` — every other codec: the payload tensors of a packet are laid end to
  end as bytes; a small int64 header (each field's length, and the codec's ``sent_meta``
  integers such as the bit count of Elias codes) is all-gathered first, then the byte buffers,
  padded to the longest.  Each rank rebuilds every rank's packet from the bytes, taking shapes and
  public meta from its own packet (the receiver knows them).
* :func:`all_reduce_max` — the agreements of the codecs (one scalar).

Every call runs under :func:`lowbit.dist.process_group.guard`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..compress import Compressor, Packet
from .process_group import guard

_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
_WIDER = {torch.int16: torch.int32}  # neither gloo nor NCCL reduces int16: it travels as int32


def all_reduce_max(value, device, group=None) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(1).clone()
    with guard("all-reduce of an agreement"):
        dist.all_reduce(t, dist.ReduceOp.MAX, group=group)
    return t[0]


def all_reduce_packet(packet: Packet, codec: Compressor, group=None) -> tuple[Packet, int]:
    """(the sum over ranks of ``packet``, bytes this rank sent)."""
    payload, sent = {}, 0
    for key, t in packet.payload.items():
        op = codec.reduce_ops.get(key)
        if op is None:
            raise TypeError(f"{codec.name} declares no reduction for payload field {key!r}")
        if op == "same":
            payload[key] = t
            continue
        w = t.to(_WIDER.get(t.dtype, t.dtype), copy=True)
        with guard(f"all-reduce of {codec.name} field {key!r}"):
            dist.all_reduce(w, _OPS[op], group=group)
        payload[key] = w.to(t.dtype)
        sent += w.numel() * w.element_size()
    return Packet(payload, packet.shape, packet.dtype, dict(packet.meta)), sent


def _to_bytes(packet: Packet, codec: Compressor) -> tuple[torch.Tensor, list[int]]:
    parts, header = [], []
    for t in packet.payload.values():
        b = t.detach().contiguous().reshape(-1).view(torch.uint8)
        parts.append(b)
        header.append(b.numel())
    header += [int(packet.meta.get(k, 0)) for k in codec.sent_meta]
    dev = parts[0].device if parts else torch.device("cpu")
    return (torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8, device=dev)), header


def _from_bytes(buf: torch.Tensor, header: list[int], template: Packet, codec: Compressor) -> Packet:
    payload, pos = {}, 0
    nf = len(template.payload)
    for (key, t), nb in zip(template.payload.items(), header[:nf]):
        raw = buf[pos : pos + nb]
        pos += nb
        v = raw.clone().view(t.dtype)  # clone: a view of another dtype needs an aligned start
        payload[key] = v.reshape(t.shape) if v.numel() == t.numel() else v
    meta = dict(template.meta)
    for k, v in zip(codec.sent_meta, header[nf:]):
        if k in meta:
            meta[k] = v
    return Packet(payload, template.shape, template.dtype, meta)


def all_gather_packets(packet: Packet, codec: Compressor, group=None) -> tuple[list[Packet], int, int]:
    """(every rank's packet in rank order, bytes of payload this rank sent, bytes on the wire
    including the header and padding)."""
    world = dist.get_world_size(group)
    buf, header = _to_bytes(packet, codec)
    dev = buf.device
    h = torch.tensor(header, dtype=torch.int64, device=dev)
    hs = [torch.empty_like(h) for _ in range(world)]
    with guard(f"all-gather of {codec.name} packet sizes"):
        dist.all_gather(hs, h, group=group)
    headers = [x.tolist() for x in hs]
    nf = len(packet.payload)
    longest = max(sum(x[:nf]) for x in headers)
    padded = torch.zeros(longest, dtype=torch.uint8, device=dev)
    padded[: buf.numel()] = buf
    bufs = [torch.empty_like(padded) for _ in range(world)]
    with guard(f"all-gather of {codec.name} packets"):
        dist.all_gather(bufs, padded, group=group)
    packets = [_from_bytes(b, hd, packet, codec) for b, hd in zip(bufs, headers)]
    return packets, packet.nbytes, longest + 8 * len(header)
