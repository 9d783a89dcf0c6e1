"""LIBSVM binary-classification datasets by name, read with scikit-learn's svmlight reader.

``load(name)`` → (A, y): a dense float64 feature matrix and labels in {−1, +1}.  Parsed arrays are
cached as ``arrays/<name>.npz`` in the data folder, keyed by the source file's checksum.

``mushrooms``: when the LIBSVM file is absent, it is built from the UCI Mushroom table
(``uci/agaricus-lepiota.data``) exactly as LIBSVM built it: attribute 11 (stalk-root, which has
missing values) dropped, each of the other 21 nominal attributes expanded into one binary feature
per observed value (8124 × 112, 21 ones per row), class e → −1, p → +1 (LIBSVM's 1/2 under the
slowdown reproduction's 2y − 3).  The columns are a permutation of LIBSVM's, which changes no
experiment here.
"""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .store import DataUnavailable, RemoteFile, data_dir, fetch, open_text, sha256_of

_BASE = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
_UCI_MUSHROOM = RemoteFile(
    "uci/agaricus-lepiota.data",
    "https://archive.ics.uci.edu/ml/machine-learning-databases/mushroom/agaricus-lepiota.data",
    "5f337a91aba07bec5caaad73decfce48dcc34b265e8fe864652699ef39a5178e",
)


@dataclass(frozen=True)
class LibsvmSet:
    name: str
    n_features: int
    sha256: str | None = None

    @property
    def remote(self) -> RemoteFile:
        return RemoteFile(f"libsvm/{self.name}", _BASE + self.name, self.sha256)


DATASETS: dict[str, LibsvmSet] = {
    s.name: s
    for s in [
        LibsvmSet("a5a", 123, "fa20124780812aad9a73e82cc01b3a99d7b1f282be7a535f6a42f3c6938bad35"),
        LibsvmSet("a5a.t", 123),
        LibsvmSet("a9a", 123),
        LibsvmSet("a9a.t", 123),
        LibsvmSet("w8a", 300),
        LibsvmSet("w8a.t", 300),
        LibsvmSet("mushrooms", 112),
        LibsvmSet("phishing", 68),
    ]
}


def names() -> list[str]:
    return sorted(DATASETS)


def _cached(key: str, source_sha: str, build):
    path = data_dir() / "arrays" / f"{key}.npz"
    if path.exists():
        try:
            z = np.load(path)
            if str(z["sha256"]) == source_sha:
                return z["A"], z["y"]
        except Exception:
            pass  # a damaged cache is rebuilt
    A, y = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, A=A, y=y, sha256=np.array(source_sha))
        tmp.replace(path)
    except OSError:
        pass  # a read-only data folder (CI's shared copy) only loses the cache
    return A, y


def _read_svmlight(path, n_features: int):
    from sklearn.datasets import load_svmlight_file  # 0.75 s to import: only where a file is read

    with open_text(path) as f:
        X, y = load_svmlight_file(io.BytesIO(f.read().encode()), n_features=n_features)
    return np.asarray(X.todense(), dtype=np.float64), y.astype(np.float64)


def mushrooms_from_uci(path) -> tuple[np.ndarray, np.ndarray]:
    with open_text(path) as f:
        df = pd.read_csv(f, header=None, dtype=str)
    if df.shape[1] != 23:
        raise ValueError(f"{path}: expected 23 columns (class + 22 attributes), got {df.shape[1]}")
    y = np.where(df[0].to_numpy() == "p", 1.0, -1.0)
    cols = [c for c in range(1, 23) if c != 11]
    blocks = []
    for c in cols:
        vals = sorted(df[c].unique())
        blocks.append(np.stack([(df[c] == v).to_numpy() for v in vals], 1))
    return np.concatenate(blocks, 1).astype(np.float64), y


def _labels_pm1(y: np.ndarray) -> np.ndarray:
    u = np.unique(y)
    if len(u) != 2:
        raise ValueError(f"expected two classes, got {u}")
    return np.where(y == u.max(), 1.0, -1.0)


def load(name: str, *, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, y) of a LIBSVM dataset: A dense float64 (N × d), y in {−1, +1}."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown LIBSVM dataset {name!r}.{hint} Known: {', '.join(names())}")
    ds = DATASETS[name]

    def from_svmlight(path):
        A, y = _cached(name, sha256_of(path), lambda: _read_svmlight(path, ds.n_features))
        return torch.from_numpy(A), torch.from_numpy(_labels_pm1(y))

    def from_uci(path):
        A, y = _cached("mushrooms-uci", sha256_of(path), lambda: mushrooms_from_uci(path))
        return torch.from_numpy(A), torch.from_numpy(y)

    sources = [(ds.remote, from_svmlight)] + ([(_UCI_MUSHROOM, from_uci)] if name == "mushrooms" else [])
    for allow in ([False, True] if download else [False]):  # local copies first, then downloads
        for remote, build in sources:
            try:
                return build(fetch(remote, download=allow))
            except DataUnavailable as e:
                last = e
    raise last
