"""Run folders: where a run's results live, written atomically.

    <run>/config.yaml     the fully resolved configuration
    <run>/metrics.csv     one row per logged step (tidy; pandas.read_csv reads it)
    <run>/summary.json    final figures (and, for reproductions, the list ``claims``)
    <run>/env.json        versions and device
    <run>/checkpoint.pt   the latest checkpoint (a killed run resumes from it)
    <run>/figures/*.png
    <run>/runs/<label>/   one such folder per sub-run of a sweep

Every file is written to a temporary name in the same folder and renamed into place, so a run
killed at any moment leaves either the old or the new version of each file, never half of one.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

import lowbit
import numpy
import pandas as pd
import torch
import torch.distributed as dist
import yaml

from ..distributed import process_group as pg


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jsonable(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class RunFolder:
    """A run's folder.  In a run over several processes (torch.distributed) only rank 0 writes
    results; every rank writes its own checkpoint (``checkpoint.rank<r>.pt``, with the previous
    one kept), and a resume loads the newest step that every rank has."""

    def __init__(self, path):
        self.path = Path(path)
        self.rank, self.world = pg.rank(), pg.world_size()
        self.writer = self.rank == 0
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, obj) -> None:
        if not self.writer:
            return
        atomic_write(self.path / name, json.dumps(obj, indent=1, default=_jsonable, allow_nan=True).encode())

    def read_json(self, name: str):
        with open(self.path / name) as f:
            return json.load(f)

    def write_yaml(self, name: str, obj) -> None:
        if not self.writer:
            return
        atomic_write(self.path / name, yaml.safe_dump(obj, sort_keys=False).encode())

    def write_metrics(self, rows: list[dict]) -> None:
        if not self.writer:
            return
        atomic_write(self.path / "metrics.csv", pd.DataFrame(rows).to_csv(index=False).encode())

    def metrics(self):
        return pd.read_csv(self.path / "metrics.csv")

    def _ckpt(self, prev: bool = False) -> Path:
        if self.world == 1:
            return self.path / ("checkpoint.prev.pt" if prev else "checkpoint.pt")
        return self.path / f"checkpoint.rank{self.rank}{'.prev' if prev else ''}.pt"

    def save_checkpoint(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.world > 1 and self._ckpt().exists():
            os.replace(self._ckpt(), self._ckpt(prev=True))
        atomic_write(self._ckpt(), buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        p = self._ckpt()
        ck = torch.load(p, weights_only=False) if p.exists() else None
        if self.world == 1:
            return ck

        steps = [None] * self.world
        dist.all_gather_object(steps, ck["step"] if ck is not None else -1)
        target = min(steps)
        if target < 0:
            if max(steps) >= 0:
                raise RuntimeError(f"{self.path}: only some ranks have a checkpoint (steps {steps}); "
                                   "start the run afresh in a new folder")
            return None
        if ck["step"] != target:  # this rank saved once more before the run stopped: take the one before
            p = self._ckpt(prev=True)
            ck = torch.load(p, weights_only=False) if p.exists() else None
            if ck is None or ck["step"] != target:
                raise RuntimeError(f"{self.path}: rank {self.rank} has no checkpoint of step {target} (steps {steps})")
        return ck

    @property
    def done(self) -> bool:
        return (self.path / "summary.json").exists()

    def done_everywhere(self) -> bool:
        """Whether the run finished (rank 0's summary exists), agreed by every rank."""
        done = (self.path / "summary.json").exists() if self.writer else False
        if self.world == 1:
            return done

        flag = [done]
        dist.broadcast_object_list(flag, src=0)
        return bool(flag[0])

    def sub(self, label: str) -> "RunFolder":
        safe = "".join(c if c.isalnum() or c in "=,._-" else "_" for c in label)
        return RunFolder(self.path / "runs" / safe)


def environment() -> dict:
    env = {
        "lowbit": lowbit.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    return env


# -- several seeds -------------------------------------------------------------------------------------
LOG_SCALE = ("suboptimality",)  # quantities the figures show on a log scale: averaged geometrically


def mean_over_seeds(finals: list[dict]) -> dict:
    """One record from the same record of several seeds: each numeric entry's mean over the seeds
    (the geometric mean for log-scale quantities such as f(x) − f*, as the IntSGD figures average
    log suboptimality); other entries are the first seed's."""
    out = {}
    for key, first in finals[0].items():
        vals = [f.get(key) for f in finals]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        if not numeric or all(v == first for v in vals):
            out[key] = first
        elif key in LOG_SCALE and all(v > 0 for v in vals):
            out[key] = math.exp(sum(math.log(v) for v in vals) / len(vals))
        else:
            out[key] = sum(vals) / len(vals)
    return out


def summary_over_seeds(summaries: list[dict], seeds: list[int]) -> dict:
    """A run's summary from its seeds' summaries: numeric entries averaged (:func:`mean_over_seeds`),
    ``final_seeds`` the seeds' own final records, ``seeds`` the seed values."""
    out = mean_over_seeds(summaries)
    out["final"] = mean_over_seeds([s["final"] for s in summaries])
    out["final_seeds"] = [s["final"] for s in summaries]
    out["seeds"] = list(seeds)
    return out
