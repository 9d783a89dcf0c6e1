"""The Cluster protocol: what the DIANA family (and any method that averages compressed vectors
over n workers) needs of an exchange, implemented by :class:`~lowbit.distributed.SimulatedCluster` (all
workers in one process) and :class:`~lowbit.distributed.DistributedCluster` (one worker per process)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Cluster(Protocol):
    n: int  # workers
    rows: slice  # the workers whose rows this process holds
    codec: Any  # the Compressor
    state: Any  # public codec state (IntSGD's α), shared by the workers

    def reduce(self, rows: torch.Tensor, *, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(decoded rows of this process's workers, mean over all workers, info with "bits")."""
        ...

    def mean(self, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(1/n)·Σ_i decode(encode(v_i)) and info."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, sd: dict) -> None: ...


__all__ = ["Cluster"]
