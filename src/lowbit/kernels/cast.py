"""The cast codec's kernels: a format's codes in one pass (optionally under OCP MX block scaling, the E8M0 exponents from each block's max in the same pass), and codes back to values."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import FloatFormat
from .blocks import _load4, _load_block, _pick, _rem, _store
from .common import BLOCK, WARPS, _output, _seed
from .philox import PHILOX_ROUNDS, block_words
from .rounding import _PTX, _code_constants, _max_nan, _pow2, _round_code, _sign_pair, _value_bits


@triton.jit
def _nibble_words(mag, b, Q: tl.constexpr):
    """Q 4-bit codes as Q/4 int16 words, the first in the low nibble: the magnitude codes ``mag``
    (3 bits each) shifted into place and the signs of the patterns ``b`` at bits 3, 7, 11 and 15,
    two values at a time (``_sign_pair`` of values 4w, 4w + 2 and of 4w + 1, 4w + 3).  No 4-bit
    format is fnuz (whose zero drops its sign)."""
    word = tl.sum(tl.reshape(mag, (Q // 4, 4)) << (tl.arange(0, 4) * 4)[None, :], axis=1)
    lo, hi = tl.split(tl.reshape(b, (Q // 4, 2, 2)))  # values 4w + 2i and 4w + 2i + 1
    b0, b2 = tl.split(lo)
    b1, b3 = tl.split(hi)
    return (word | _sign_pair(b0, b2) | (_sign_pair(b1, b3) << 4)).to(tl.int16)


@triton.jit
def _cast_encode_block(x_ptr, out_ptr, seed_ptr, pid, rem, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                       LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                       M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr,
                       NAN_CODE: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr,
                       FULL: tl.constexpr, FLAG: tl.constexpr):
    """One program's codes; returns, per offset of a quarter, Σ 0·x over the four values there when
    FLAG (else zeros): NaN where one is not finite (0·±inf and 0·NaN are NaN), 0 elsewhere — one
    float multiply-add per value, on the float pipe of a kernel bound by its integer work."""
    Q: tl.constexpr = BLOCK // 4
    offs = tl.arange(0, Q)
    x0, x1, x2, x3, r0, r1, r2, r3 = _load_block(x_ptr, seed_ptr, pid, rem, Q, FULL, MODE == 1, ROUNDS)
    bad = tl.zeros((Q,), tl.float32)
    for j in tl.static_range(4):
        x = _pick(j, x0, x1, x2, x3)
        b = x.to(tl.int32, bitcast=True)
        rnd = _pick(j, r0, r1, r2, r3) if MODE == 1 else b  # the rounding uses its low 30 bits at most
        c = _round_code(b, rnd, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE,
                        NAN_CODE, SIGN=WIDTH == 8)
        if FLAG:
            bad = x * 0.0 + bad
        if WIDTH == 8:
            _store(out_ptr + pid * BLOCK, c.to(tl.uint8), j * Q + offs, rem, FULL)
        else:  # four codes to an int16 word, the first in the low nibble
            _store(out_ptr + pid * (BLOCK // 4), _nibble_words(c, b, Q), j * (Q // 4) + tl.arange(0, Q // 4),
                   (rem + 3) // 4, FULL)
    return bad


@triton.jit
def _cast_encode_kernel(x_ptr, out_ptr, fin_ptr, n, seed_ptr, S: tl.constexpr, EMIN_FIELD: tl.constexpr,
                        LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr, SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr,
                        M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr,
                        NAN_CODE: tl.constexpr, FLAG: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr,
                        BLOCK: tl.constexpr):
    """8-bit codes one per byte; 4-bit codes four to an int16 word (low nibble first), packed in
    registers.  The block is read as four quarters, each drawing one word of every Philox counter
    of the program.  FLAG: the byte at ``fin_ptr`` (1 before the launch) is set to 0 where an
    input is not finite — a store only where one is, no reduction across the program."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        bad = _cast_encode_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF,
                                 OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK, True, FLAG)
    else:
        bad = _cast_encode_block(x_ptr, out_ptr, seed_ptr, pid, rem, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF,
                                 OVER_CODE, INF_CODE, NAN_CODE, WIDTH, ROUNDS, BLOCK, False, FLAG)
    if FLAG:  # only formats without a NaN code send whether the input was finite
        _clear_where(fin_ptr, bad != bad)


@triton.jit
def _zero_where(fin_ptr, hit):
    """``*fin_ptr = 0`` from every lane where the mask ``hit`` is set, by ``tl.store`` (the same
    byte from any number of lanes: the stores agree)."""
    zero = tl.zeros_like(hit).to(tl.int32)
    tl.store(fin_ptr + zero, zero.to(tl.uint8), mask=hit)


