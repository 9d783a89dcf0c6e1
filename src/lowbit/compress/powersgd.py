"""powersgd: PowerSGD (Vogels, Karimireddy, Jaggi), rank-r compression by one power iteration.

A gradient reshaped to a matrix M (n × m, rows = first dimension) is sent as P (n × r) and
Q (m × r) with M ≈ P Qᵀ:  P ← orthonormalize(M Q_prev), Q ← Mᵀ P.  Warm start: Q_prev is the
previous step's Q (state).  Error feedback is part of the method: M = g + e, e ← M − P Qᵀ.
Tensors with fewer than two dimensions, or where rank·(n + m) ≥ n·m, travel uncompressed.
Without a state (``state=None``) Q_prev is random and there is no error memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Compressor, Packet, _check_tensor, register


@dataclass
class PowerSGDState:
    q: torch.Tensor | None
    error: torch.Tensor | None


@register("powersgd")
class PowerSGD(Compressor):
    def __init__(self, rank: int = 2):
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = rank

    def _compressible(self, shape) -> bool:
        if len(shape) < 2:
            return False
        n = shape[0]
        m = 1
        for s in shape[1:]:
            m *= s
        return self.rank * (n + m) < n * m

    def init_state(self, tensor):
        return PowerSGDState(None, torch.zeros_like(tensor, dtype=torch.float32))

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        g = tensor.detach().to(torch.float32)
        if not self._compressible(tuple(tensor.shape)):
            return Packet({"values": g.reshape(-1).clone()}, tuple(tensor.shape), tensor.dtype)
        M = g.reshape(g.shape[0], -1)
        if state is not None:
            M = M + state.error.reshape(M.shape)
        r = min(self.rank, *M.shape)
        q = state.q if state is not None and state.q is not None else None
        if q is None:
            gdev = generator.device if generator is not None else M.device
            q = torch.randn(M.shape[1], r, generator=generator, device=gdev).to(M.device)
        p, _ = torch.linalg.qr(M @ q)
        q = M.T @ p
        if state is not None:
            state.q = q
            state.error = (M - p @ q.T).reshape(tensor.shape)
        return Packet({"p": p.contiguous(), "q": q.contiguous()}, tuple(tensor.shape), tensor.dtype)

    def decode(self, packet: Packet) -> torch.Tensor:
        if "values" in packet.payload:
            return packet.payload["values"].reshape(packet.shape).to(packet.dtype)
        return (packet.payload["p"] @ packet.payload["q"].T).reshape(packet.shape).to(packet.dtype)
