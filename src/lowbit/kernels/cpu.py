"""The CPU's fast paths: reused scratch buffers, and passes compiled by ``torch.compile``
(inductor's C++ loops) for buffers large enough that one fused loop pays for a one-time
compilation (seconds, once per process; inductor caches the code on disk).

Each compiled pass has an eager twin that is the reference and the fallback: the results are the
same bits (tested).  ``LOWBIT_CPU_COMPILE=0`` turns them off; where compilation fails (no C++
compiler, say) the eager path runs, with one warning; before torch 2.13 the eager paths always
run.  Random words come first, from one seed drawn from the caller's generator
(:mod:`lowbit.kernels.stream`), so a compiled pass consumes exactly the words of its eager twin."""

from __future__ import annotations

import functools
import os
import sys
import threading
import types
import warnings

import torch

_SCRATCH = threading.local()
LITTLE_ENDIAN = sys.byteorder == "little"


def scratch(n: int, dtype: torch.dtype, slot: int = 0) -> torch.Tensor:
    """A CPU buffer of ``n`` values of ``dtype`` for a temporary, kept per thread and reused: a
    fresh large allocation costs its page faults on every call, often more than the pass that
    fills it (the contents are overwritten by the caller; one buffer per dtype, slot and thread).
    Slots: 0–1 codec decodes, 2 a multi-tensor encode's scaled values, 3 sign bits, 4 a float64 copy
    (1-bit SGD's sums), 5 random words, 7 the bucket mean's addend, 8 the four words of each
    Philox counter and 9 the words past its last whole block (:func:`lowbit.kernels.stream.blocks`),
    10 + i message i's sign bits as bytes (natural compression's mean) or its 6-bit codes' halves
    (QSGD's mean)."""
    key = f"{dtype}/{slot}"
    buf = getattr(_SCRATCH, key, None)
    if buf is None or buf.numel() < n:
        buf = torch.empty(max(n, 1), dtype=dtype)
        setattr(_SCRATCH, key, buf)
    return buf[:n]


MIN_VALUES = 1 << 20  # below this the eager passes are cheap enough
# The loops are checked against the eager passes with torch 2.13; torch 2.11's compiler fails on
# some of them and rounds others differently, so older releases run the eager passes.
TORCH_OK = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 13)
_broken: set[str] = set()


def compiling() -> bool:
    """Whether the compiled passes are on (torch ≥ 2.13 and ``LOWBIT_CPU_COMPILE`` is not 0)."""
    return TORCH_OK and os.environ.get("LOWBIT_CPU_COMPILE", "1") != "0"


def wanted(t: torch.Tensor) -> bool:
    """Whether a CPU buffer is large enough for the compiled passes (and they are on)."""
    return t.device.type == "cpu" and t.numel() >= MIN_VALUES and compiling()


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


def own_code(fn):
    """A copy of ``fn`` with a code object of its own: torch.compile keeps its compilations per
    code object, at most 8 (``recompile_limit``), so a loop made once per format (its constants
    read from a module global) needs one each, or a ninth format falls back to Python."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


WORDS = object()  # :func:`by_blocks`: the random words' place among a loop's arguments


def by_blocks(fn, words: tuple, n: int, *args):
    """(fn on the whole blocks, fn on the tail) for a loop ``fn`` elementwise in its arguments of
    n values, given the random words as ``words`` = (head, tail) of
    :func:`lowbit.kernels.stream.blocks` and marked :data:`WORDS` among ``args``: each vector of
    n values is passed as its head (a 3-D view shaped like the words' head, which reads them in
    place) and then its tail; other arguments as they are.  The tail (fewer than 4096 values)
    runs compiled from :data:`LOOP_MIN` values, else eagerly; its result is None where there is
    none.  None where the head's loop cannot be compiled (the caller then runs its own passes)."""
    head, tail = words
    m = head.numel()

    def part(a, first: bool):
        if a is WORDS:
            return head if first else tail
        if isinstance(a, torch.Tensor) and a.dim() == 1 and a.numel() == n:
            return a[:m].view(head.shape) if first else a[m:]
        return a

    if (r := call(fn, *(part(a, True) for a in args))) is None:
        return None
    t = [part(a, False) for a in args]
    return r, (None if not tail.numel() else call(fn, *t) if tail.numel() >= LOOP_MIN else fn(*t))


