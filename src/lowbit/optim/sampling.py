"""Minibatch indices for finite sums f = (1/n) Σ_i f_i: without replacement (a fresh random
permutation each epoch, consumed ``batch`` at a time) or uniformly with replacement, from a seeded
generator of their own, with a state to checkpoint."""

from __future__ import annotations

import torch


class Sampler:
    def __init__(self, n: int, batch: int, seed: int, mode: str = "permutation"):
        if n < 1 or batch < 1:
            raise ValueError("n and batch must be >= 1")
        if mode not in ("permutation", "uniform"):
            raise ValueError(f"sampling must be 'permutation' or 'uniform', got {mode!r}")
        self.n, self.batch, self.mode = n, batch, mode
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> torch.Tensor:
        """The next ``batch`` indices in [0, n)."""
        if self.mode == "uniform":
            return torch.randint(0, self.n, (self.batch,), generator=self.gen)
        if self.pos + self.batch > self.perm.numel():
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos = s["perm"].clone(), s["pos"]


__all__ = ["Sampler"]
