"""onebit: 1-bit SGD (Seide, Fu, Droppo, Li, Yu), the sign pattern with two reconstruction values.

Per tensor (or per row of a matrix, ``granularity="row"``, the closest to the original's
per-column quantization of a weight matrix stored output-major), send one bit per coordinate
(x ≥ 0) and the means a = mean{x_i : x_i ≥ 0}, b = mean{x_i : x_i < 0} (float32); decode
a where the bit is set, b elsewhere.  Biased: use it inside ErrorFeedback
(``get_compressor("onebit", error_feedback=True)``), as 1-bit SGD does.
"""

from __future__ import annotations

import torch

from .. import kernels
from ..kernels import cpu
from ..packing import BYTE_BITS, pack, unpack, unpack_bytes
from .base import Compressor, Packet, Traits, _check_tensor, byte_rows_mean, each_tensor, register, scratch
from .many import MultiTensor, per_segment_where, segment_sums, segments as row_segments


def float64_sums(tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σx, Σ|x|) of each float32 tensor in float64: ``t.sum(dtype=float64)`` and
    ``vector_norm(t, 1, dtype=float64)``, which both convert t to a fresh float64 tensor first;
    here one conversion per tensor into a reused buffer, then the same two reductions on it —
    the same values (tested), without the second conversion and the fresh pages."""
    tot, mag = [], []
    for t in tensors:
        b = scratch(t.numel(), torch.float64, 4).copy_(t) if t.device.type == "cpu" else t.to(torch.float64)
        tot.append(b.sum())
        mag.append(torch.linalg.vector_norm(b, 1))
    return torch.stack(tot), torch.stack(mag)


@register("onebit")
class OneBit(MultiTensor, Compressor):
    def __init__(self, granularity: str = "tensor"):
        if granularity not in ("tensor", "row"):
            raise ValueError(f"granularity is 'tensor' or 'row', got {granularity!r}")
        self.granularity = granularity
        self.traits = Traits(bits=1)

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        if self.granularity == "row" and t.dim() >= 2:
            return t.reshape(t.shape[0], -1)
        return t.reshape(1, -1)

    def encode(self, tensor, *, state=None, generator=None) -> Packet:
        _check_tensor(tensor)
        x = self._rows(tensor.detach().to(torch.float32))
        if x.numel() and kernels.fused_codecs(x):  # each row a segment of the flat path
            p = self.flat_encode(x.reshape(-1), None, row_segments([x.shape[1]] * x.shape[0], x.device))
            return Packet(p, tuple(tensor.shape), tensor.dtype, {"rows": x.shape[0]})
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

    # multi-tensor path (per-tensor granularity): every tensor keeps its own two means
    def batchable(self, states=None) -> bool:
        return self.granularity == "tensor"

    def wire_bytes(self, numel: int) -> int:
        return 8 + (numel + 7) // 8

    def graph_safe(self, flat, states=None) -> bool:
        return flat.is_cuda  # device work only on CUDA (segment sums without host checks)

    def flat_encode(self, flat, tensors, segments, *, states=None, generator=None):
        """Sign bits of the whole buffer and, per tensor j, a_j = mean{x ≥ 0}, b_j = mean{x < 0}
        from its sums by sign (NaN for a tensor whose sums are not finite, as a non-finite input;
        on CUDA two reads of the buffer: the bits, then the sums in float64 block by block)."""
        if k := kernels.fused_codecs(flat):  # the bits in one read, the sums by sign in another (float64)
            signs = k.sign_encode(flat, scale=False)
            npos, spos, sneg = k.sign_sums(flat, segments.block_plan(k.BLOCK)).unbind(1)
            return {"means": self._means(npos, spos, sneg, segments), "signs": signs}
        pos = flat >= 0 if flat.device.type != "cpu" or not cpu.wanted(flat) else None
        if flat.is_cuda:
            npos = segment_sums(pos.to(flat.dtype), segments)
            spos = segment_sums(torch.where(pos, flat, 0.0), segments)
            sneg = segment_sums(torch.where(pos, 0.0, flat), segments)
        else:  # S± = (Σx ± Σ|x|)/2 in float64, tensor by tensor
            if pos is None:  # the bits, the sums and the counts in one loop per tensor
                pos = scratch(flat.numel(), torch.uint8, 3)
                tot, mag, npos = torch.stack([each_tensor(cpu.signs_and_sums, v, p) for v, p in
                                              zip(flat.split(segments.sizes), pos.split(segments.sizes))]).unbind(1)
                pos = pos.view(torch.bool)
            else:
                tot, mag = float64_sums(flat.split(segments.sizes))
                npos = torch.stack([p.sum() for p in pos.split(segments.sizes)]).to(torch.float64)
            spos, sneg = (tot + mag) / 2, (tot - mag) / 2
        return {"means": self._means(npos, spos, sneg, segments), "signs": pack(pos, 1)}

    @staticmethod
    def _means(npos, spos, sneg, segments) -> torch.Tensor:
        """(a_j, b_j) interleaved, float32, from each tensor's count of x ≥ 0 and sums by sign (NaN
        for a tensor whose sums are not finite)."""
        a = spos / npos.clamp(min=1)
        b = sneg / (segments.lengths.to(npos.dtype) - npos).clamp(min=1)
        bad = ~torch.isfinite(spos + sneg)
        a, b = torch.where(bad, float("nan"), a), torch.where(bad, float("nan"), b)
        return torch.stack([a, b], 1).reshape(-1).to(torch.float32)

    def flat_mean(self, payloads, segments, out):
        if payloads[0]["signs"].is_cuda or not cpu.wanted(out):
            return None
        def table(p):  # tensor j: the mean of its positive entries where a bit is set, else of the rest
            ab = p["means"].reshape(-1, 2, 1, 1)
            return torch.where(BYTE_BITS, ab[:, 0], ab[:, 1])

        return byte_rows_mean(payloads, "signs", table, segments, out)

    def flat_decode(self, payload, segments, *, out=None):
        ab = payload["means"].reshape(-1, 2)
        if k := kernels.fused_codecs(payload["signs"], ab):  # one pass: a_j where the bit is set, else b_j
            seg = segments.index if len(segments.sizes) > 1 else None  # one tensor: its two means by pointer
            return k.sign_decode(payload["signs"], ab[:, 0].contiguous(), segments.total, seg=seg, out=out,
                                 low=ab[:, 1].contiguous())
        bits = unpack_bytes(payload["signs"], 1, segments.total).view(torch.bool)
        return per_segment_where(bits, ab[:, 0].contiguous(), ab[:, 1].contiguous(), segments, out)

    def flat_roundtrip(self, flat, tensors, segments, *, states=None, generator=None, out=None):
        return self.flat_decode(self.flat_encode(flat, tensors, segments), segments, out=out)

    def decode(self, packet: Packet) -> torch.Tensor:
        rows = packet.meta["rows"]
        ab = packet.payload["means"].reshape(rows, 2)
        if packet.numel and kernels.fused_codecs(packet.payload["signs"], ab):
            seg = row_segments([packet.numel // rows] * rows, ab.device)
            return self.flat_decode(packet.payload, seg).reshape(packet.shape).to(packet.dtype)
        bits = unpack(packet.payload["signs"], 1, packet.numel).reshape(rows, -1).bool()
        return torch.where(bits, ab[:, :1], ab[:, 1:]).reshape(packet.shape).to(packet.dtype)
