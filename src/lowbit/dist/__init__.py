"""Distributed training: the simulated n-worker cluster."""

from .simulated import SimulatedCluster

__all__ = ["SimulatedCluster"]
