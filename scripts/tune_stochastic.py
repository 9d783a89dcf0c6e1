"""Stochastic rounding against the memory limit on a GPU: ``lowbit.quantize(…, "stochastic")``
and the stochastic cast encode+decode as a fraction of the copy floor, beside nearest rounding and
beside the previous kernels (Triton's ``tl.randint4x`` with its two multiplies per product, 64-bit
block offsets; the quantize kernel at Philox-10 and the encode drawing word e mod 4 of counter
⌊e/4⌋ through a register transpose), all timed in the same run.

Before timing it checks that a stochastic encode decodes to ``lowbit.quantize``'s stochastic values
bit for bit for the same generator state (the kernels share one stream).  Prints a table, writes
JSON.

    python scripts/tune_stochastic.py --out stochastic.json
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/benchmarks")
from common import device_name, rounding_input, write_results  # noqa: E402

import lowbit  # noqa: E402
from lowbit.formats import get_format  # noqa: E402
from lowbit.kernels import blocks, codecs_triton as ct  # noqa: E402
from lowbit.kernels import quantize_triton as qt  # noqa: E402


@triton.jit
def _quantize_before(x_ptr, y_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr, LOW: tl.constexpr,
                     LOW_EXP: tl.constexpr, ADDER: tl.constexpr, MAX_BITS: tl.constexpr, OVER_BITS: tl.constexpr, INF_OUT: tl.constexpr,
                     FNUZ: tl.constexpr, MODE: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    Q: tl.constexpr = BLOCK // 4
    pid = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, Q)
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * Q + offs).to(tl.int32), ROUNDS)
    for j in tl.static_range(4):
        o = pid * BLOCK + j * Q + offs
        b = tl.load(x_ptr + o, mask=o < n, other=0).to(tl.int32, bitcast=True)
        r = blocks._pick(j, r0, r1, r2, r3).to(tl.int32, bitcast=True) & 0x7FFFFFFF
        y = qt._round_bits(b, r, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, MAX_BITS, OVER_BITS, INF_OUT, FNUZ, MODE)
        tl.store(y_ptr + o, y.to(tl.float32, bitcast=True), mask=o < n)


@triton.jit
def _encode_before(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                   LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                   M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr,
                   NAN_CODE: tl.constexpr, FLAG: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr,
                   BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    o = pid * BLOCK + tl.arange(0, BLOCK // 4)[:, None] * 4 + tl.arange(0, 4)[None, :]
    b = tl.load(x_ptr + o, mask=o < n, other=0).to(tl.int32, bitcast=True)
    r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), (pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)).to(tl.int32),
                                  ROUNDS)
    rnd = tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (BLOCK // 4, 4)).to(tl.int32, bitcast=True)
    c = ct._round_code(b, rnd & 0x7FFFFFFF, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF,
                       OVER_CODE, INF_CODE, NAN_CODE)
    if WIDTH == 8:
        tl.store(out_ptr + o, c.to(tl.uint8), mask=o < n)
    else:
        word = tl.sum(c << (tl.arange(0, 4) * 4)[None, :], axis=1)
        ow = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
        tl.store(out_ptr + ow, word.to(tl.int16), mask=ow < (n + 3) // 4)
    if FLAG:
        tl.store(fin_ptr + pid, (tl.max(b & 0x7FFFFFFF, axis=None) < 0x7F800000).to(tl.uint8))


def quantize_before(x, fmt, seed, y):
    k = qt._constants(fmt, "stochastic", False)
    _quantize_before[(triton.cdiv(x.numel(), qt.BLOCK),)](x, y, x.numel(), seed, **k, ROUNDS=10, BLOCK=qt.BLOCK,
                                                          num_warps=qt.NUM_WARPS)


def encode_before(x, fmt, seed, out, fin):
    n, w, flag = x.numel(), fmt.code_bits, not fmt.has_nan
    k = ct._code_constants(fmt, "stochastic", False, flagged=flag)
    _encode_before[(triton.cdiv(n, ct.BLOCK),)](x, out if w == 8 else out.view(torch.int16), fin, n, seed, **k,
                                                FLAG=flag, WIDTH=w, ROUNDS=ct.PHILOX_ROUNDS, BLOCK=ct.BLOCK,
                                                num_warps=ct.WARPS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log2n", type=int, default=26)
    ap.add_argument("--out", default="stochastic.json")
    args = ap.parse_args(argv)
    n = 1 << args.log2n
    x, y, run, copy_s = rounding_input(n)
    seed = torch.tensor([12345], dtype=torch.int64, device="cuda")
    rows = [{"name": "copy", "seconds": copy_s, "gelem_s": n / copy_s / 1e9, "of_floor": 1.0}]

    def row(name, s, floor_s):
        rows.append({"name": name, "seconds": s, "gelem_s": n / s / 1e9, "of_floor": floor_s / s})

    for name in ("fp8", "e5m2", "fp4"):
        fmt = get_format(name)
        w = fmt.code_bits
        codes, fin = ct.cast_encode(x, fmt, "stochastic", False, torch.Generator(device="cuda").manual_seed(3))
        dec = ct.cast_decode(codes, fmt, n, fin)
        q = lowbit.quantize(x, fmt, "stochastic", generator=torch.Generator(device="cuda").manual_seed(3))
        if not bool(((dec == q) | (torch.isnan(dec) & torch.isnan(q))).all()):
            raise SystemExit(f"{name}: the stochastic encode does not decode to lowbit.quantize's values")
        for rounding in ("nearest", "stochastic"):
            row(f"{name} lowbit.quantize {rounding}", run(lambda: lowbit.quantize(x, fmt, rounding), 20), copy_s)
        row(f"{name} quantize stochastic, before (Philox-10, tl.randint4x)", run(lambda: quantize_before(x, fmt, seed, y), 20),
            copy_s)
        enc_floor = copy_s * (4 + w / 8) / 8  # read 4 B, write w/8 B
        pair_floor = copy_s * (8 + w / 4) / 8  # encode, then decode: read w/8 B, write 4 B
        dec_s = run(lambda: ct.cast_decode(codes, fmt, n, fin, out=y), 20)
        for rounding in ("nearest", "stochastic"):
            enc_s = run(lambda: ct.cast_encode(x, fmt, rounding, False), 20)
            row(f"{name} encode {rounding}", enc_s, enc_floor)
            row(f"{name} encode+decode {rounding}", enc_s + dec_s, pair_floor)
        out = torch.empty(2 * triton.cdiv(n, 4) if w == 4 else n, dtype=torch.uint8, device="cuda")
        fins = torch.empty(triton.cdiv(n, ct.BLOCK), dtype=torch.uint8, device="cuda")
        enc_s = run(lambda: encode_before(x, fmt, seed, out, fins), 20)
        row(f"{name} encode stochastic, before (tl.randint4x, transpose)", enc_s, enc_floor)
        row(f"{name} encode+decode stochastic, before", enc_s + dec_s, pair_floor)
    print(f"{n:,} float32 on {device_name('cuda')}; copy {n / copy_s / 1e9:.0f} Gelem/s")
    print(f"{'kernel':62} {'Gelem/s':>8} {'% floor':>8}")
    for r in rows[1:]:
        print(f"{r['name']:62} {r['gelem_s']:8.0f} {100 * r['of_floor']:7.1f}%")
    write_results(args.out, "tune_stochastic", rows, device=device_name("cuda"), elements=n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
