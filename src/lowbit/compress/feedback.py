"""Wrappers that work around any compressor: error feedback and DIANA-style shifts.

ErrorFeedback (Seide et al.; Karimireddy et al., "Error Feedback Fixes SignSGD"): with memory e,
    v = g + e,   send C(v),   e ← v − decode(C(v)).
The accumulated error stays bounded for contractive C, and Σ_k decode_k = Σ_k g_k − e_K exactly.

Shifted (DIANA; Mishchenko, Gorbunov, Takáč, Richtárik): with shift h kept by the worker and
mirrored by the receiver,
    send C(g − h),   ĝ = h + decode(C(g − h)),   h ← h + γ·decode(C(g − h)).
For unbiased C, ĝ is unbiased and the compressed differences g − h shrink as h learns g, so the
compression error vanishes at the optimum.  The receiver's copy of h is in ``packet.meta``
(it is not sent).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from .base import Compressor, Packet, Traits, make_compressor


@dataclass
class FeedbackState:
    memory: torch.Tensor
    inner: Any = None


class _Wrapper(Compressor):
    def __init__(self, compressor: Compressor):
        self.inner = make_compressor(compressor) if isinstance(compressor, str) else compressor
        self.name = f"{type(self).__name__}({self.inner.name})"
        self.traits = Traits(elementwise=self.inner.traits.elementwise, bits=self.inner.traits.bits)

    def init_state(self, tensor: torch.Tensor) -> FeedbackState:
        return FeedbackState(torch.zeros_like(tensor, dtype=torch.float32), self.inner.init_state(tensor))

    def _need(self, state):
        if not isinstance(state, FeedbackState):
            raise ValueError(f"{self.name} keeps memory per tensor: pass state=codec.init_state(tensor)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class ErrorFeedback(_Wrapper):
    """Error feedback around any compressor (see the module docstring)."""

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        self._need(state)
        v = tensor.detach().to(torch.float32) + state.memory
        packet = self.inner.encode(v, state=state.inner, generator=generator)
        state.memory = v - self.inner.decode(packet).to(torch.float32)
        packet.dtype = tensor.dtype
        return packet

    def decode(self, packet: Packet) -> torch.Tensor:
        return self.inner.decode(packet)


class Shifted(_Wrapper):
    """DIANA-style shift around any compressor (see the module docstring); ``gamma`` is the shift
    stepsize (1/(ω+1) in DIANA's analysis for a compressor of variance ω; 1 for IntSGD's DIANA)."""

    def __init__(self, compressor: Compressor, gamma: float = 1.0):
        super().__init__(compressor)
        self.gamma = gamma
        self.traits = replace(self.traits, unbiased=self.inner.traits.unbiased)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        self._need(state)
        h = state.memory
        packet = self.inner.encode(tensor.detach().to(torch.float32) - h, state=state.inner, generator=generator)
        delta = self.inner.decode(packet).to(torch.float32)
        packet.meta = {**packet.meta, "shift": h}
        state.memory = h + self.gamma * delta
        packet.dtype = tensor.dtype
        return packet

    def decode(self, packet: Packet) -> torch.Tensor:
        return (packet.meta["shift"] + self.inner.decode(packet).to(torch.float32)).to(packet.dtype)

    def decode_mirrored(self, packet: Packet, mirror: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A receiver's side when the shift does not travel (a real exchange): with its copy h_i of
        sender i's shift (None: zeros), ĝ_i = h_i + C⁻¹(packet) and h_i ← h_i + γ·C⁻¹(packet).
        Returns (ĝ_i, the new h_i)."""
        delta = self.inner.decode(packet).to(torch.float32)
        if mirror is None:
            mirror = torch.zeros_like(delta)
        return (mirror + delta).to(packet.dtype), mirror + self.gamma * delta