if _PTX:
    @triton.jit
    def _clear_where(fin_ptr, hit):
        """``_zero_where`` as a predicated byte store in inline PTX, in the layout ``hit`` already
        has.  (``tl.store`` through a pointer that is the same for every lane gives the store one
        value per lane, and moves the mask there through shared memory.)  The stochastic fp4
        encode: 764 against 751 Gelem/s on an H200."""
        ptr = tl.zeros_like(hit).to(tl.int64) + fin_ptr.to(tl.int64)
        tl.inline_asm_elementwise("{ .reg .pred p; setp.ne.s32 p, $1, 0; @p st.global.u8 [$2], 0; mov.u32 $0, 0; }",
                                  "=r,r,l", [hit.to(tl.int32), ptr], dtype=tl.int32, is_pure=False, pack=1)
else:
    _clear_where = _zero_where


@triton.jit
def _flag_nonfinite(fin_ptr, amax):
    """``*fin_ptr = 0`` from every lane whose |x| pattern ``amax`` is not finite's, by ``tl.store``:
    through ``_clear_where`` the stochastic MX encode ran 7% slower on an H200 (559 against 604
    Gelem/s)."""
    _zero_where(fin_ptr, amax >= 0x7F800000)


@triton.jit
def _cast_decode_kernel(c_ptr, fin_ptr, scale_ptr, out_ptr, n, M: tl.constexpr, EF: tl.constexpr,
                        BIAS: tl.constexpr, LOW_EXP: tl.constexpr, SPECIAL: tl.constexpr, TOP: tl.constexpr,
                        WIDTH: tl.constexpr, FLAG: tl.constexpr, KB: tl.constexpr, BLOCK: tl.constexpr):
    """Values of the codes; KB > 0: times the E8M0 scale 2^(e−127) of each block of KB values."""
    pid = tl.program_id(0).to(tl.int64)
    if WIDTH == 8:
        o = pid * BLOCK + tl.arange(0, BLOCK)
        c = tl.load(c_ptr + o, mask=o < n, other=0).to(tl.int32)
        v = _value_bits(c, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
    else:
        ob = pid * (BLOCK // 2) + tl.arange(0, BLOCK // 2)
        byte = tl.load(c_ptr + ob, mask=ob < (n + 1) // 2, other=0).to(tl.int32)
        lo = _value_bits(byte & 15, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
        hi = _value_bits(byte >> 4, M, EF, BIAS, LOW_EXP, SPECIAL, TOP)
        v = tl.reshape(tl.join(lo, hi), (BLOCK,))
        o = pid * BLOCK + tl.arange(0, BLOCK)
    if KB > 0:
        e = tl.load(scale_ptr + o // KB, mask=o < n, other=127).to(tl.int32)
        v = (v.to(tl.float32, bitcast=True) * _pow2(e - 127).to(tl.float32, bitcast=True)).to(tl.int32, bitcast=True)
    if FLAG:  # the input held NaN/inf: everything decodes to NaN
        v = tl.where(tl.load(fin_ptr) == 0, 0x7FC00000, v)
    tl.store(out_ptr + o, v.to(tl.float32, bitcast=True), mask=o < n)


@triton.jit
def _mx_encode_block(x_ptr, out_ptr, scale_ptr, pid, rem, nblocks, nbytes, seed_ptr, S: tl.constexpr,
                     EMIN_FIELD: tl.constexpr, LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr,
                     SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr, FNUZ: tl.constexpr, M: tl.constexpr,
                     EF: tl.constexpr, OVER_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr,
                     EMAX: tl.constexpr, MAXV: tl.constexpr, FIT: tl.constexpr, KB: tl.constexpr, WIDTH: tl.constexpr,
                     ROUNDS: tl.constexpr, BLOCK: tl.constexpr, FULL: tl.constexpr):
    """One program's codes and scales, a quarter (RQ whole scale blocks of KB values) at a time;
    returns each scale block's largest |x| pattern over the four quarters (NaN's where one is NaN:
    ≥ 0x7F800000 for a non-finite input)."""
    Q: tl.constexpr = BLOCK // 4
    RQ: tl.constexpr = Q // KB
    o = tl.arange(0, RQ)[:, None] * KB + tl.arange(0, KB)[None, :]
    x0, x1, x2, x3 = _load4(x_ptr + pid * BLOCK, rem, Q, 0.0, FULL, o=o)
    if MODE == 1:
        r0, r1, r2, r3 = block_words(seed_ptr, pid, Q, ROUNDS)
    else:
        r0 = tl.zeros((Q,), tl.int32)  # unused
        r1, r2, r3 = r0, r0, r0
    top = tl.zeros((RQ,), tl.int32)
    for j in tl.static_range(4):
        b = _pick(j, x0, x1, x2, x3).to(tl.int32, bitcast=True)
        # the pattern of max|x|, NaN where the block holds a NaN (patterns of non-negative floats order as values)
        amax = tl.reduce(tl.abs(b.to(tl.float32, bitcast=True)), 1, _max_nan).to(tl.int32, bitcast=True)
        e = (amax >> 23) - 127 - EMAX  # ⌊log₂ max|x|⌋ − EMAX where max|x| is normal
        if FIT:
            e += (amax.to(tl.float32, bitcast=True) > MAXV * _pow2(e).to(tl.float32, bitcast=True)).to(tl.int32)
        # EMAX ≥ 2: a block whose max is 0 or subnormal has e + 127 < 0 (the exponent 0 either way), and
        # e + 127 ≤ 253 for finite blocks, so 2^(127−e) is a normal float32
        e = tl.minimum(tl.maximum(e + 127, 0), 254)
        inv = (254 - e) << 23  # 2^(127−e)
        v = (b.to(tl.float32, bitcast=True) * inv.to(tl.float32, bitcast=True)[:, None]).to(tl.int32, bitcast=True)
        rnd = tl.reshape(_pick(j, r0, r1, r2, r3), (RQ, KB)) if MODE == 1 else v
        # |v| < 2^(EMAX + 2) for finite inputs (the codes of non-finite ones are never read: the flag)
        c = _round_code(v, rnd, S, EMIN_FIELD, LOW, LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE,
                        INF_CODE, NAN_CODE, BOUNDED=True, SIGN=WIDTH == 8)
        if WIDTH == 8:
            _store(out_ptr + pid * BLOCK + j * Q, c.to(tl.uint8), o, nbytes - pid * BLOCK - j * Q, FULL)
        else:  # four codes to an int16 word
            base = pid * (BLOCK // 4) + j * (Q // 4)
            _store(out_ptr + base, _nibble_words(c, v, Q), tl.arange(0, Q // 4), (nbytes + 1) // 2 - base, FULL)
        _store(scale_ptr + pid * (BLOCK // KB) + j * RQ, e.to(tl.uint8), tl.arange(0, RQ),
               nblocks - pid * (BLOCK // KB) - j * RQ, FULL)
        top = tl.maximum(top, amax)
    return top


@triton.jit
def _mx_encode_kernel(x_ptr, out_ptr, scale_ptr, fin_ptr, n, nblocks, nbytes, seed_ptr, S: tl.constexpr,
                      EMIN_FIELD: tl.constexpr, LOW: tl.constexpr, LOW_EXP: tl.constexpr, ADDER: tl.constexpr,
                      SUB: tl.constexpr, MAX_CODE: tl.constexpr, MODE: tl.constexpr,
                      FNUZ: tl.constexpr, M: tl.constexpr, EF: tl.constexpr, OVER_CODE: tl.constexpr,
                      INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, EMAX: tl.constexpr, MAXV: tl.constexpr,
                      FIT: tl.constexpr, KB: tl.constexpr, WIDTH: tl.constexpr, ROUNDS: tl.constexpr, BLOCK: tl.constexpr):
    """Block scaling (OCP MX) in one pass: per block of KB values the E8M0 exponent
    e = ⌊log₂ max|x|⌋ − EMAX + 127 (FIT: one more where max·2^(e−127) < max|x|; 0 for an all-zero
    block; clamped to [0, 254]), the codes of x·2^(127−e) rounded with saturation, and a flag per
    program: were all inputs finite.  The program reads its BLOCK values as four quarters of whole
    scale blocks (KB ≤ BLOCK/4), so value j·Q + i draws word j of Philox counter pid·Q + i, the
    stream of every stochastic kernel (``block_words``)."""
    pid = tl.program_id(0).to(tl.int64)
    rem = _rem(n, pid, BLOCK)
    if rem == BLOCK:
        top = _mx_encode_block(x_ptr, out_ptr, scale_ptr, pid, rem, nblocks, nbytes, seed_ptr, S, EMIN_FIELD, LOW,
                               LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE, EMAX,
                               MAXV, FIT, KB, WIDTH, ROUNDS, BLOCK, True)
    else:
        top = _mx_encode_block(x_ptr, out_ptr, scale_ptr, pid, rem, nblocks, nbytes, seed_ptr, S, EMIN_FIELD, LOW,
                               LOW_EXP, ADDER, SUB, MAX_CODE, MODE, FNUZ, M, EF, OVER_CODE, INF_CODE, NAN_CODE, EMAX,
                               MAXV, FIT, KB, WIDTH, ROUNDS, BLOCK, False)
    _flag_nonfinite(fin_ptr, top)


def _encode_warps(fmt: FloatFormat, rounding: str) -> int:
    """Warps per program of the cast encode: 4 for 4-bit codes and for stochastic rounding, else
    WARPS — the faster on an H200 (BENCHMARKS.md: stochastic e4m3 779 against 770 Gelem/s, e5m2
    747 against 731, fp4 751 against 697 with its finite flag)."""
    return 4 if fmt.code_bits == 4 or rounding == "stochastic" else WARPS


def cast_encode(x: torch.Tensor, fmt: FloatFormat, rounding: str, saturate: bool, generator=None, *,
                rounds: int = PHILOX_ROUNDS):
    """(packed codes, one byte: was every input finite — None for formats with a NaN code).  With
    the flag, the codes of non-finite inputs are unspecified: the packet decodes to NaN everywhere."""
    x = x.contiguous().reshape(-1)
    n, w = x.numel(), fmt.code_bits
    nbytes = (n * w + 7) // 8
    out = torch.empty(nbytes + (nbytes % 2 if w == 4 else 0), dtype=torch.uint8, device=x.device)
    flag = not fmt.has_nan
    fin = torch.ones(1, dtype=torch.uint8, device=x.device) if flag else out  # no flag: a pointer never written
    k = _code_constants(fmt, rounding, saturate, flagged=flag)
    seed = _seed(x, generator) if rounding == "stochastic" else x
    _cast_encode_kernel[(triton.cdiv(n, BLOCK),)](
        x, out if w == 8 else out.view(torch.int16), fin, n, seed, **k, FLAG=flag, WIDTH=w, ROUNDS=rounds,
        BLOCK=BLOCK, num_warps=_encode_warps(fmt, rounding))
    return out[:nbytes], (fin if flag else None)


def block_fusable(fmt, block: int) -> bool:
    """Whether ``cast_block_encode`` takes ``fmt`` with blocks of ``block`` values: formats whose
    largest value is at least 4 (every MX element format), blocks of a power of two up to BLOCK/4
    values (a quarter of a program holds whole blocks)."""
    return (isinstance(fmt, FloatFormat) and fmt.code_bits in (4, 8) and fmt.emax >= 2 and 2 <= block <= BLOCK // 4
            and block & (block - 1) == 0)


def cast_block_encode(x: torch.Tensor, fmt: FloatFormat, rounding: str, block: int, rule: str, generator=None, *,
                      rounds: int = PHILOX_ROUNDS):
    """Block-scaled (MX) codes in one pass: (packed codes of the zero-padded blocks, uint8 E8M0
    exponents, one byte: was every input finite) — the payload of ``ScaledFormat(fmt, "block",
    block, rule)`` with saturating rounding."""
    x = x.contiguous().reshape(-1)
    n = x.numel()
    nblocks = triton.cdiv(n, block)
    nbytes = fmt.nbytes(nblocks * block)
    w = fmt.code_bits
    out = torch.empty(nbytes + (nbytes % 2 if w == 4 else 0), dtype=torch.uint8, device=x.device)
    scales = torch.empty(nblocks, dtype=torch.uint8, device=x.device)
    grid = max(1, triton.cdiv(nblocks * block, BLOCK))
    fin = torch.ones(1, dtype=torch.uint8, device=x.device)
    seed = _seed(x, generator) if rounding == "stochastic" else x
    _mx_encode_kernel[(grid,)](
        x, out if w == 8 else out.view(torch.int16), scales, fin, n, nblocks, nbytes, seed,
        **_code_constants(fmt, rounding, True, flagged=True), EMAX=fmt.emax,
        MAXV=float(fmt.max), FIT=rule == "fit", KB=block, WIDTH=fmt.code_bits, ROUNDS=rounds, BLOCK=BLOCK,
        num_warps=WARPS)
    return out[:nbytes], scales, fin


def cast_decode(codes: torch.Tensor, fmt: FloatFormat, n: int, finite=None, out=None, scales=None,
                block: int = 0) -> torch.Tensor:
    """Values of n codes (NaN everywhere where ``finite`` is 0); with ``scales``, each block of
    ``block`` values times its E8M0 scale."""
    out = _output(n, codes.device, out)
    flag = finite if finite is not None else codes
    special = {"ieee": 1, "fn": 2, "fnuz": 3, "none": 0}[fmt.nan_style]
    m2 = fmt.man_bits if fmt.subnormals else 0
    _cast_decode_kernel[(triton.cdiv(n, BLOCK),)](
        codes, flag, scales if scales is not None else codes, out, n, M=fmt.man_bits, EF=fmt.exp_field_bits,
        BIAS=fmt.bias, LOW_EXP=fmt.emin - m2, SPECIAL=special, TOP=(1 << fmt.exp_bits) - 1, WIDTH=fmt.code_bits,
        FLAG=finite is not None, KB=block if scales is not None else 0, BLOCK=BLOCK, num_warps=WARPS)
    return out
