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

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
import yaml


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
    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, obj) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=1, default=_jsonable, allow_nan=True).encode())

    def read_json(self, name: str):
        with open(self.path / name) as f:
            return json.load(f)

    def write_yaml(self, name: str, obj) -> None:
        atomic_write(self.path / name, yaml.safe_dump(obj, sort_keys=False).encode())

    def write_metrics(self, rows: list[dict]) -> None:
        import pandas as pd

        atomic_write(self.path / "metrics.csv", pd.DataFrame(rows).to_csv(index=False).encode())

    def metrics(self):
        import pandas as pd

        return pd.read_csv(self.path / "metrics.csv")

    def save_checkpoint(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.path / "checkpoint.pt", buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        p = self.path / "checkpoint.pt"
        return torch.load(p, weights_only=False) if p.exists() else None

    @property
    def done(self) -> bool:
        return (self.path / "summary.json").exists()

    def sub(self, label: str) -> "RunFolder":
        safe = "".join(c if c.isalnum() or c in "=,._-" else "_" for c in label)
        return RunFolder(self.path / "runs" / safe)


def environment() -> dict:
    import numpy

    import lowbit

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
