"""Distributed training, in layers:

* :mod:`~lowbit.distributed.protocol` — the :class:`Cluster` protocol (``reduce``, ``mean``,
  ``state_dict``) that the DIANA family takes;
* :mod:`~lowbit.distributed.seeding` — where each worker's, parameter's and bucket's codec randomness
  comes from (:func:`worker_generator`), the same in the simulation and in a real run;
* :mod:`~lowbit.distributed.simulated` — n workers in one process (:class:`SimulatedCluster`,
  :class:`SimulatedDataParallel`);
* :mod:`~lowbit.distributed.bucket` — how a bucket of tensors is coded, combined and decoded, shared by
  the DDP hooks and the simulation;
* :mod:`~lowbit.distributed.hooks` — DDP communication hooks for every compressor (the bucket path, or
  per parameter);
* :mod:`~lowbit.distributed.cluster` and :mod:`~lowbit.distributed.wire` — one worker per process for the
  DIANA family (:class:`DistributedCluster`) and its packets on the wire;
* :mod:`~lowbit.distributed.process_group` — the process group, its heartbeat and the errors that name
  a lost rank;
* :mod:`~lowbit.distributed.factored` — ISGQ's exchange of layer inputs and errors (simulated workers).
"""

from .cluster import DistributedCluster
from .factored import FactoredDataParallel
from .process_group import RankLostError, init, shutdown
from .protocol import Cluster
from .seeding import worker_generator
from .simulated import SimulatedCluster, SimulatedDataParallel

__all__ = ["Cluster", "SimulatedCluster", "SimulatedDataParallel", "FactoredDataParallel", "DistributedCluster",
           "RankLostError", "init", "shutdown", "worker_generator"]
