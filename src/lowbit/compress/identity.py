"""identity: the uncompressed float32 baseline (32 bits per coordinate)."""

from __future__ import annotations

import torch

from .base import Compressor, Packet, Summable, Traits, _check_tensor, into, register
from .many import MultiTensor


@register("identity")
class Identity(MultiTensor, Summable, Compressor):
    """Sends the tensor as float32: unbiased, and summable (floats add in flight)."""

    traits = Traits(unbiased=True, summable=True, elementwise=True, omega=0.0, bits=32)
    reduce_ops = {"values": "sum"}

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        return Packet({"values": tensor.detach().to(torch.float32).reshape(-1).clone()}, tuple(tensor.shape), tensor.dtype)

    def decode(self, packet: Packet) -> torch.Tensor:
        return packet.payload["values"].reshape(packet.shape).to(packet.dtype)

    def graph_safe(self, flat, states=None) -> bool:
        return flat.is_cuda

    def unit_roundtrip(self, u, generator=None):
        return u

    def unit_encode(self, u, generator=None):
        return {"values": u.reshape(-1)}  # the buffer itself: an all-reduce sums it in place

    def unit_decode(self, payload, n, out=None):
        return into(payload["values"], out)

    def wire_bytes(self, numel: int) -> int:
        return 4 * numel

    def add(self, a: Packet, b: Packet) -> Packet:
        return Packet({"values": a.payload["values"] + b.payload["values"]}, a.shape, a.dtype)
