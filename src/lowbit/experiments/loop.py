"""The loop every experiment kind runs: steps (or epochs) from where a checkpoint left off,
metrics rows, checkpoints written atomically, and stopping at a checkpoint."""

from __future__ import annotations

from typing import Callable

from .results import RunFolder


class Stop(Exception):
    """A run stopped at a checkpoint on request (``stop_after``): it resumes from there."""


def checkpointed(folder: RunFolder, start: int, total: int, step: Callable[[int], None], *, log_every: int,
                 checkpoint_every: int, state: Callable[[int], dict], record: Callable[[int], None] | None = None,
                 stop_after: int | None = None, progress=None) -> None:
    """Run ``step(k)`` for k in [start, total).  After step k (``done`` = k + 1 units): every
    ``log_every`` units and at the end, ``record(done)`` (a metrics row) and ``progress(done,
    total)``; every ``checkpoint_every`` units but the last, the checkpoint ``state(done)``,
    written atomically, and then, once ``done`` ≥ ``stop_after``, :class:`Stop` — so a run
    interrupted at any moment resumes from its last checkpoint with the same numbers."""
    for k in range(start, total):
        step(k)
        done = k + 1
        if done % log_every == 0 or done == total:
            if record is not None:
                record(done)
            if progress is not None:
                progress(done, total)
        if done % checkpoint_every == 0 and done < total:
            folder.save_checkpoint(state(done))
            if stop_after is not None and done >= stop_after:
                raise Stop(done)


__all__ = ["Stop", "checkpointed"]
