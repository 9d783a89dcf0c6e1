"""Packets over torch.distributed: the bytes of :class:`lowbit.compress.Packet` on the wire.

* :func:`all_reduce_packets` — summable codecs: each payload field is all-reduced in its own dtype
  (IntSGD's integers, identity's floats) by the codec's ``reduce_ops`` (sum, min, max, or same:
  a field every rank already agrees on, not sent).  Every rank receives the summed packet.
  int16, which neither gloo nor NCCL reduces, travels as int32 (counted so in ``wire_bytes``).
* :func:`all_gather_packets_many` — every other codec: the payload tensors of a packet are laid end to
  end as bytes; a small int64 header (each field's length, and the codec's ``sent_meta``
  integers such as the bit count of Elias codes) is all-gathered first, then the byte buffers,
  padded to the longest.  Each rank rebuilds every rank's packet from the bytes, taking shapes and
  public meta from its own packet (the receiver knows them).
* :func:`all_reduce_max_many` — the agreements of the codecs (one scalar per tensor).

Several tensors (a DDP bucket's parameters) travel together: the collectives' count does not
grow with their number.

Every call runs under :func:`lowbit.distributed.process_group.guard`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..compress import Compressor, Packet
from .process_group import guard

all_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.10
_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
_WIDER = {torch.int16: torch.int32}  # neither gloo nor NCCL reduces int16: it travels as int32


def all_reduce_max_many(values, device, group=None) -> torch.Tensor:
    """Elementwise maximum over ranks of a list of scalars (one all-reduce)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    with guard("all-reduce of an agreement"):
        dist.all_reduce(t, dist.ReduceOp.MAX, group=group)
    return t


def all_reduce_packets(packets: list[Packet], codec: Compressor, group=None) -> tuple[list[Packet], int]:
    """(the sums over ranks of ``packets``, bytes this rank sent): one all-reduce per payload
    field and dtype, the packets' tensors laid end to end."""
    totals = [dict() for _ in packets]
    sent = 0
    for key in packets[0].payload:
        op = codec.reduce_ops.get(key)
        if op is None:
            raise TypeError(f"{codec.name} declares no reduction for payload field {key!r}")
        if op == "same":
            for tot, p in zip(totals, packets):
                tot[key] = p.payload[key]
            continue
        by_dtype: dict = {}
        for j, p in enumerate(packets):
            by_dtype.setdefault(p.payload[key].dtype, []).append(j)
        for dt, idx in by_dtype.items():
            parts = [packets[j].payload[key].reshape(-1) for j in idx]
            flat = torch.cat(parts).to(_WIDER.get(dt, dt))
            with guard(f"all-reduce of {codec.name} field {key!r}"):
                dist.all_reduce(flat, _OPS[op], group=group)
            sent += flat.numel() * flat.element_size()
            for j, piece in zip(idx, torch.split(flat, [t.numel() for t in parts])):
                totals[j][key] = piece.to(dt).reshape(packets[j].payload[key].shape)
    return [Packet(t, p.shape, p.dtype, dict(p.meta)) for t, p in zip(totals, packets)], sent


def _to_bytes(packet: Packet, codec: Compressor) -> tuple[torch.Tensor, list[int]]:
    parts, header = [], []
    for t in packet.payload.values():
        b = t.detach().contiguous().reshape(-1).view(torch.uint8)
        parts.append(b)
        header.append(b.numel())
    header += [int(packet.meta.get(k, 0)) for k in codec.traits.sent_meta]
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
    for k, v in zip(codec.traits.sent_meta, header[nf:]):
        if k in meta:
            meta[k] = v
    return Packet(payload, template.shape, template.dtype, meta)


def all_gather_packets_many(packets: list[Packet], codec: Compressor, group=None) -> tuple[list[list[Packet]], int]:
    """(for each rank, its packets in order; bytes on the wire including headers and padding):
    one all-gather of the headers, one of the bytes."""
    world = dist.get_world_size(group)
    bufs, header = [], []
    for p in packets:
        b, h = _to_bytes(p, codec)
        bufs.append(b)
        header += h
    dev = bufs[0].device
    buf = torch.cat(bufs) if len(bufs) > 1 else bufs[0]
    h = torch.tensor(header, dtype=torch.int64, device=dev)
    hs = [torch.empty_like(h) for _ in range(world)]
    with guard(f"all-gather of {codec.name} packet sizes"):
        dist.all_gather(hs, h, group=group)
    headers = [x.tolist() for x in hs]
    per = [len(p.payload) + len(codec.traits.sent_meta) for p in packets]
    nf = [len(p.payload) for p in packets]

    def total_bytes(hd):
        pos, tot = 0, 0
        for k, f in zip(per, nf):
            tot += sum(hd[pos : pos + f])
            pos += k
        return tot

    longest = max(total_bytes(hd) for hd in headers)
    padded = torch.zeros(longest, dtype=torch.uint8, device=dev)
    padded[: buf.numel()] = buf
    got = [torch.empty_like(padded) for _ in range(world)]
    with guard(f"all-gather of {codec.name} packets"):
        dist.all_gather(got, padded, group=group)
    out = []
    for g, hd in zip(got, headers):
        pos, off, mine = 0, 0, []
        for p, k, f in zip(packets, per, nf):
            sub = hd[pos : pos + k]
            nb = sum(sub[:f])
            mine.append(_from_bytes(g[off : off + nb], sub, p, codec))
            pos += k
            off += nb
        out.append(mine)
    return out, longest + 8 * len(header)
