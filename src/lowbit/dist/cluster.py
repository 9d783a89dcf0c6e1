"""DistributedCluster: one rank's side of the n-worker exchange, over torch.distributed.

The same interface as :class:`lowbit.dist.SimulatedCluster` (``reduce``, ``mean``, ``state``,
``state_dict``), for one worker per process: rank r encodes its own vector with its own
generator :func:`~lowbit.dist.simulated.worker_generator` (seed, r), agrees with the others on
shared quantities (an all-reduce of one scalar), and sends its packet — summed in flight
(all-reduce) when the codec is summable, else all-gathered as bytes and decoded on arrival — so
that a run over real processes gives the numbers of the per-worker simulation with the same seed.

For ``Shifted`` (DIANA-style) codecs each rank mirrors every sender's shift h_i, as the
simulation's packets carry it: decode_i = h_i + C⁻¹(packet_i), h_i ← h_i + γ·C⁻¹(packet_i).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..compress import Compressor
from ..compress.feedback import Shifted
from . import wire
from .process_group import guard
from .simulated import worker_generator


class DistributedCluster:
    def __init__(self, compressor, *, seed: int = 0, group=None):
        from ..optim.quantized import resolve_codec

        if not dist.is_initialized():
            raise RuntimeError("DistributedCluster needs torch.distributed initialized (lowbit.dist.init() under "
                               "torchrun, or dist.init_process_group)")
        self.group = group
        self.n = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.rows = slice(self.rank, self.rank + 1)
        self.codec: Compressor = resolve_codec(compressor)
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.state = None  # shared (public) codec state, e.g. IntSGD's α
        self.own_state = None  # this worker's codec state (error memory, warm start, shift)
        self.mirrors: list | None = None  # Shifted: every sender's shift
        self.bytes_sent = 0  # payload bytes this rank sent (the codec's nbytes)
        self.wire_bytes = 0  # bytes on the wire, with headers and padding

    def _state(self, v):
        if self.codec.shared_state:
            if self.state is None:
                self.state = self.codec.init_state(v)
            return self.state
        if self.own_state is None:
            self.own_state = self.codec.init_state(v)
        return self.own_state

    def exchange(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(this rank's decoded vector, the mean over ranks of the decoded vectors, info)."""
        codec, d = self.codec, v.numel()
        if self.generator is None:
            self.generator = worker_generator(self.seed, self.rank, v.device)
        before = codec.agree_before(v)
        st = wire.all_reduce_max(before, v.device, self.group).to(torch.float32) if before is not None else self._state(v)
        packet = codec.encode(v, state=st, generator=self.generator)
        after = codec.agree_after(packet)
        if after is not None:
            packet = codec.conform(packet, int(wire.all_reduce_max(after, v.device, self.group)))
        info = {"bits": 8 * packet.nbytes * self.n}
        if codec.summable and codec.reduce_ops:
            total, sent = wire.all_reduce_packet(packet, codec, self.group)
            own = codec.decode(packet).to(v.dtype)
            mean = codec.decode(total).to(v.dtype) / self.n
            self.wire_bytes += sent
            if "ints" in packet.payload:
                info.update(self._width_bits(packet, total, d, v.device))
        else:
            packets, sent, on_wire = wire.all_gather_packets(packet, codec, self.group)
            info["bits"] = 8 * sum(p.nbytes for p in packets)
            decoded = torch.stack([self._decode_from(i, p).to(v.dtype) for i, p in enumerate(packets)])
            own, mean = decoded[self.rank], decoded.mean(0)
            self.wire_bytes += on_wire
        self.bytes_sent += packet.nbytes
        return own, mean, info

    def _decode_from(self, i: int, packet):
        if not isinstance(self.codec, Shifted):
            return self.codec.decode(packet)
        if self.mirrors is None:
            self.mirrors = [torch.zeros(packet.shape, dtype=torch.float32, device=packet.payload[next(iter(
                packet.payload))].device) for _ in range(self.n)]
        delta = self.codec.inner.decode(packet).to(torch.float32)
        out = self.mirrors[i] + delta
        self.mirrors[i] = self.mirrors[i] + self.codec.gamma * delta
        return out.to(packet.dtype)

    def _width_bits(self, packet, total, d: int, device) -> dict:
        """The IntSGD paper's count, as the simulation reports it (one more scalar all-reduce)."""
        m = float(packet.payload["ints"].abs().max()) if d else 0.0
        w = torch.tensor([(1 + torch.ceil(torch.log2(torch.tensor(m + 1.0))).item()) if m > 0 else 1.0],
                         dtype=torch.float64, device=device)
        with guard("all-reduce of integer widths"):
            dist.all_reduce(w, group=self.group)
        s = float(total.payload["ints"].abs().max()) if d else 0.0
        ws = 1 + torch.ceil(torch.log2(torch.tensor(s + 1.0, dtype=torch.float64))).item() if s > 0 else 1.0
        return {"width_bits": float(w[0]) * d, "sum_width_bits": ws * d}

    def mean(self, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        _, mean, info = self.exchange(v.reshape(-1))
        return mean.reshape(v.shape), info

    def reduce(self, rows: torch.Tensor, *, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The DIANA family's interface: ``rows`` holds this rank's one row (1 × d)."""
        if rows.shape[0] != 1:
            raise ValueError(f"a rank holds one worker's row, got {rows.shape[0]}")
        if exact:
            gathered = [torch.empty_like(rows[0]) for _ in range(self.n)]
            with guard("all-gather of exact vectors"):
                dist.all_gather(gathered, rows[0].contiguous(), group=self.group)
            self.bytes_sent += rows[0].numel() * 4
            return rows, torch.stack(gathered).mean(0), {"bits": 32 * rows[0].numel() * self.n}
        own, mean, info = self.exchange(rows[0])
        return own[None], mean, info

    def state_dict(self) -> dict:
        return {"state": self.state, "own_state": self.own_state, "mirrors": self.mirrors,
                "generator": (str(self.generator.device), self.generator.get_state()) if self.generator else None,
                "bytes_sent": self.bytes_sent, "wire_bytes": self.wire_bytes}

    def load_state_dict(self, sd: dict) -> None:
        self.state, self.own_state, self.mirrors = sd["state"], sd["own_state"], sd["mirrors"]
        self.bytes_sent, self.wire_bytes = sd["bytes_sent"], sd["wire_bytes"]
        if sd["generator"] is not None:
            dev, st = sd["generator"]
            self.generator = torch.Generator(device=dev)
            self.generator.set_state(st)
