"""Distributed training: the simulated n-worker cluster, and the same exchange over
torch.distributed (one worker per process; DDP communication hooks for every compressor), and
ISGQ's factored exchange of layer inputs and errors (simulated workers)."""

from .cluster import DistributedCluster
from .factored import FactoredDataParallel
from .process_group import RankLostError, init, shutdown
from .simulated import SimulatedCluster, SimulatedDataParallel, worker_generator

__all__ = ["SimulatedCluster", "SimulatedDataParallel", "FactoredDataParallel", "DistributedCluster", "RankLostError", "init", "shutdown", "worker_generator"]
