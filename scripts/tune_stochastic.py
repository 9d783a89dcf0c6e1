"""Launch shapes of the stochastic cast encode on a GPU: the production kernel at several
(BLOCK, num_warps), and a variant that indexes its block with 32-bit offsets from a 64-bit base
(fewer integer instructions per element in a kernel that is compute-bound).  The random stream is
independent of both (element e draws word e mod 4 of Philox counter e // 4), so every variant must
give today's codes bit for bit: checked before timing.  Also times ``lowbit.quantize(…,
rounding="stochastic")`` against the copy floor.  Prints a table, writes JSON.

    python scripts/tune_stochastic.py --out tune-stochastic.json
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/benchmarks")
from common import device_name, timer, write_results  # noqa: E402

import lowbit  # noqa: E402
from lowbit.formats import get_format  # noqa: E402
from lowbit.kernels import codecs_triton as ct  # noqa: E402


@triton.jit
def _encode_local(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                  SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                  M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr,
                  NAN_CODE: tl.constexpr, FLAG: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr,
                  BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * BLOCK
    rem = (n - start).to(tl.int32)
    loc = tl.arange(0, BLOCK // 4)[:, None] * 4 + tl.arange(0, 4)[None, :]
    m = loc < rem
    b = tl.load(x_ptr + start + loc, mask=m, other=0).to(tl.int32, bitcast=True)
    rnd = tl.reshape(ct._random_words(seed_ptr, pid, BLOCK // 4, ROUNDS), (BLOCK // 4, 4))
    c = ct._round_code(b, rnd, S, EMIN_FIELD, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE)
    if WIDTH == 8:
        tl.store(out_ptr + start + loc, c.to(tl.uint8), mask=m)
    else:
        word = tl.sum(c << (tl.arange(0, 4) * 4)[None, :], axis=1)
        lw = tl.arange(0, BLOCK // 4)
        tl.store(out_ptr + pid.to(tl.int64) * (BLOCK // 4) + lw, word.to(tl.int16), mask=lw < (rem + 3) // 4)
    if FLAG:
        tl.store(fin_ptr + pid, (tl.max(b & 0x7FFFFFFF, axis=None) < 0x7F800000).to(tl.uint8))


def launch(kernel, x, fmt, seed, block, warps):
    n, w = x.numel(), fmt.code_bits
    out = torch.empty(n if w == 8 else 2 * triton.cdiv(n, 4), dtype=torch.uint8, device=x.device)
    flag = not fmt.has_nan
    fin = torch.empty(triton.cdiv(n, block) if flag else 1, dtype=torch.uint8, device=x.device)
    k = ct._code_constants(fmt, "stochastic", False, flagged=flag)
    kernel[(triton.cdiv(n, block),)](x, out if w == 8 else out.view(torch.int16), fin, n, seed, **k, FLAG=flag,
                                     WIDTH=w, ROUNDS=ct.PHILOX_ROUNDS, BLOCK=block, num_warps=warps)
    return out[: (n * w + 7) // 8]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log2n", type=int, default=26)
    ap.add_argument("--out", default="tune-stochastic.json")
    args = ap.parse_args(argv)
    n = 1 << args.log2n
    x = torch.randn(n, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    x[:4096] *= 1e-3  # some values in the formats' subnormal ranges
    y = torch.empty_like(x)
    run = timer("cuda", backlog=True)
    copy_s = run(lambda: y.copy_(x), 20)
    seed = torch.tensor([12345], dtype=torch.int64, device="cuda")
    shapes = [(1024, 4), (2048, 4), (2048, 8), (4096, 4), (4096, 8), (4096, 16), (8192, 8), (8192, 16)]
    rows = [{"name": "copy", "seconds": copy_s, "gelem_s": n / copy_s / 1e9}]
    for name in ("fp8", "e5m2", "fp4"):
        fmt = get_format(name)
        ref = launch(ct._cast_encode_kernel, x, fmt, seed, ct.BLOCK, ct.WARPS)
        codes_floor = (4 + fmt.code_bits / 8) * n / (8 * n / copy_s)  # read 4 B, write b/8 B
        for label, kernel in (("production", ct._cast_encode_kernel), ("32-bit offsets", _encode_local)):
            for block, warps in shapes:
                got = launch(kernel, x, fmt, seed, block, warps)
                exact = bool(torch.equal(got, ref))
                s = run(lambda: launch(kernel, x, fmt, seed, block, warps), 20)
                rows.append({"name": f"{name} encode, {label}, BLOCK {block} x {warps} warps", "seconds": s,
                             "gelem_s": n / s / 1e9, "of_floor": codes_floor / s, "bit_exact": exact})
        for rounding in ("nearest", "stochastic"):
            s = run(lambda: lowbit.quantize(x, name, rounding), 20)
            rows.append({"name": f"{name} lowbit.quantize {rounding}", "seconds": s, "gelem_s": n / s / 1e9,
                         "of_floor": copy_s / s, "bit_exact": True})
    print(f"{n:,} float32 on {device_name('cuda')}; copy {n / copy_s / 1e9:.0f} Gelem/s")
    print(f"{'variant':60} {'Gelem/s':>8} {'% floor':>8} {'exact':>6}")
    for r in rows[1:]:
        print(f"{r['name']:60} {r['gelem_s']:8.0f} {100 * r['of_floor']:7.1f}% {str(r['bit_exact']):>6}")
    write_results(args.out, "tune_stochastic", rows, device=device_name("cuda"), elements=n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