EACH_MIN = 1 << 14  # below this a single torch reduction (a norm, a table gather) beats a compiled call
LOOP_MIN = 64  # below this a multi-pass formula runs eagerly (its compiled call then costs about as much)


def each_tensor(fn, flat: torch.Tensor, *args):
    """``fn(flat, *args)`` compiled, else (tiny tensors, or no compiler) eagerly: the same bits.
    A compiled call costs about 40 µs, the eager formulas (ten passes or so) 120 µs and more
    at any size (one thread)."""
    if flat.numel() >= LOOP_MIN:
        r = call(fn, flat, *args)
        if r is not None:
            return r
    return fn(flat, *args)


def sum_squares(v: torch.Tensor) -> torch.Tensor:
    """Σ v_i² of a float32 vector, accumulated in float64 (each square exact), in one loop:
    ``vector_norm(v, dtype=float64)²`` without its float64 copy of v (which makes torch's CPU
    norm about 20× slower).  The float64 sums of the two differ in their order of addition
    only, so their square roots rounded to float32 agree except where the float64 value lies
    within a few of its ulps of a float32 rounding boundary (about 1 in 10^7; torch's own result
    moves the same way with the thread count); tested against an exactly rounded sum."""
    return v.to(torch.float64).square().sum()


def sum_abs(v: torch.Tensor) -> torch.Tensor:
    """Σ|v_i| of a float32 vector, accumulated in float64 (each term exact), in one loop: an L1
    norm correctly rounded to float32 but for the rounding claim of :func:`sum_squares` (torch's
    CPU ``vector_norm(v, 1)`` accumulates in float32: 4·10⁻⁴ relative error on 2.4 M values)."""
    return v.to(torch.float64).abs().sum()


