"""Setting up torch.distributed for lowbit, and failing loudly when a rank is lost.

:func:`init` starts the default process group from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) with a collective timeout, and
a heartbeat: a daemon thread that writes each rank's wall time and collective count to the
rendezvous store twice a second.  Every collective lowbit issues runs inside :func:`guard`;
when one fails (a peer closed its connection, or nothing arrived within the timeout) the guard
reads the heartbeats and raises :class:`RankLostError` naming the rank(s) that stopped (no
heartbeat) or lag behind (fewest collectives: alive but stuck), so no rank waits silently.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import _get_default_store

HEARTBEAT_S = 0.5
_watch: "_Heartbeat | None" = None


class RankLostError(RuntimeError):
    """A peer rank died or stopped answering; the message names it."""


class _Heartbeat:
    def __init__(self, store, rank: int, world: int):
        self.store, self.rank, self.world = store, rank, world
        self.count = 0  # collectives entered by this rank
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lowbit-heartbeat", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.store.set(f"lowbit/hb/{self.rank}", f"{time.time():.3f} {self.count}")
            except Exception:  # the store is gone (its host rank died): diagnose() says so
                return
            self.stop.wait(HEARTBEAT_S)

    def read(self) -> dict[int, tuple[float, int]]:
        out = {}
        for r in range(self.world):
            try:
                if not self.store.check([f"lowbit/hb/{r}"]):
                    continue
                t, c = self.store.get(f"lowbit/hb/{r}").decode().split()
                out[r] = (float(t), int(c))
            except Exception as e:
                raise RankLostError(f"the rendezvous store is unreachable ({e}); rank 0 or the launcher that hosts "
                                    "it is lost") from None
        return out

    def diagnose(self, wait_s: float = 3 * HEARTBEAT_S + 1.0) -> str | None:
        """Which ranks stopped (no heartbeat for 3 intervals) or lag (fewest collectives); None
        when every peer is alive and in step."""
        deadline = time.time() + wait_s
        while True:
            beats = self.read()
            now = time.time()
            dead = [r for r in range(self.world) if r != self.rank
                    and (r not in beats or now - beats[r][0] > 3 * HEARTBEAT_S)]
            if dead or now > deadline:
                break
            time.sleep(HEARTBEAT_S / 2)
        if dead:
            ages = ", ".join(f"rank {r}: " + (f"silent for {now - beats[r][0]:.1f} s" if r in beats else "never seen")
                             for r in dead)
            return f"lost rank {', '.join(map(str, dead))} (no heartbeat; {ages})"
        low = min(c for _, c in beats.values())
        behind = [r for r, (_, c) in beats.items() if c == low and r != self.rank]
        if behind and low < self.count:
            return (f"rank {', '.join(map(str, behind))} is alive but stuck (at collective {low}, this rank "
                    f"{self.rank} at {self.count})")
        return None


def init(backend: str = "auto", timeout: float = 300.0) -> bool:
    """Start the default process group from torchrun's environment; False when not launched
    with several processes (WORLD_SIZE unset or 1).  ``backend``: auto (nccl with CUDA, else
    gloo), gloo or nccl; ``timeout``: seconds a collective may wait before failing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if world <= 1:
        return False
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"dist.backend must be auto, gloo or nccl, got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    store, rank, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout)))
    # keys of a restarted attempt apart from the last one's (whose addresses are stale)
    store = dist.PrefixStore(f"lowbit/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout))
    global _watch
    _watch = _Heartbeat(store, rank, world)
    atexit.register(shutdown)
    return True


def start_heartbeat() -> None:
    """Start the heartbeat for an already initialized default group (idempotent)."""
    global _watch
    if _watch is not None or not dist.is_initialized():
        return
    try:
        store = _get_default_store()
    except Exception:  # no store to write to: failures are reported without a diagnosis
        return
    _watch = _Heartbeat(store, dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    """Stop the heartbeat (waiting for its thread: a store call cut short at exit aborts the
    process) and destroy the process group."""
    global _watch
    if _watch is not None:
        _watch.stop.set()
        _watch.thread.join(timeout=5 * HEARTBEAT_S)
        _watch = None
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def guard(what: str):
    """Run a collective; on failure raise :class:`RankLostError` naming the lost rank(s)."""
    if _watch is not None:
        _watch.count += 1
    try:
        yield
    except RankLostError:
        raise
    except (RuntimeError, dist.DistError) as e:
        if _watch is None:
            raise
        why = _watch.diagnose()
        if why is None:  # every peer is alive and in step: an ordinary error (a wrong dtype, say)
            raise
        raise RankLostError(f"rank {_watch.rank}: {what} failed: {why}. Backend said: "
                            f"{(str(e).splitlines() or [''])[0][:300]}") from e


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1
