"""Encode+decode throughput of every compressor against the memory-bandwidth floor.

The floor for a codec is the fewest bytes an encode+decode must move: read the float32 tensor
(4 B), write the payload (b/8 B per coordinate), read it back (b/8 B) and write the float32
result (4 B); at the device-copy bandwidth measured in the same run.  Prints a table and writes
JSON.

    python benchmarks/compress.py                       # GPU if present (2^26 elements), else CPU (2^22)
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import device_name, timer, write_results  # noqa: E402

from lowbit import get_compressor  # noqa: E402

CODECS = {
    "identity": {},
    "cast fp8": {"format": "fp8"},
    "cast fp8 stochastic": {"format": "fp8", "rounding": "stochastic"},
    "cast fp4": {"format": "fp4"},
    "cast fp4 block": {"format": "fp4", "scaling": "block"},
    "cast fp4 block stochastic": {"format": "fp4", "scaling": "block", "rounding": "stochastic"},
    "cast fp8 block": {"format": "fp8", "scaling": "block"},
    "intsgd int8": {"alpha": 20.0, "bits": 8},
    "natural": {},
    "signsgd": {},
    "onebit": {},
    "qsgd s=16": {"levels": 16},
    "terngrad": {},
    "topk 1%": {"ratio": 0.01},
    "randk 1%": {"ratio": 0.01},
    "powersgd r=4": {"rank": 4},
}


def _codec_calls(name: str, opts: dict, x, g):
    """() → (encode, decode, bits per coordinate) of a codec's packet path on ``x`` (PowerSGD's as
    a 4096-row matrix)."""
    codec = get_compressor(name, **opts)
    t = x.reshape(4096, -1) if name == "powersgd" else x

    def calls():
        bits = codec.encode(t, generator=g).bits_per_coordinate
        return (lambda: codec.encode(t, generator=g)), codec.decode, bits

    return calls


def _ablation(x, g, rounds: int) -> list:
    """The stochastic kernels with ``rounds`` Philox rounds, called directly (the codecs use the
    kernels' constant): cast fp8, natural, QSGD s=16 (fixed-width codes; its norm computed once
    outside the timing, so that row is not comparable with the codec's, which computes it)."""
    from lowbit import get_format
    from lowbit.kernels import codecs_triton as K

    fp8 = get_format("fp8")
    norm = x.norm().reshape(1)
    lbits = get_compressor("qsgd", levels=16)._lbits
    n = x.numel()
    return [
        (f"cast fp8 stochastic, Philox-{rounds}", lambda: (
            lambda: K.cast_encode(x, fp8, "stochastic", False, g, rounds=rounds)[0],
            lambda c: K.cast_decode(c, fp8, n), 8.0)),
        (f"natural, Philox-{rounds}", lambda: (
            lambda: K.natural_encode(x, g, rounds=rounds), lambda es: K.natural_decode(*es, n), 9.0)),
        (f"qsgd s=16, Philox-{rounds}", lambda: (
            lambda: K.levels_encode(x, norm, 16, lbits, g, rounds=rounds),
            lambda c: K.levels_decode(c, norm, 16, lbits, n), 1.0 + lbits)),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--log2n", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds, best kept (default 3 on GPU, 1 on CPU)")
    ap.add_argument("--philox-rounds", type=int, default=0,
                    help="also time the stochastic kernels with this many Philox rounds (default: the kernels' own only)")
    ap.add_argument("--only", nargs="*", default=None, help="codec rows to time (labels as printed)")
    args = ap.parse_args(argv)
    dev = args.device
    n = 1 << (args.log2n or (26 if dev == "cuda" else 22))
    reps = args.reps or (20 if dev == "cuda" else 5)
    args.rounds = args.rounds or (3 if dev == "cuda" else 1)
    run = timer(dev, backlog=True)  # device time of back-to-back calls
    wall = timer(dev)  # as issued from Python, host dispatch included
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, device=dev, generator=g)
    y = torch.empty_like(x)
    cases = [(label, _codec_calls(label.split()[0], opts, x, g)) for label, opts in CODECS.items()
             if args.only is None or label in args.only]
    if dev == "cuda" and args.philox_rounds:  # ablation: the stochastic kernels with another Philox round count
        cases += _ablation(x, g, args.philox_rounds)
    best: dict = {}
    copy_s = float("inf")
    for _ in range(args.rounds):  # interleaved rounds, the best of each: robust to passing interference
        copy_s = min(copy_s, run(lambda: y.copy_(x), reps))
        for label, calls in cases:
            try:
                encode, decode, bits = calls()
                p = encode()
                times = (run(lambda: decode(encode()), reps), run(encode, reps), run(lambda: decode(p), reps))
                times += (wall(lambda: decode(encode()), reps) if dev == "cuda" else times[0],)  # CPU: the same
            except Exception as e:
                best[label] = {"name": label, "error": f"{type(e).__name__}: {e}"[:200]}
                continue
            old = best.get(label, {}).get("times", (float("inf"),) * 4)
            best[label] = {"bits": bits, "times": tuple(map(min, old, times))}
    bw = 8 * n / copy_s  # bytes/s, read + write
    rows = [{"name": "copy", "seconds": copy_s, "bytes_per_s": bw}]
    for label, r in best.items():
        if "error" in r:
            rows.append(r)
            continue
        bits, (s, enc_s, dec_s, wall_s) = r["bits"], r["times"]
        floor_s = (8 + 2 * bits / 8) * n / bw
        rows.append({"name": label, "bits_per_coordinate": bits, "seconds": s, "gelem_s": n / s / 1e9,
                     "floor_s": floor_s, "of_floor": floor_s / s, "encode_gelem_s": n / enc_s / 1e9,
                     "decode_gelem_s": n / dec_s / 1e9, "wall_gelem_s": n / wall_s / 1e9})
    k = max(1, n // 100)
    topk_s = run(lambda: torch.topk(x.abs(), k, sorted=False), reps)
    rows.append({"name": "peer: torch.topk(|x|, 1%) alone", "seconds": topk_s, "gelem_s": n / topk_s / 1e9,
                 "bits_per_coordinate": float("nan"), "floor_s": float("nan"), "of_floor": float("nan"),
                 "encode_gelem_s": float("nan"), "decode_gelem_s": float("nan"), "wall_gelem_s": float("nan")})
    dname = device_name(dev)
    print(f"\nencode+decode of {n:,} float32 on {dev} ({dname}); copy {bw / 1e12:.2f} TB/s (read+write)"
          f"; Gelem/s of encode+decode, then of encode and decode alone (device time of back-to-back calls)"
          f", and of encode+decode as issued from Python; best of {args.rounds} interleaved rounds of medians")
    print(f"{'codec':30} {'bits/coord':>10} {'Gelem/s':>9} {'% of floor':>10} {'encode':>8} {'decode':>8} {'wall':>8}")
    for r in rows[1:]:
        if "error" in r:
            print(f"{r['name']:30} error: {r['error']}")
        else:
            print(f"{r['name']:30} {r['bits_per_coordinate']:10.3f} {r['gelem_s']:9.3g} {100 * r['of_floor']:9.1f}%"
                  f" {r['encode_gelem_s']:8.3g} {r['decode_gelem_s']:8.3g} {r['wall_gelem_s']:8.3g}")
    write_results(args.out or f"bench-compress-{dev}.json", "compress", rows, device=dname, elements=n,
                  rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
