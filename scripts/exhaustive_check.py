"""Sweep every float32 bit pattern (2^32 of them) through lowbit.quantize on the GPU, per format,
and count mismatches against ml_dtypes' cast round trip (NaN payloads aside; NaN inputs of
NaN-less formats, where lowbit keeps NaN, counted apart) and against lowbit's torch path; for
formats with 8- or 4-bit codes also the fused cast codec (encode to packed codes, decode) against
the quantized values.

    python scripts/exhaustive_check.py                 # all 2^32 patterns, every ml_dtypes format
    python scripts/exhaustive_check.py --stride 4099   # a sparse sweep (for a quick look)

The ml_dtypes reference runs on a pool of CPU processes over shared memory while the GPU
computes; the result is a table and a JSON file of mismatch counts (goal: 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context, shared_memory

import importlib

import numpy as np
import torch

import lowbit
from lowbit import kernels

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from oracles import ML_DTYPES  # noqa: E402

if kernels.triton_available():
    from lowbit.kernels import codecs_triton as K

CHUNK = 1 << 26


def _patterns(start: int, count: int, stride: int) -> np.ndarray:
    return (np.arange(count, dtype=np.uint64) * stride + start).astype(np.uint32)


def _ref_worker(args):
    name, shm_name, start, count, stride, lo, hi = args
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        out = np.ndarray((count,), dtype=np.float32, buffer=shm.buf)
        x = _patterns(start + lo * stride, hi - lo, stride).view(np.float32)
        with np.errstate(all="ignore"):
            out[lo:hi] = x.astype(ML_DTYPES[name]).astype(np.float32)
    finally:
        shm.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stride", type=int, default=1, help="check every stride-th bit pattern")
    ap.add_argument("--formats", nargs="*", default=list(ML_DTYPES))
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="exhaustive.json")
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    total = (1 << 32) // args.stride
    qmod = importlib.import_module("lowbit.quantize")
    ctx = get_context("fork")
    pool = ctx.Pool(args.workers)
    shm = shared_memory.SharedMemory(create=True, size=CHUNK * 4)
    results = []
    try:
        for name in args.formats:
            fmt = lowbit.get_format(name)
            t0 = time.time()
            mism_ml = mism_torch = nan_kept = mism_codec = 0
            codec = dev == "cuda" and fmt.code_bits in (4, 8) and kernels.supports(fmt)
            examples = []
            for start_i in range(0, total, CHUNK):
                count = min(CHUNK, total - start_i)
                start = start_i * args.stride
                parts = max(1, args.workers)
                bounds = np.linspace(0, count, parts + 1).astype(int)
                job = pool.map_async(_ref_worker, [(name, shm.name, start, count, args.stride, int(a), int(b))
                                                   for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
                xb = torch.arange(count, dtype=torch.int64, device=dev) * args.stride + start
                xb = torch.where(xb >= 2**31, xb - 2**32, xb).to(torch.int32)
                x = xb.view(torch.float32)
                out = lowbit.quantize(x, fmt)
                # lowbit's torch path on the same device (the fallback when Triton is absent)
                alt = qmod._quantize_float(x, fmt, "nearest", False, None)
                both_nan = torch.isnan(out) & torch.isnan(alt)
                mism_torch += int(((out.view(torch.int32) != alt.view(torch.int32)) & ~both_nan).sum())
                if codec:  # encode to codes and decode: the quantized value, bit for bit
                    codes, fin = K.cast_encode(x, fmt, "nearest", False)
                    dec = K.cast_decode(codes, fmt, count)
                    same = (dec.view(torch.int32) == out.view(torch.int32)) | (torch.isnan(dec) & torch.isnan(out))
                    coded = torch.isfinite(x) | fmt.has_nan  # NaN-less formats flag inf/NaN input instead
                    mism_codec += int((~same & coded).sum())
                job.get()
                ref = torch.from_numpy(np.ndarray((count,), np.float32, buffer=shm.buf)[:count].copy()).to(dev)
                ok = torch.isnan(out) & torch.isnan(ref)
                kept = torch.isnan(x) & torch.isnan(out) & ~torch.isnan(ref)
                nan_kept += int(kept.sum())
                bad = (out.view(torch.int32) != ref.view(torch.int32)) & ~ok & ~kept
                nb = int(bad.sum())
                mism_ml += nb
                if nb and len(examples) < 5:
                    i = torch.nonzero(bad)[:5].reshape(-1)
                    examples += [(hex(int(xb[j]) & 0xFFFFFFFF), float(out[j]), float(ref[j])) for j in i.tolist()]
            row = {"format": name, "patterns": total, "mismatch_vs_ml_dtypes": mism_ml,
                   "mismatch_triton_vs_torch_path": mism_torch, "nan_inputs_kept_nan": nan_kept,
                   "mismatch_cast_codec": mism_codec if codec else None,
                   "examples": examples[:5], "seconds": round(time.time() - t0, 1), "device": dev}
            results.append(row)
            print(f"{name:20} patterns {total:>12,}  vs ml_dtypes {mism_ml:>6}  triton vs torch {mism_torch:>6}"
                  f"  NaN kept {nan_kept:>11,}  codec {mism_codec if codec else '-':>6}  {row['seconds']:6.1f}s",
                  flush=True)
    finally:
        pool.close()
        shm.close()
        shm.unlink()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "results": results}, f, indent=1)
    return 0 if all(r["mismatch_vs_ml_dtypes"] == 0 and r["mismatch_triton_vs_torch_path"] == 0
                    and not r["mismatch_cast_codec"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
