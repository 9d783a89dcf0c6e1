"""Throughput of lowbit.quantize against its peers, measured in one run.

Prints a table and writes JSON. Gelem/s = elements rounded per second (float32 in, float32 out,
8 bytes of memory traffic per element). Peers: the device copy (the bandwidth floor), torch's own
cast round trips (fp16, bf16, float8), ml_dtypes' round trip (CPU), and QPyTorch's
``float_quantize`` where the ``qtorch`` package imports.

    python benchmarks/quantize.py                      # GPU if present (2^28 elements), else CPU (2^24)
    python benchmarks/quantize.py --device cpu --out bench-quantize-cpu.json
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import device_name, timer, write_results  # noqa: E402

import lowbit  # noqa: E402

FORMATS = ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "float4_e2m1fn"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--log2n", type=int, default=None, help="elements = 2^log2n (28 on GPU, 24 on CPU)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON path (default bench-quantize-<device>.json)")
    ap.add_argument("--tune", action="store_true", help="also time the Triton kernel's block/warp choices")
    args = ap.parse_args(argv)
    dev = args.device
    log2n = args.log2n or (28 if dev == "cuda" else 24)
    reps = args.reps or (20 if dev == "cuda" else 5)
    n = 1 << log2n
    run = timer(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, device=dev, generator=g)
    y = torch.empty_like(x)
    rows: list[dict] = []

    def add(name, kind, fn):
        try:
            t = run(fn, reps)
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            rows.append({"name": name, "kind": kind, "error": f"{type(e).__name__}: {e}"[:200]})
            return
        rows.append({"name": name, "kind": kind, "seconds": t, "gelem_s": n / t / 1e9})

    add("copy (floor: 4 B read + 4 B written)", "floor", lambda: y.copy_(x))
    if args.tune and dev == "cuda":
        from lowbit.kernels import quantize_triton as qt

        chosen = (qt.BLOCK, qt.NUM_WARPS)
        for block in (1024, 2048, 4096, 8192):
            for warps in (4, 8, 16):
                qt.BLOCK, qt.NUM_WARPS = block, warps
                add(f"tune fp8 nearest block={block} warps={warps}", "tune", lambda: lowbit.quantize(x, "fp8"))
                add(f"tune fp8 stochastic block={block} warps={warps}", "tune",
                    lambda: lowbit.quantize(x, "fp8", "stochastic", generator=g))
        qt.BLOCK, qt.NUM_WARPS = chosen
    for fmt in FORMATS:
        add(f"lowbit {fmt} nearest", "lowbit", lambda f=fmt: lowbit.quantize(x, f))
        add(f"lowbit {fmt} stochastic", "lowbit", lambda f=fmt: lowbit.quantize(x, f, "stochastic", generator=g))
    for dt in ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"):
        add(f"torch {dt} round trip", "torch", lambda d=getattr(torch, dt): x.to(d).to(torch.float32))
    if dev == "cpu":
        import ml_dtypes
        import numpy as np

        xn = x.numpy()
        for fmt in ("float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "float4_e2m1fn", "bfloat16"):
            add(f"ml_dtypes {fmt} round trip", "ml_dtypes",
                lambda t=getattr(ml_dtypes, fmt): xn.astype(t).astype(np.float32))
    try:
        from qtorch.quant import float_quantize

        for fmt, (e, m) in {"float8_e4m3fn": (4, 3), "float4_e2m1fn": (2, 1)}.items():
            add(f"qtorch float_quantize e{e}m{m} nearest", "qtorch", lambda e=e, m=m: float_quantize(x, e, m, "nearest"))
            add(f"qtorch float_quantize e{e}m{m} stochastic", "qtorch", lambda e=e, m=m: float_quantize(x, e, m, "stochastic"))
    except Exception as e:
        rows.append({"name": "qtorch float_quantize", "kind": "qtorch", "error": f"not available: {type(e).__name__}: {e}"[:200]})

    floor = rows[0]["gelem_s"]
    fp8 = next((r for r in rows if r["name"] == "torch float8_e4m3fn round trip" and "gelem_s" in r), None)
    print(f"\n{n:,} float32 elements on {dev} ({device_name(dev)})")
    print(f"{'':44} {'Gelem/s':>9} {'× copy':>7} {'× torch fp8':>11}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:44} {'—':>9}  {r['error']}")
            continue
        r["vs_copy"] = r["gelem_s"] / floor
        r["vs_torch_fp8"] = r["gelem_s"] / fp8["gelem_s"] if fp8 else None
        rel = f"{r['vs_torch_fp8']:11.2f}" if fp8 else ""
        print(f"{r['name']:44} {r['gelem_s']:9.3g} {r['vs_copy']:7.2f} {rel}")
    out = args.out or f"bench-quantize-{dev}.json"
    write_results(out, "quantize", rows, device=device_name(dev), elements=n,
                  command="python benchmarks/quantize.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
