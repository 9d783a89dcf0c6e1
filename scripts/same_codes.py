"""Whether a kernel change keeps the stochastic codes: every float32 bit pattern (2^32) through this
tree's stochastic cast encode and through another lowbit tree's, on a GPU, with the same generator
seeds — every float format with 8- or 4-bit codes, saturating and not, and the MX block encode
(blocks of 32, finite patterns) for fp4 and e4m3.  Counts differing codes, flags and scales
(goal: 0), prints a table and writes JSON.

    mkdir prev && git archive HEAD~1 src/lowbit | tar -x -C prev
    python scripts/same_codes.py --against prev/src/lowbit
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from common import device_name, write_results  # noqa: E402

from lowbit.formats import FloatFormat, _REGISTRY  # noqa: E402
from lowbit.kernels import cast as this  # noqa: E402



def _import_other(path: str):
    """The cast kernels of the lowbit package at ``path``, imported as ``lowbit_other`` (the kernels
    import each other relatively, so a renamed copy stands beside this tree's)."""
    root = tempfile.mkdtemp()
    shutil.copytree(path, os.path.join(root, "lowbit_other"))
    sys.path.insert(0, root)
    from lowbit_other.kernels import cast as other

    return other


def _mismatches(a, b) -> int:
    """Differing entries of two encodes' outputs (tuples of tensors, None where a format has no flag)."""
    return sum(int((u != v).sum()) for u, v in zip(a, b) if u is not None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", required=True, help="the other tree's src/lowbit directory")
    ap.add_argument("--out", default="same-codes.json")
    ap.add_argument("--log2n", type=int, default=32, help="the first 2^log2n patterns (a smoke test: fewer)")
    ap.add_argument("--device", default="cuda", help="cpu: the kernels under TRITON_INTERPRET=1")
    args = ap.parse_args(argv)
    chunk, dev = 1 << min(args.log2n, 26), args.device
    other = _import_other(args.against)
    names = [k for k, v in _REGISTRY.items() if isinstance(v, FloatFormat) and v.code_bits in (4, 8)]
    rows, t0 = [], time.time()
    for name in names:
        fmt, bad = _REGISTRY[name], 0
        for c in range((1 << args.log2n) // chunk):
            bits = torch.arange(c * chunk, (c + 1) * chunk, device=dev, dtype=torch.int64) & 0xFFFFFFFF
            x = bits.to(torch.int32).view(torch.float32)
            for saturate in (False, True):
                codes = [m.cast_encode(x, fmt, "stochastic", saturate, torch.Generator(device=dev).manual_seed(c))
                         for m in (this, other)]
                bad += _mismatches(*codes)
            if name in ("float4_e2m1fn", "float8_e4m3fn"):
                xs = x[(bits & 0x7F800000) != 0x7F800000]
                blocks = [m.cast_block_encode(xs, fmt, "stochastic", 32, "floor",
                                              torch.Generator(device=dev).manual_seed(c)) for m in (this, other)]
                bad += _mismatches(*blocks)
        rows.append({"format": name, "mismatches": bad, "seconds": round(time.time() - t0, 1)})
        print(f"{name:20} {bad} mismatches over 2^{args.log2n} patterns ({time.time() - t0:.0f} s)", flush=True)
    write_results(args.out, "same_codes", rows, device=device_name(dev), against=args.against, patterns=1 << args.log2n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
