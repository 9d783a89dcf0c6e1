"""The cast codec's stochastic encode on a GPU, three choices at a time, against the copy floor:
how a 4-bit code is stored (two to a byte, or four to an int16 word with the signs placed two
values at a time, as shipped), warps per program (4 or 8),
and how the finite flag of a format without NaN is made (none; a byte per program reduced across
the program, then the minimum over the programs by a second kernel; or one byte set to 0 by a
store from every lane that reads a non-finite value, known from the max of the |x| patterns or
from Σ 0·x, NaN exactly where an x is not finite); and 2 or 4 blocks per program, one after the
other, against one.  Beside them: ``cast_encode`` as it ships, and the decode (for 4-bit
codes also a variant that reads rows of two bytes, checked bit for bit against it; its
+decode column pairs it with the shipped encode).  Every variant's codes are checked against ``cast_encode``'s before timing.
Prints a table, writes JSON.

    python scripts/tune_cast_encode.py --out cast-encode.json
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/benchmarks")
from common import device_name, rounding_input, write_results  # noqa: E402

from lowbit.formats import get_format  # noqa: E402
from lowbit.kernels import cast as kc  # noqa: E402
from lowbit.kernels.cast import _nibble_words  # noqa: E402
from lowbit.kernels.blocks import _load_block, _pick, _rem, _store  # noqa: E402
from lowbit.kernels.common import BLOCK, _seed  # noqa: E402
from lowbit.kernels.constants import _code_constants  # noqa: E402
from lowbit.kernels.rounding import _round_code, _value_bits  # noqa: E402

FLAGS = {0: "none", 1: "per program + amin", 2: "store from the lanes", 3: "store from the lanes, Σ0·x"}


@triton.jit
def _variant_block(x_ptr, out_ptr, seed_ptr, pid, rem, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                   LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, SUB: tl.constexpr,
                   MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr,
                   EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr,
                   WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr, FULL: tl.constexpr,
                   WORD: tl.constexpr, AMAX: tl.constexpr):  # AMAX: 0 none, 1 max of the |x| patterns, 2 Σ 0·x
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, MODE == 1, ROUNDS)
    amax = tl.zeros((Q,), tl.int32)
    bad = tl.zeros((Q,), tl.float32)
    for j in tl.static_range(4):
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        rnd = _pick(j, r0, r1, r2, r3)
        c = _round_code(b, rnd, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE,
                        INF_CODE, NAN_CODE, SIGN=not (WIDTH == 4 and WORD))
        if AMAX == 1:
            amax = tl.maximum(amax, b & 0x7FFFFFFF)
        elif AMAX == 2:
            bad = _pick(j, x0, x1, x2, x3) * 0.0 + bad
        if WIDTH == 8:
            _store(out_ptr + pid * BLOCK, c.to(tl.uint8), j * Q + offs, rem, FULL)
        elif WORD:
            _store(out_ptr.to(tl.pointer_type(tl.int16)) + pid * (BLOCK // 4), _nibble_words(c, b, Q),
                   j * (Q // 4) + tl.arange(0, Q // 4), (rem + 3) // 4, FULL)
        else:
            lo, hi = tl.split(tl.reshape(c, (Q // 2, 2)))
            _store(out_ptr + pid * (BLOCK // 2), (lo | (hi << 4)).to(tl.uint8), j * (Q // 2) + tl.arange(0, Q // 2),
                   (rem + 1) // 2, FULL)
    if AMAX == 2:  # NaN → a pattern above inf's, 0 → 0
        amax = tl.where(bad != bad, 0x7FC00000, 0)
    return amax


@triton.jit
def _variant_kernel(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                    LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, SUB: tl.constexpr,
                    MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr,
                    OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, FLAG: tl.constexpr,
                    WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr, WORD: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        amax = _variant_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE,
                              MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK, True, WORD,
                              2 if FLAG == 3 else int(FLAG > 0))
    else:
        amax = _variant_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE,
                              MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK, False, WORD,
                              2 if FLAG == 3 else int(FLAG > 0))
    if FLAG == 1:
        tl.store(fin_ptr + pid, (tl.max(amax, axis=0) < 0x7F800000).to(tl.uint8))
    elif FLAG >= 2:
        zero = tl.zeros_like(amax)
        tl.store(fin_ptr + zero, zero.to(tl.uint8), mask=amax >= 0x7F800000)


@triton.jit
def _blocks_kernel(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                   LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, SUB: tl.constexpr,
                   MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr,
                   OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, FLAG: tl.constexpr,
                   WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr, WORD: tl.constexpr,
                   BLOCKS: tl.constexpr):
    """The variant kernel with BLOCKS blocks per program (the same stream: block k keeps counter
    k·Q + i), one after the other; FLAG 0 (none) or 3 (Σ 0·x, stored from the lanes)."""
    for k in tl.static_range(BLOCKS):
        pid = tl.program_id(0).to(tl.int64) * BLOCKS + k
        rem = _rem(n, pid, BLOCK)
        if rem > 0:
            if rem == BLOCK:
                amax = _variant_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB,
                                      MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK,
                                      True, WORD, 2 if FLAG == 3 else 0)
            else:
                amax = _variant_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB,
                                      MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK,
                                      False, WORD, 2 if FLAG == 3 else 0)
            if FLAG == 3:
                zero = tl.zeros_like(amax)
                tl.store(fin_ptr + zero, zero.to(tl.uint8), mask=amax >= 0x7F800000)


@triton.jit
def _decode4_rows_kernel(c_ptr, fin_ptr, out_ptr, M: tl.constexpr, EF: tl.constexpr, BIAS: tl.constexpr,
                         LOW_EXP: tl.constexpr, SPECIAL: tl.constexpr, TOP: tl.constexpr, BLOCK: tl.constexpr):
    """The 4-bit decode read as rows of two bytes (four values, one 16-byte store), whole blocks
    only: the load's layout is the store's, so no exchange through shared memory (the shipped
    decode joins the two nibbles of a 1-D block, which Triton lays out through it)."""
    pid = tl.program_id(0).to(tl.int64)
    rows: tl.constexpr = BLOCK // 4
    ob = pid * (BLOCK // 2) + tl.arange(0, rows)[:, None] * 2 + tl.arange(0, 2)[None, :]
    byte = tl.load(c_ptr + ob).to(tl.int32)
    lo = _value_bits(byte & 15, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
    hi = _value_bits(byte >> 4, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
    v = tl.where(tl.load(fin_ptr) == 0, 0x7FC00000, tl.reshape(tl.join(lo, hi), (rows, 4)))
    o = pid * BLOCK + tl.arange(0, rows)[:, None] * 4 + tl.arange(0, 4)[None, :]
    tl.store(out_ptr + o, v.to(tl.float32, bitcast=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log2n", type=int, default=26)
    ap.add_argument("--formats", nargs="+", default=["fp4", "e5m2", "fp8"])
    ap.add_argument("--out", default="cast-encode.json")
    args = ap.parse_args(argv)
    n = 1 << args.log2n
    x, y, run, copy_s = rounding_input(n)
    rows = [{"name": "copy", "seconds": copy_s, "gelem_s": n / copy_s / 1e9, "of_floor": 1.0}]
    for name in args.formats:
        fmt = get_format(name)
        w, flag = fmt.code_bits, not fmt.has_nan
        k = _code_constants(fmt, "stochastic", False, flagged=flag)
        seed = _seed(x, torch.Generator(device="cuda").manual_seed(3))
        ref, fin = kc.cast_encode(x, fmt, "stochastic", False, torch.Generator(device="cuda").manual_seed(3))
        enc_floor, pair_floor = copy_s * (4 + w / 8) / 8, copy_s * (8 + w / 4) / 8
        dec_s = run(lambda: kc.cast_decode(ref, fmt, n, fin, out=y), 20)
        g = torch.Generator(device="cuda").manual_seed(3)
        shipped = run(lambda: kc.cast_encode(x, fmt, "stochastic", False, g), 20)

        def row(label, s, ok=True):
            rows.append({"name": f"{name} {label}", "seconds": s, "gelem_s": n / s / 1e9, "of_floor": enc_floor / s,
                         "pair_of_floor": pair_floor / (s + dec_s), "same_codes": ok})

        row("cast_encode as shipped", shipped)
        rows.append({"name": f"{name} decode", "seconds": dec_s, "gelem_s": n / dec_s / 1e9,
                     "of_floor": copy_s * (4 + w / 8) / 8 / dec_s})
        if w == 4 and n % BLOCK == 0:  # the decode's variant: rows of two bytes
            special = {"ieee": 1, "fn": 2, "fnuz": 3, "none": 0}[fmt.nan_style]
            z = torch.empty_like(y)

            def rows_decode():
                _decode4_rows_kernel[(n // BLOCK,)](ref, fin, z, M=fmt.man_bits, EF=fmt.exp_field_bits, BIAS=fmt.bias,
                                                    LOW_EXP=fmt.emin - fmt.man_bits, SPECIAL=special,
                                                    TOP=(1 << fmt.exp_bits) - 1, BLOCK=BLOCK, num_warps=8)

            rows_decode()
            kc.cast_decode(ref, fmt, n, fin, out=y)
            same = bool(torch.equal(z.view(torch.int32), y.view(torch.int32)))
            rd = run(rows_decode, 20)
            rows.append({"name": f"{name} decode, rows of two bytes", "seconds": rd, "gelem_s": n / rd / 1e9,
                         "of_floor": copy_s * (4 + w / 8) / 8 / rd, "pair_of_floor": pair_floor / (shipped + rd),
                         "same_codes": same})
        out = torch.empty(ref.numel() + ref.numel() % 2, dtype=torch.uint8, device="cuda")
        fins = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.uint8, device="cuda")
        for word in ((False, True) if w == 4 else (False,)):
            for warps in (4, 8):
                for fl in ((0, 1, 2, 3) if flag else (0,)):
                    def call():
                        f = torch.ones(1, dtype=torch.uint8, device="cuda") if fl >= 2 else fins
                        _variant_kernel[(triton.cdiv(n, BLOCK),)](x, out, f, n, seed, **k, FLAG=fl, WIDTH=w, ROUNDS=7,
                                                                 BLOCK=BLOCK, WORD=word, num_warps=warps)
                        return f.amin() if fl == 1 else f

                    call()
                    ok = bool(torch.equal(out[: ref.numel()], ref))
                    label = (f"{'int16 words' if word else 'bytes'}, {warps} warps, flag: {FLAGS[fl]}" if w == 4
                             else f"{warps} warps, flag: {FLAGS[fl]}")
                    row(label, run(call, 20), ok)
        for blocks in (2, 4):  # several blocks per program, the shipped layout otherwise
            fl = 3 if flag else 0
            warps = 4

            def multi():
                f = torch.ones(1, dtype=torch.uint8, device="cuda")
                _blocks_kernel[(triton.cdiv(n, BLOCK * blocks),)](x, out, f, n, seed, **k, FLAG=fl, WIDTH=w, ROUNDS=7,
                                                                  BLOCK=BLOCK, WORD=w == 4, BLOCKS=blocks,
                                                                  num_warps=warps)
                return f

            multi()
            ok = bool(torch.equal(out[: ref.numel()], ref))
            row(f"{'int16 words, ' if w == 4 else ''}{warps} warps, flag: {FLAGS[fl]}, {blocks} blocks a program",
                run(multi, 20), ok)
    print(f"{n:,} float32 on {device_name('cuda')}; copy {n / copy_s / 1e9:.0f} Gelem/s")
    print(f"{'stochastic encode':58} {'Gelem/s':>8} {'% floor':>8} {'+decode':>8} same")
    for r in rows[1:]:
        pair = f"{100 * r['pair_of_floor']:7.1f}%" if "pair_of_floor" in r else f"{'':8}"
        print(f"{r['name']:58} {r['gelem_s']:8.0f} {100 * r['of_floor']:7.1f}% {pair} {r.get('same_codes', '')}")
    write_results(args.out, "tune_cast_encode", rows, device=device_name("cuda"), elements=n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
