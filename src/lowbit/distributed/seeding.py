"""Where every worker's codec randomness comes from, in the simulation and in a real run alike:
worker i of a run seeded with s draws from ``worker_generator(s, i)``; a parameter's own stream
(the per-parameter exchange) is seeded with ``param_seed(s, j)``, a DDP bucket's with
``bucket_seed(s, J)`` for the parameter positions J it lays out, in order."""

from __future__ import annotations

import torch


def worker_generator(seed: int, worker: int, device="cpu") -> torch.Generator:
    """The generator of worker ``worker`` in a run seeded with ``seed`` (simulated or real)."""
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + 7919 * (int(worker) + 1)) % (2**63))


def param_seed(seed: int, index: int) -> int:
    """The seed of parameter ``index``'s codec randomness in a run seeded with ``seed``."""
    return int(seed) * 65_537 + 131 * (int(index) + 1)


def bucket_seed(seed: int, key) -> int:
    """The seed of the randomness of the bucket laying out parameters ``key`` in that order."""
    s = param_seed(seed, key[0])
    for j in key[1:]:
        s = (s * 1_000_003 + 131 * (int(j) + 1)) % (2**61 - 1)
    return s


__all__ = ["bucket_seed", "param_seed", "worker_generator"]
