"""The data folder: where datasets live, how they arrive, and how they are checked.

The folder is ``$LOWBIT_DATA`` (default ``~/.cache/lowbit``), laid out by source:
``libsvm/<name>``, ``uci/<file>``, ``mnist/…``, ``cifar-10/…``.  A file may also be stored
gzip-compressed as ``<name>.gz``.

Every file is checked by SHA-256 before use, against (in this order) a ``SHA256SUMS`` file at the
folder's root (``<hash>  <relative path>`` lines), the checksum lowbit pins for it, or — for a
file whose upstream publishes none — the checksum recorded when lowbit downloaded it
(``<file>.sha256`` beside it).  A mismatch raises :class:`CorruptDataError` naming the file; the
file is never used.  Missing files are downloaded from upstream when possible; offline, a
:class:`DataUnavailable` error says where to put the file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class DataError(Exception):
    """Base class for data problems."""


class DataUnavailable(DataError, FileNotFoundError):
    """The file is not in the data folder and could not be downloaded."""


class CorruptDataError(DataError, ValueError):
    """A file's checksum does not match: it is truncated, altered or not what it claims to be."""


def data_dir() -> Path:
    return Path(os.environ.get("LOWBIT_DATA", "~/.cache/lowbit")).expanduser()


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the data folder
    url: str
    sha256: str | None = None  # pinned; None = recorded at download (trust on first use)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed_sums(root: Path) -> dict[str, str]:
    sums = root / "SHA256SUMS"
    out: dict[str, str] = {}
    if sums.exists():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def expected_sha(root: Path, rel: str, pinned: str | None) -> str | None:
    listed = _listed_sums(root).get(rel)
    if listed:
        return listed
    if pinned and not rel.endswith(".gz"):
        return pinned
    side = root / (rel + ".sha256")
    return side.read_text().split()[0] if side.exists() else None


def verify(path: Path, expected: str | None) -> str:
    got = sha256_of(path)
    if expected is not None and got != expected.lower():
        raise CorruptDataError(
            f"{path}: SHA-256 {got} does not match the expected {expected}; the file is truncated or "
            f"altered and was not used. Delete it and download it again.")
    return got


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(rf: RemoteFile, *, download: bool = True) -> Path:
    """Path of a checked copy of ``rf`` (plain or ``.gz``), downloading it if needed."""
    root = data_dir()
    for rel in (rf.path, rf.path + ".gz"):
        p = root / rel
        if p.exists():
            verify(p, expected_sha(root, rel, rf.sha256))
            return p
    dest = root / rf.path
    if download and os.environ.get("LOWBIT_OFFLINE") != "1":
        try:
            _download(rf.url, dest)
        except Exception as e:  # no network, HTTP error, …
            reason = f"download failed ({type(e).__name__}: {e})"
        else:
            got = verify(dest, rf.sha256)
            if rf.sha256 is None:  # trust on first use: remember what arrived
                (root / (rf.path + ".sha256")).write_text(f"{got}  {rf.path}\n")
            return dest
    else:
        reason = "downloads are off (LOWBIT_OFFLINE=1)" if download else "download=False"
    pin = f" (SHA-256 {rf.sha256})" if rf.sha256 else ""
    raise DataUnavailable(
        f"{rf.path} is not in the data folder {root} and {reason}. Download {rf.url}{pin} and save it "
        f"as {dest} (or {dest}.gz), or point LOWBIT_DATA at a folder that has it.")


def open_text(path: Path):
    """Open a plain or gzip-compressed text file."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    return open(path)