def signs_and_sums(v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """pos ← (v ≥ 0) as 0/1 bytes, and [Σx, Σ|x|, #{x ≥ 0}] in float64 of a float32 vector, in one
    loop: 1-bit SGD's sign bits and the sums of its two means, with the float64 rounding claim
    of :func:`sum_squares` (the float32 means agree with the eager sums' except within a few
    float64 ulps of a float32 rounding boundary)."""
    pos.copy_((v >= 0).to(torch.int32).to(torch.uint8))
    d = v.to(torch.float64)
    return torch.stack([d.sum(), d.abs().sum(), torch.where(v >= 0, 1.0, 0.0).to(torch.float64).sum()])


def fp4_pack(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Packed fp4 (e2m1) codes of a float32 vector of even length, two per byte, low nibble
    first: each code is the table's entry at x's top 16 bits with the sticky bit of its low 16
    (``lowbit.compress.cast._fp4_table``), in one loop instead of six passes."""
    i = x.view(torch.int32)
    idx = ((i >> 16) & 0xFFFF) | ((i & 0xFFFF) != 0).to(torch.int32)
    c = table[idx.long()].view(-1, 2)
    return (c[:, 0] | (c[:, 1] << 4)).to(torch.uint8)


def packed_words(w: torch.Tensor, width: int) -> torch.Tensor:
    """Four codes of ``width`` (2 or 6) bits, one per byte of each little-endian int32 of ``w``,
    packed into the low 4·width bits of an int32, the first code lowest: ``pack``'s bit order,
    by shifts and masks on whole words (each byte's code < 2^width, so no bits collide)."""
    mask = (1 << width) - 1
    out = w & mask
    for k in range(1, 4):
        out = out | ((w >> (k * (8 - width))) & (mask << (k * width)))
    return out


def packed_into(words: torch.Tensor, out: torch.Tensor, width: int) -> torch.Tensor:
    """``out`` ← the bytes of :func:`packed_words` of ``width``-bit codes (2: one byte per word,
    ``out`` of the words' length; 6: three bytes per word, low byte first, ``out`` of shape
    (words, 3)).  The compiled loops write into their output argument as given: a view taken
    inside the loop (``out.view(-1, 3).copy_(…)``) makes inductor write a fresh buffer and copy it
    (a 40 MB buffer's page faults and an extra pass: 3-9x slower)."""
    p = packed_words(words, width)
    if width == 2:
        return out.copy_(p.to(torch.uint8))
    return out.copy_(torch.stack([(p >> (8 * k)) & 255 for k in range(3)], 1).to(torch.uint8))


def packed2_into(words: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """:func:`packed_into` of 2-bit codes (the width a literal: see :data:`PACKED_INTO`)."""
    return packed_into(words, out, 2)


def six_bit_groups_into(words: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """:func:`packed_into` of 6-bit codes by groups of four words (16 codes, 12 bytes): ``words``
    of shape (groups, 4), ``out`` the little-endian int32 view of the bytes, shape (groups, 3).
    With P_0 … P_3 a group's 24-bit words, its three int32 are P_r ≫ 8r | P_(r+1) ≪ (24 − 8r),
    r = 0, 1, 2: the same bytes (tested) without a (words, 3) byte output, which inductor
    writes through an int32 temporary and a copy (2.5× slower)."""
    p = packed_words(words, 6)
    s = torch.arange(3, dtype=torch.int32) * 8
    return out.copy_((p[:, 0:3] >> s) | (p[:, 1:4] << (24 - s)))


# One compiled loop per width: torch.compile makes an int argument (or a closure's int) a symbol
# of the loop, so shifts by it and the masks built from it are computed at run time; an int that is
# a literal or a module global is a constant of the loop.
PACKED_INTO = {2: packed2_into}


def nibble_bytes(pairs: torch.Tensor) -> torch.Tensor:
    """Bytes c0 | c1 ≪ 4 of two 4-bit codes held as one little-endian int16 c0 + 256·c1."""
    return (pairs | (pairs >> 4)).to(torch.uint8)


def nibble_words_into(words: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (int32) ← the four bytes c0 | c1 ≪ 4 of the eight 4-bit codes, one per byte, of each
    little-endian int64 of ``words``: :func:`nibble_bytes` on whole words (int16 lanes, or a uint8
    output, keep inductor's loop from vectorizing: 6× slower)."""
    r = None
    for k in range(4):
        b = ((words >> (16 * k)) | (words >> (16 * k + 4))) & 0xFF
        r = b if r is None else r | (b << (8 * k))
    return out.copy_(r.to(torch.int32))


def six_bit_words(b: torch.Tensor) -> torch.Tensor:
    """The little-endian 24-bit words (int32) of packed 6-bit codes, three bytes each (a length
    that is a multiple of 3): four codes per word, the first in the low bits."""
    g = b.view(-1, 3).to(torch.int32)
    return g[:, 0] | (g[:, 1] << 8) | (g[:, 2] << 16)


def six_bit_halves(b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (int64, one per 24-bit word of packed 6-bit codes, three bytes each, four codes per
    word, the first in the low bits) ← the word's two 12-bit halves as the two int32 of the entry
    in memory order, codes 0–1 first: viewed as int32, entry p holds codes 2p and 2p + 1, the
    layout :func:`six_bit_pair_levels` reads without a gather."""
    g = b.view(-1, 3).to(torch.int64)
    w = g[:, 0] | (g[:, 1] << 8) | (g[:, 2] << 16)
    lo, hi = (w & 0xFFF, w >> 12) if LITTLE_ENDIAN else (w >> 12, w & 0xFFF)
    return out.copy_(lo | (hi << 32))


def six_bit_pair_levels(h: torch.Tensor, unit: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """QSGD's 6-bit codes decoded into ``out``, the int64 view (:func:`float_pairs`) of 2·len(h)
    float32: h[p] (int32, :func:`six_bit_halves`) holds codes 2p (bits 0–5) and 2p + 1 (bits
    6–11), each ±level·unit (sign bit 5, level bits 0–4; ``unit`` = norm/s, a 0-d float32) — the
    products and negation of the decode's table of code values, without the table or the
    unpacked codes."""
    first, second = h & 63, (h >> 6) & 63
    return out.copy_(float_pairs(*(signed_level(c, 32, unit) for c in (first, second))))


def signed_level(code: torch.Tensor, sign: int, unit: torch.Tensor) -> torch.Tensor:
    """±(code mod sign)·unit, negative where the sign bit ``sign`` (a power of two) is set."""
    level = (code & (sign - 1)).to(torch.float32) * unit
    return torch.where(code >= sign, -level, level)


def stochastic_integers(v: torch.Tensor, rnd: torch.Tensor) -> torch.Tensor:
    """``lowbit.quantize.round_integer(v, "stochastic")`` of a float32 vector given its random
    words ``rnd`` (int32 in [0, 2^31)): k = (sig ≫ extra + (r mod 2^sh)) ≫ sh with the sign
    applied after and |v| ≥ 2^23, ±inf and NaN kept — the eager formula, in one loop."""
    a = v.view(torch.int32) & 0x7FFFFFFF
    e = a >> 23
    sig = (a & 0x7FFFFF) | (e.clamp(max=1) << 23)
    sh = 150 - e.clamp(min=1)
    extra = (sh - 30).clamp(0, 31)  # sig < 2^24: a shift by 31 gives 0 as any larger one would
    sh = sh.clamp(1, 30)
    k = (((sig >> extra) + (rnd & ((1 << sh) - 1))) >> sh).to(torch.float32)
    k = torch.where(v < 0, -k, k)
    return torch.where(a >= (150 << 23), v, k)


def clamped_integers_into(t: torch.Tensor, alpha: torch.Tensor, rnd: torch.Tensor, lim: torch.Tensor,
                          out: torch.Tensor) -> torch.Tensor:
    """IntSGD's fixed-width integers into ``out`` (an integer dtype): ``round_integer(t·α,
    "stochastic")`` clamped to ±lim (NaN as 0, as torch's conversion gives), and returns whether
    every entry of t is finite (a 0-d bool: max|t| < inf, False for NaN), in one loop: the
    magnitude by :func:`capped_levels` (lim < 2^23), then the sign; α and lim 0-d float32 tensors
    (numbers passed as Python scalars were bound to the wrong symbols by torch 2.13's compiler)."""
    bits = (t * alpha).view(torch.int32)
    mag = capped_levels(bits & 0x7FFFFFFF, rnd, lim.to(torch.int32))
    out.copy_(torch.where(bits < 0, -mag, mag))
    return t.abs().amax() < float("inf")


def divided_into(ints: torch.Tensor, alpha: torch.Tensor, finite: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` ← k/α for integers k (``torch.div(ints, α)``'s IEEE division per value, α a 0-d
    float32), or NaN everywhere where the one-value flag ``finite`` is 0: IntSGD's decode, with
    its non-finite mark, in one vectorized loop and no read of the flag on the host."""
    return out.copy_(torch.where(finite != 0, ints.to(torch.float32) / alpha, float("nan")))


def table_mean(table: torch.Tensor, codes: list, n: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(Σ_i table[codes_i]) / n into ``out``, summed in list order: the mean of n messages of
    8-bit codes decoded by a 256-value table (the eager decode-and-add, in one loop; n a 0-d
    float32 so the division stays a division)."""
    acc = table[codes[0].to(torch.int32)]
    for c in codes[1:]:
        acc = acc + table[c.to(torch.int32)]
    return out.copy_(acc / n)


def capped_levels(bits: torch.Tensor, rnd: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """min(Int(a), top) for the patterns ``bits`` (int32) of a ≥ 0, Int the stochastic rounding of
    :func:`stochastic_integers` with the words ``rnd``, in int32 arithmetic: with e₁ = max(e, 1)
    for a's exponent field e, x = bits − (e₁ − 1)·2^23 is a's significand (the hidden bit included
    for normal a) and sh = 150 − e₁ the shift to the unit, so Int(a) = ((x ≫ (sh − 30)⁺) +
    (r mod 2^min(sh, 30))) ≫ min(sh, 30); ``top`` (0 < top < 2^23) for a ≥ 2^23 and +inf, 0 for NaN."""
    e1 = (bits >> 23).clamp(min=1)
    x = bits - ((e1 - 1) << 23)
    sh = 150 - e1
    sh30 = sh.clamp(1, 30)  # shifts are clamped where the value is discarded (a ≥ 2^23) too
    k = ((x >> (sh - sh30).clamp(0, 31)) + (rnd & ((1 << sh30) - 1))) >> sh30
    return torch.where(bits >= 0x4B000000, torch.where(bits > 0x7F800000, 0, top), torch.minimum(k, top))


def level_codes(u: torch.Tensor, safe: torch.Tensor, rnd: torch.Tensor, levels: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """QSGD's and TernGrad's codes (one per byte, not yet packed) of a float32 vector: level
    ξ = Int(|u|/safe · levels) by stochastic rounding with the words ``rnd`` (NaN → 0, clamped
    to [0, levels]), code = ξ + ``sign`` (2^lbits, the sign bit) where u < 0 and ξ > 0 — the
    eager passes' codes, in one loop of int32 arithmetic (:func:`capped_levels`); ``safe``,
    ``levels`` and ``sign`` 0-d float32 tensors (see :func:`clamped_integers_into`)."""
    a = u.abs() / safe * levels
    lev = capped_levels(a.view(torch.int32) & 0x7FFFFFFF, rnd, levels.to(torch.int32))  # a NaN may carry a sign
    return torch.where((u < 0) & (lev > 0), lev + sign.to(torch.int32), lev).to(torch.uint8)


def level_codes_into(u: torch.Tensor, safe: torch.Tensor, rnd: torch.Tensor, levels: torch.Tensor, sign: torch.Tensor,
                     out: torch.Tensor) -> torch.Tensor:
    """:func:`level_codes` written into ``out`` (a tensor's slice of a multi-tensor buffer's codes),
    with no fresh tensor and no copy."""
    return out.copy_(level_codes(u, safe, rnd, levels, sign))


def natural_fields(bits: torch.Tensor, rnd: torch.Tensor, exponent: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Natural compression of float32 patterns ``bits`` (int32) with the random words ``rnd``:
    exponent ← ⌊(|x|'s pattern + (r mod 2^23)) / 2^23⌋, the field of |x| rounded stochastically
    to a power of two (up with probability mantissa/2^23; subnormals to 0 or 2^−126; a carry past
    2^127 to inf), 0xFF kept for inf and NaN; negative ← the sign bit (0/1 bytes).  The values of
    ``quantize(x, pow2, "stochastic")``'s fields for the same words (tested), in one loop."""
    a = bits & 0x7FFFFFFF
    exponent.copy_(torch.where(a >= 0x7F800000, 0xFF, (a + (rnd & 0x7FFFFF)) >> 23).to(torch.uint8))
    negative.copy_((bits < 0).to(torch.int32).to(torch.uint8))
    return exponent


def natural_mean(exponents: list, signs: list, n: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(Σ_i decode_i) / n into ``out``, summed in list order: the mean of n natural-compression
    messages, each value ±2^(e − 127) (field e; 0 → 0, 255 → inf) with its sign from the 0/1
    bytes ``signs[i]`` (:data:`BIT_SPREAD`) — the float32 pattern (s ≪ 31) | (e ≪ 23), the
    values of the eager decode's table and ±1 product, in one loop (``n`` a 0-d float32)."""
    acc = None
    for e, s in zip(exponents, signs):
        v = ((s.to(torch.int32) << 31) | (e.to(torch.int32) << 23)).view(torch.float32)
        acc = v if acc is None else acc + v
    return out.copy_(acc / n)


def _bit_spread() -> torch.Tensor:
    """256 int64: byte b's bits, bit i as the 0/1 byte i of the int64 in memory order — the table
    by which :func:`rows_into` unpacks packed bits to 0/1 bytes, one 8-byte gather per packed byte
    (a loop that reads a value's bit as ``packed[k ≫ 3]`` gathers once per value: 2× slower)."""
    b = torch.arange(256, dtype=torch.int64)
    places = range(8) if LITTLE_ENDIAN else range(7, -1, -1)
    return sum(((b >> i) & 1) << (8 * p) for i, p in zip(range(8), places))


BIT_SPREAD = _bit_spread()


def rows_into(table: torch.Tensor, codes: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[i] = table[codes[i]]``: each byte of packed codes to its row of values (a 256 × k
    table, ``out`` of shape (bytes, k); for k = 2 pass both as int64 pairs,
    :func:`float_pairs`: one 8-byte gather per byte, 2× faster), in one loop."""
    return out.copy_(table[codes.to(torch.int32)])


def float_pairs(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Two float32 vectors as one int64 vector whose entry i is the 8 bytes of (first[i],
    second[i]) in memory order: a loop that writes two float32 values per index writes them
    into a float32 buffer viewed as int64 (``x.view(torch.int64)``).  Inductor writes an (m, 2)
    float32 output, or two stacked columns, through temporaries and a copy (2-8× slower)."""
    a, b = (first, second) if LITTLE_ENDIAN else (second, first)
    return (a.view(torch.int32).to(torch.int64) & 0xFFFFFFFF) | (b.view(torch.int32).to(torch.int64) << 32)


def pair_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two float32 vectors of int64 pairs (the inverse of :func:`float_pairs`)."""
    lo, hi = (x & 0xFFFFFFFF).to(torch.int32).view(torch.float32), (x >> 32).to(torch.int32).view(torch.float32)
    return (lo, hi) if LITTLE_ENDIAN else (hi, lo)


def as_pairs(t: torch.Tensor) -> torch.Tensor | None:
    """A contiguous float32 vector of even length at an 8-byte aligned offset, in a storage of a
    whole number of int64, as int64 pairs (:func:`float_pairs`); None where it is not one (the
    compiler's fake tensors fail on some int64 views of a storage of 8k + 4 bytes)."""
    if (t.dtype != torch.float32 or t.dim() != 1 or not t.is_contiguous() or t.numel() % 2 or t.storage_offset() % 2
            or t.untyped_storage().nbytes() % 8):
        return None
    return t.view(torch.int64)


def _levels_mean(codes: list, scales: list, index, inv_levels: torch.Tensor, n: torch.Tensor, out: torch.Tensor,
                 width: int) -> torch.Tensor:
    """(1/n)·Σ_i of n messages of QSGD's codes of ``width`` bits (sign bit width − 1, level bits
    below), two to an element of ``codes[i]`` (the first in the low bits), into ``out``, the int64
    pairs of the float32 values (:func:`float_pairs`), summed in list order: code c of element b
    of message i is ±(level·inv_levels)·s_i[index[b]] — the products of the decode, computed, not
    gathered; ``scales`` the messages' float32 per-tensor s_i, ``index`` each element's tensor
    (None: one tensor), ``inv_levels`` the decode's 1/s (0-d float32)."""
    acc = [None, None]
    for c, s in zip(codes, scales):
        c32 = c.to(torch.int32)
        sb = s[0] if index is None else s[index.to(torch.int32)]
        for h in range(2):
            v = signed_level((c32 >> (width * h)) & ((1 << width) - 1), 1 << (width - 1), inv_levels) * sb
            acc[h] = v if acc[h] is None else acc[h] + v
    return out.copy_(float_pairs(acc[0] / n, acc[1] / n))


def nibble_levels_mean(codes: list, scales: list, index, inv_levels: torch.Tensor, n: torch.Tensor,
                       out: torch.Tensor) -> torch.Tensor:
    """:func:`_levels_mean` of 4-bit codes, two to a byte."""
    return _levels_mean(codes, scales, index, inv_levels, n, out, 4)


def six_bit_levels_mean(halves: list, scales: list, index, inv_levels: torch.Tensor, n: torch.Tensor,
                        out: torch.Tensor) -> torch.Tensor:
    """:func:`_levels_mean` of 6-bit codes, two to an int32 (the halves of :func:`six_bit_halves`)."""
    return _levels_mean(halves, scales, index, inv_levels, n, out, 6)


def fp4_mean(codes: list, n: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(1/n)·Σ_i of n messages of fp4 (e2m1) codes, two to a byte (the first in the low nibble),
    into ``out``, the int64 pairs of the float32 values (:func:`float_pairs`), summed in list order:
    each code's value computed from its fields — sign bit 3, exponent e (bits 1–2), mantissa m
    (bit 0): (1 + m/2)·2^(e−1), and m/2 for e = 0 — not gathered from a table."""
    acc = [None, None]
    for c in codes:
        c32 = c.to(torch.int32)
        for h in range(2):
            code = (c32 >> (4 * h)) & 15
            e, m = (code >> 1) & 3, code & 1
            bits = torch.where(e == 0, m * 0x3F000000, ((e + 126) << 23) | (m << 22)) | ((code >> 3) << 31)
            v = bits.view(torch.float32)
            acc[h] = v if acc[h] is None else acc[h] + v
    return out.copy_(float_pairs(acc[0] / n, acc[1] / n))


def signed_residual(v: torch.Tensor, s: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """pos ← (v ≥ 0) as 0/1 bytes and v ← v − s·sign(v) in place, sign(v) = +1 where v ≥ 0, else
    −1: a scaled sign code's bits and error feedback's residual (``s`` a 0-d float32), in one loop
    (the comparison cast to int32, then to bytes: a bool output, or a bool→uint8 cast, keeps
    inductor from vectorizing it, 15× slower; ``where(v ≥ 0, 1, 0)`` blends int64 lanes: the loop
    takes 3.4 ms on 11.2 M values against 2.6, and 2.5 without the bits)."""
    pos.copy_((v >= 0).to(torch.int32).to(torch.uint8))
    return v.copy_(torch.where(v >= 0, v - s, v + s))


def rows_mean(codes: list, tables: list, index, n: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(Σ_i tables[i][256·index + codes[i]]) / n into ``out`` (shape (bytes, k)), summed in list
    order: the mean of n messages of packed codes, k to a byte, byte b of tensor index[b] decoded
    by rows 256·index[b] … of its message's table (tensors·256 × k; ``index`` None: one tensor;
    ``n`` a 0-d float32), in one loop.  For k = 2 pass the tables (tensors·256) and ``out``
    (bytes) as int64 pairs (:func:`float_pairs`): 2.5× faster."""
    rows = [c.to(torch.int32) if index is None else (index.to(torch.int32) << 8) | c.to(torch.int32) for c in codes]
    if tables[0].dtype == torch.int64:
        halves = [pair_halves(t[r]) for r, t in zip(rows, tables)]
        first, second = halves[0]
        for a, b in halves[1:]:
            first, second = first + a, second + b
        return out.copy_(float_pairs(first / n, second / n))
    acc = tables[0][rows[0]]
    for r, t in zip(rows[1:], tables[1:]):
        acc = acc + t[r]
    return out.copy_(acc / n)
