"""onebit: 1-bit SGD (Seide, Fu, Droppo, Li, Yu), the sign pattern with two reconstruction values.

Per tensor (or per row of a matrix, ``granularity="row"``, the closest to the original's
per-column quantization of a weight matrix stored output-major), send one bit per coordinate
(x ≥ 0) and the means a = mean{x_i : x_i ≥ 0}, b = mean{x_i : x_i < 0} (float32); decode
a where the bit is set, b elsewhere.  Biased: use it inside ErrorFeedback
(``get_compressor("onebit", error_feedback=True)``), as 1-bit SGD does.
"""

from __future__ import annotations

import torch

from ..packing import pack, unpack
from .base import Compressor, Packet, _check_tensor, register


@register("onebit")
class OneBit(Compressor):
    def __init__(self, granularity: str = "tensor"):
        if granularity not in ("tensor", "row"):
            raise ValueError(f"granularity is 'tensor' or 'row', got {granularity!r}")
        self.granularity = granularity

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        if self.granularity == "row" and t.dim() >= 2:
            return t.reshape(t.shape[0], -1)
        return t.reshape(1, -1)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        x = self._rows(tensor.detach().to(torch.float32))
        pos = x >= 0
        npos = pos.sum(1)
        nneg = x.shape[1] - npos
        a = torch.where(pos, x, 0).sum(1) / npos.clamp(min=1)
        b = torch.where(pos, 0, x).sum(1) / nneg.clamp(min=1)
        nonfinite = ~torch.isfinite(x).all(1)  # NaN compares false: keep it visible in the means
        a = torch.where(nonfinite, float("nan"), a)
        b = torch.where(nonfinite, float("nan"), b)
        return Packet({"means": torch.stack([a, b], 1).reshape(-1), "signs": pack(pos.reshape(-1), 1)},
                      tuple(tensor.shape), tensor.dtype, {"rows": x.shape[0]})

    def decode(self, packet: Packet) -> torch.Tensor:
        rows = packet.meta["rows"]
        ab = packet.payload["means"].reshape(rows, 2)
        bits = unpack(packet.payload["signs"], 1, packet.numel).reshape(rows, -1).bool()
        return torch.where(bits, ab[:, :1], ab[:, 1:]).reshape(packet.shape).to(packet.dtype)
