"""SimulatedCluster: n workers in one process, batched on one device.

Each worker's vector is a row of an (n, d) tensor.  :meth:`exchange` compresses every row with
the cluster's codec — in one batched call when the codec is elementwise (identity, cast without
scaling, intsgd, hintsgd, natural, and error feedback around them: a shared public scale and
per-coordinate rounding make the stacked call identical to n separate ones), else one call per
worker — and returns what the receiver decodes, with the bits sent.  Codec state (error memory,
IntSGD's α) lives in the cluster, for the stacked tensor.

Integer codecs also report the IntSGD paper's count: each worker's message costs
d·(1 + ⌈log₂(max|Int| + 1)⌉) bits, and so does the summed message.
"""

from __future__ import annotations

import torch

from ..compress import Compressor


class SimulatedCluster:
    def __init__(self, n: int, compressor, *, generator: torch.Generator | None = None):
        from ..optim.quantized import resolve_codec

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.codec: Compressor = resolve_codec(compressor)
        self.generator = generator
        self.state = None
        self._states: list | None = None

    def _width_bits(self, ints: torch.Tensor, d: int) -> dict:
        rows = ints.reshape(self.n, -1).long()
        m = rows.abs().amax(1).double()
        w = torch.where(m > 0, 1 + torch.ceil(torch.log2(m + 1)), torch.ones_like(m))
        s = rows.sum(0).abs().max().double()
        ws = 1 + torch.ceil(torch.log2(s + 1)) if s > 0 else torch.ones((), dtype=torch.float64)
        return {"width_bits": float((w * d).sum()), "sum_width_bits": float(ws * d)}

    def exchange(self, vectors: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Compress each worker's row of ``vectors`` (n × d); (decoded rows, {"bits": …})."""
        if vectors.shape[0] != self.n:
            raise ValueError(f"expected {self.n} rows (one per worker), got {vectors.shape[0]}")
        codec, d = self.codec, vectors[0].numel()
        if getattr(codec, "elementwise", False):
            if self.state is None:
                self.state = codec.init_state(vectors)
            pk = codec.encode(vectors, state=self.state, generator=self.generator)
            info = {"bits": 8 * pk.nbytes}
            if "ints" in pk.payload:
                info.update(self._width_bits(pk.payload["ints"], d))
            return codec.decode(pk).to(vectors.dtype), info
        if self._states is None:
            self._states = [codec.init_state(v) for v in vectors]
        outs, bits = [], 0
        for v, st in zip(vectors, self._states):
            pk = codec.encode(v, state=st, generator=self.generator)
            bits += 8 * pk.nbytes
            outs.append(codec.decode(pk).to(vectors.dtype))
        return torch.stack(outs), {"bits": bits}

    def mean(self, vectors: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(1/n)·Σ_i decode(encode(v_i)): what an all-reduce/all-gather of the packets delivers."""
        out, info = self.exchange(vectors)
        return out.mean(0), info

    def state_dict(self) -> dict:
        return {"state": self.state, "states": self._states}

    def load_state_dict(self, sd: dict) -> None:
        self.state, self._states = sd["state"], sd["states"]
