"""Datasets: the shared real files, checksums, gzip copies, offline errors, synthetic data."""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.data import CorruptDataError, DataUnavailable, libsvm, synthetic
from lowbit.data import store

SHARED = Path(os.environ["LOWBIT_DATA"])
needs_shared = pytest.mark.skipif(not (SHARED / "libsvm" / "a5a").exists(), reason="shared data folder absent")


@needs_shared
def test_a5a_from_the_shared_folder():
    A, y = libsvm.load("a5a", download=False)
    assert A.shape == (6414, 123) and A.dtype == torch.float64
    assert int((y == 1).sum()) == 1569 and int((y == -1).sum()) == 4845
    assert set(torch.unique(A).tolist()) <= {0.0, 1.0}


@needs_shared
def test_mushrooms_built_from_the_uci_table():
    A, y = libsvm.load("mushrooms", download=False)
    assert A.shape == (8124, 112)
    assert (A.sum(1) == 21).all()
    assert int((y == 1).sum()) == 3916 and int((y == -1).sum()) == 4208  # p / e


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_DATA", str(tmp_path))
    monkeypatch.setenv("LOWBIT_OFFLINE", "1")
    (tmp_path / "libsvm").mkdir()
    return tmp_path


@needs_shared
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_file_is_refused_by_name(folder, damage):
    dst = folder / "libsvm" / "a5a"
    data = bytearray((SHARED / "libsvm" / "a5a").read_bytes())
    if damage == "flip":
        data[1000] ^= 0x01
    else:
        data = data[: len(data) // 2]
    dst.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=r"libsvm/a5a.*SHA-256"):
        libsvm.load("a5a")
    assert not (folder / "arrays" / "a5a.npz").exists()  # nothing derived from it was kept


@needs_shared
def test_gzip_copy_is_accepted_with_a_listed_checksum(folder):
    gz = folder / "libsvm" / "a5a.gz"
    with gzip.open(gz, "wb") as f:
        f.write((SHARED / "libsvm" / "a5a").read_bytes())
    (folder / "SHA256SUMS").write_text(f"{store.sha256_of(gz)}  libsvm/a5a.gz\n")
    A, y = libsvm.load("a5a")
    assert A.shape == (6414, 123)
    (folder / "SHA256SUMS").write_text("0" * 64 + "  libsvm/a5a.gz\n")
    with pytest.raises(CorruptDataError, match="a5a.gz"):
        libsvm.load("a5a")


def test_offline_without_a_copy_says_where_to_put_the_file(folder):
    with pytest.raises(DataUnavailable, match=r"w8a.*Download https://.*w8a.*save it as"):
        libsvm.load("w8a")
    with pytest.raises(ValueError, match="Did you mean 'a9a'"):
        libsvm.load("a9b")


def test_download_is_checked_and_remembered(folder, monkeypatch):
    monkeypatch.delenv("LOWBIT_OFFLINE")
    payload = b"+1 1:1 3:0.5\n-1 2:1\n"

    def fake(url, dest, timeout=60.0):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(payload)

    monkeypatch.setattr(store, "_download", fake)
    A, y = libsvm.load("phishing")
    assert A.shape == (2, 68) and y.tolist() == [1.0, -1.0]
    side = folder / "libsvm" / "phishing.sha256"
    assert side.exists()  # trust on first use: the checksum of what arrived is kept
    (folder / "libsvm" / "phishing").write_bytes(payload + b"+1 4:1\n")
    with pytest.raises(CorruptDataError, match="phishing"):
        libsvm.load("phishing")

    def failing(url, dest, timeout=60.0):
        raise OSError("network unreachable")

    monkeypatch.setattr(store, "_download", failing)
    with pytest.raises(DataUnavailable, match="network unreachable"):
        libsvm.load("a9a")


def test_synthetic_logistic_data():
    A, y = synthetic.logistic(500, 10, cond=100, seed=3)
    assert A.shape == (500, 10) and set(y.unique().tolist()) == {-1.0, 1.0}
    ev = torch.linalg.eigvalsh(A.T @ A / 500)
    assert 20 < float(ev[-1] / ev[0]) < 500
    A2, y2 = synthetic.logistic(500, 10, cond=100, seed=3)
    assert torch.equal(A, A2) and torch.equal(y, y2)
    As, ys = synthetic.logistic(200, 5, separable=True, seed=1)
    assert np.isfinite(As.numpy()).all()
