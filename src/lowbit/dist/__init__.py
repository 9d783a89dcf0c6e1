"""Distributed training: the simulated n-worker cluster, and the same exchange over
torch.distributed (one worker per process; DDP communication hooks for every compressor)."""

from .cluster import DistributedCluster
from .process_group import RankLostError, init, shutdown
from .simulated import SimulatedCluster, SimulatedDataParallel, worker_generator

__all__ = ["SimulatedCluster", "SimulatedDataParallel", "DistributedCluster", "RankLostError", "init", "shutdown", "worker_generator"]
