"""Bit packing on the CPU: ``lowbit.packing.pack`` of n codes of w bits against a copy of the same
codes (one read and one write of a byte per code: the floor of any pass over them) and, for
1-bit codes, numpy's ``packbits``, all measured in one run.

Prints a table and writes JSON. Gelem/s = codes packed per second.

    python benchmarks/packing.py --out bench-packing-cpu.json
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import device_name, timer, write_results  # noqa: E402

from lowbit.packing import pack  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=22)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--widths", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6, 7])
    ap.add_argument("--out", default="bench-packing-cpu.json")
    args = ap.parse_args(argv)
    n = 1 << args.log2n
    run = timer("cpu")
    g = torch.Generator().manual_seed(0)
    rows = []
    codes8 = torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8)
    copy_s = run(lambda: codes8.clone(), args.reps)
    rows.append({"name": "copy of the uint8 codes", "width": 8, "seconds": copy_s, "gelem_s": n / copy_s / 1e9,
                 "of_copy": 1.0})
    for w in args.widths:
        codes = torch.randint(0, 1 << w, (n,), generator=g, dtype=torch.uint8)
        s = run(lambda: pack(codes, w), args.reps)
        rows.append({"name": f"pack, {w}-bit codes", "width": w, "seconds": s, "gelem_s": n / s / 1e9,
                     "of_copy": copy_s / s})
        if w == 1:
            bits = codes.numpy().astype(bool)
            s = run(lambda: np.packbits(bits, bitorder="little"), args.reps)
            rows.append({"name": "peer: numpy packbits, 1-bit", "width": 1, "seconds": s, "gelem_s": n / s / 1e9,
                         "of_copy": copy_s / s})
    print(f"pack of {n:,} uint8 codes on {device_name('cpu')}, {torch.get_num_threads()} threads; median of "
          f"{args.reps}; × copy = the copy's time / this time")
    print(f"{'':34} {'Gelem/s':>8} {'× copy':>7}")
    for r in rows:
        print(f"{r['name']:34} {r['gelem_s']:8.3f} {r['of_copy']:7.2f}")
    write_results(args.out, "packing", rows, device=device_name("cpu"), n=n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
