"""CPU passes compiled by ``torch.compile`` (inductor's C++ loops), for buffers large enough that
one fused loop pays for a one-time compilation (seconds, once per process; inductor caches the
code on disk).  Each has an eager twin in its codec that is the reference and the fallback: the
results are the same bits (tested).  ``LOWBIT_CPU_COMPILE=0`` turns them off; where compilation
fails (no C++ compiler, say) the eager path runs, with one warning."""

from __future__ import annotations

import functools
import os
import warnings

import torch

MIN_VALUES = 1 << 20  # below this the eager passes are cheap enough
_broken: set[str] = set()


def wanted(t: torch.Tensor) -> bool:
    """Whether a CPU buffer is large enough for the compiled passes (and they are on)."""
    return t.device.type == "cpu" and t.numel() >= MIN_VALUES and os.environ.get("LOWBIT_CPU_COMPILE", "1") != "0"


@functools.lru_cache(maxsize=None)
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def call(fn, *args):
    """``fn(*args)`` compiled, or None where compilation is unavailable (the caller then runs its
    eager path)."""
    if fn.__name__ in _broken:
        return None
    try:
        return _compiled(fn)(*args)
    except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
        _broken.add(fn.__name__)
        warnings.warn(f"lowbit: torch.compile of {fn.__name__} on the CPU failed ({type(e).__name__}: {e}); "
                      "running it eagerly", RuntimeWarning, stacklevel=2)
        return None


def fp4_pack(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Packed fp4 (e2m1) codes of a float32 vector of even length, two per byte, low nibble
    first: each code is the table's entry at x's top 16 bits with the sticky bit of its low 16
    (``lowbit.compress.cast._fp4_table``), in one loop instead of six passes."""
    i = x.view(torch.int32)
    idx = ((i >> 16) & 0xFFFF) | ((i & 0xFFFF) != 0).to(torch.int32)
    c = table[idx.long()].view(-1, 2)
    return (c[:, 0] | (c[:, 1] << 4)).to(torch.uint8)
