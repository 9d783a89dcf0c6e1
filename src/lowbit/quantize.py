"""Rounding tensors onto number formats.

``quantize(x, fmt, rounding)`` returns a tensor of x's dtype and shape whose every value is
representable in ``fmt``.  The CPU path is vectorized integer arithmetic on the bit pattern of x;
CUDA float32 tensors go to a fused Triton kernel (:mod:`lowbit.kernels`) when Triton is present.

Rounding of a finite x with |x| inside the range, with grid step u(x) = 2^(max(⌊log₂|x|⌋, e_min) − M):

* ``"nearest"``: the nearest grid point, ties to the one with an even last mantissa bit
  (IEEE round-half-to-even).  With ``saturate=False`` this equals the ml_dtypes cast round trip
  ``x.astype(fmt).astype(float32)`` bit for bit, overflow and signed zero included.
* ``"stochastic"``: ⌊x/u⌋·u + u·Bernoulli(frac(x/u)), so E[q(x)] = x (unbiased).  The Bernoulli draw
  uses the exact discarded bits; only where more than 30 (float64: 62) bits are discarded are the
  lowest ones truncated, a bias below 2^−30 of one grid step.
* ``"zero"``: truncation toward zero; finite values beyond ±max become ±max (IEEE round-toward-zero).

Overflow follows the format (``FloatFormat.overflow``): ±inf, NaN, or ±max; ``saturate=True``
clamps finite inputs to ±max instead (±inf too, where the format has no inf; formats with an inf
keep ±inf).  NaN stays NaN, also for formats that have no NaN code
(ml_dtypes maps NaN to −0 there; lowbit keeps a NaN visible).  Formats without negative zero
(``fnuz``) map −0 to +0.  float16/bfloat16 inputs are rounded through float32 (exact) and cast
back; float64 inputs are rounded directly in float64 (no double rounding).

Gradients: on a tensor that requires them, ``quantize`` is differentiable by the straight-through
estimator (the gradient passes where x lies in the format's range and both x and q(x) are finite,
and is zero elsewhere); ``grad="cut"`` makes the result a constant instead.  Never a silent cut.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import kernels
from .kernels import cpu, stream
from .kernels.constants import _code_constants
from .formats import FloatFormat, IntFormat, get_format
from .scaling import ScaledFormat
from .ste import straight_through

__all__ = ["quantize", "round_integer", "draw_ahead", "straight_through", "scaled_quantize", "scaled_values",
           "native_casts", "ROUNDINGS", "GRADS"]

ROUNDINGS = ("nearest", "stochastic", "zero")


class _Bits:
    """Layout of an IEEE input dtype: integer view, mantissa bits, exponent bias."""

    def __init__(self, dtype: torch.dtype):
        if dtype == torch.float64:
            self.it, self.p, self.eb, self.emax_field, self.cap = torch.int64, 52, 1023, 2047, 62
        else:
            self.it, self.p, self.eb, self.emax_field, self.cap = torch.int32, 23, 127, 255, 30
        self.abs_mask = (1 << (self.p + (11 if dtype == torch.float64 else 8))) - 1
        self.sign_mask = -(1 << (63 if dtype == torch.float64 else 31))
        self.man_mask = (1 << self.p) - 1
        self.inf_bits = self.emax_field << self.p
        self.nan_bits = self.inf_bits | (1 << (self.p - 1))


def _check(x: torch.Tensor, rounding: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"quantize expects a floating-point tensor, got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"quantize supports float32/float64/float16/bfloat16, got {x.dtype}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


class _Drawn:
    """A chunk's slice of the words drawn for a whole vector, standing in for its generator."""

    __slots__ = ("words",)

    def __init__(self, words: torch.Tensor):
        self.words = words


def _on_stream(x: torch.Tensor, generator) -> bool:
    """Whether x's stochastic rounding draws lowbit's Philox words: float32 on the CPU, with a CPU
    generator (or the default one)."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and (generator is None or generator.device.type == "cpu")


def _random_bits(x: torch.Tensor, bits: _Bits, generator) -> torch.Tensor:
    """Random words in [0, 2^31) (float32 values) or [0, 2^62) (float64), one per value of x.  A
    CPU float32 tensor takes the words of lowbit's Philox stream (:func:`random_words`); the other
    cases draw from the generator's own stream (on the CPU, a Mersenne Twister per chunk)."""
    if isinstance(generator, _Drawn):
        return generator.words.view(x.shape)
    if _on_stream(x, generator):
        return random_words(x.numel(), generator).view(x.shape)
    high = 2**31 if bits.it == torch.int32 else 2**62
    if generator is not None and generator.device != x.device:
        r = torch.randint(0, high, x.shape, dtype=bits.it, device=generator.device, generator=generator)
        return r.to(x.device)
    return torch.randint(0, high, x.shape, dtype=bits.it, device=x.device, generator=generator)


# CPU: elementwise work on large tensors runs in cache-sized chunks on a small thread pool (torch
# ops release the GIL); stochastic rounding of float32 values draws the whole vector's words first
# (one seed, lowbit's Philox stream), that of float64 values seeds one generator per chunk from a
# base seed drawn from the caller's generator: the result does not depend on scheduling.
CHUNK = 1 << 17
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="lowbit")
        return _POOL


def _chunk_generators(generator):
    """i ↦ the generator of chunk i: seeded from one base seed drawn from ``generator``."""
    base = int(torch.randint(0, 2**62, (), generator=generator))
    return lambda i: torch.Generator().manual_seed((base + i * 0x9E3779B97F4A7C15) % 2**63)


def _elementwise(x: torch.Tensor, rounding: str, generator, fn) -> torch.Tensor:
    """Apply ``fn(flat_chunk, chunk_generator)`` over x; returns a tensor of x's shape."""
    flat = x.contiguous().reshape(-1)
    if x.device.type != "cpu":
        return fn(flat, generator).reshape(x.shape)
    n = flat.numel()
    if rounding == "stochastic" and _on_stream(flat, generator):
        words = random_words(n, generator)
        chunk_gen = lambda i: _Drawn(words[i * CHUNK : (i + 1) * CHUNK])  # noqa: E731
        generator = _Drawn(words)
    else:
        chunk_gen = _chunk_generators(generator) if rounding == "stochastic" else lambda i: None
    if n <= CHUNK:
        return fn(flat, generator).reshape(x.shape)
    out = torch.empty_like(flat)

    def work(i: int) -> None:
        lo = i * CHUNK
        out[lo : lo + CHUNK] = fn(flat[lo : lo + CHUNK], chunk_gen(i))

    list(_pool().map(work, range((n + CHUNK - 1) // CHUNK)))
    return out.reshape(x.shape)


def _draw_words(words: torch.Tensor, generator) -> torch.Tensor:
    """``words`` ← the first n words of lowbit's Philox stream (:mod:`lowbit.kernels.stream`) for
    one seed drawn from ``generator``, less their top bit: the words the Triton kernels draw for
    values 0 … n − 1 with that seed."""
    return stream.words(words, stream.draw_seed(generator))


def random_words(n: int, generator) -> torch.Tensor:
    """The int32 random words in [0, 2^31) of a CPU stochastic rounding of n float32 values, in one
    reused buffer: one seed drawn from ``generator``, then the stream's words for values 0 … n − 1
    (:func:`_draw_words`) — or the words :func:`draw_ahead` drew already from this generator's
    present state (then the generator is moved on exactly as the draw would have)."""
    if (words := _words_ahead(n, generator)) is not None:
        return words
    return _draw_words(cpu.scratch(n, torch.int32, 5), generator)


def random_blocks(n: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The words of :func:`random_words` (the same draw) as (head, tail): the words of the whole
    blocks of 4Q values, shaped (blocks, 4, Q), read where the Philox loop left them
    (:func:`lowbit.kernels.stream.blocks`), and the rest; for :func:`lowbit.kernels.cpu.by_blocks`
    (n ≥ 4Q)."""
    m = n - n % (4 * stream.Q)
    if (words := _words_ahead(n, generator)) is None:
        seed = stream.draw_seed(generator)
        if (b := stream.blocks(n, seed)) is not None:
            return b
        words = stream.words(cpu.scratch(n, torch.int32, 5), seed)
    return words[:m].view(-1, 4, stream.Q), words[m:]


def joined_words(blocks: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The words of :func:`random_blocks` in value order (a fresh vector)."""
    head, tail = blocks
    return torch.cat([head.reshape(-1), tail])


def _words_ahead(n: int, generator) -> torch.Tensor | None:
    """The words :func:`draw_ahead` drew for this generator's present state and n values, moving
    the generator on as their draw did; None where there are none (and n is remembered for the
    next :func:`draw_ahead`)."""
    ahead = _AHEAD.pop(generator, None) if generator is not None else None
    if generator is not None and generator.device.type == "cpu":
        _LAST_DRAW[generator] = n
    if ahead is not None:
        words, before, after = ahead.result()
        if words.numel() == n and torch.equal(generator.get_state(), before):
            generator.set_state(after)
            return words
    return None


class _PerGenerator:
    """A small map keyed by a generator's identity (torch.Generator is not weakly referable in
    every torch release), keeping the most recent ``cap`` generators."""

    def __init__(self, cap: int = 64):
        self.cap, self.items = cap, OrderedDict()

    def get(self, g, default=None):
        e = self.items.get(id(g))
        return e[1] if e is not None and e[0] is g else default

    def pop(self, g, default=None):
        e = self.items.pop(id(g), None)
        return e[1] if e is not None and e[0] is g else default

    def __setitem__(self, g, value) -> None:
        self.items[id(g)] = (g, value)
        self.items.move_to_end(id(g))
        while len(self.items) > self.cap:
            self.items.popitem(last=False)

    def __getitem__(self, g):
        e = self.items[id(g)]
        if e[0] is not g:
            raise KeyError(g)
        return e[1]

    def __contains__(self, g) -> bool:
        e = self.items.get(id(g))
        return e is not None and e[0] is g


# Words drawn ahead: generator → future of (words, the generator's state before, after the draw).
_AHEAD = _PerGenerator()
_AHEAD_BUFFERS = _PerGenerator()
_LAST_DRAW = _PerGenerator()
_AHEAD_THREAD: ThreadPoolExecutor | None = None


def draw_ahead(generator: torch.Generator, n: int | None = None) -> None:
    """Start drawing, on a background thread, the random words that the next CPU stochastic
    rounding of n float32 values from ``generator`` will use — while the caller waits for a
    network, say (a DDP hook between its encode and the next step's); n defaults to the size of
    the last such rounding from this generator (nothing is drawn if there was none).  The draw
    runs on a copy of the generator: ``generator`` itself is untouched, and the words are used only if, when they
    are asked for, the generator is still in the state they were drawn from and n is the same;
    otherwise they are dropped and drawn anew.  Either way the values are those of drawing then."""
    global _AHEAD_THREAD
    if generator is None or generator.device.type != "cpu":
        return
    n = _LAST_DRAW.get(generator) if n is None else n
    if not n:
        return
    with _POOL_LOCK:
        if _AHEAD_THREAD is None:
            _AHEAD_THREAD = ThreadPoolExecutor(1, thread_name_prefix="lowbit-ahead")
    before = generator.get_state()
    buf = _AHEAD_BUFFERS.get(generator)
    if buf is None or buf.numel() != n:
        buf = torch.empty(n, dtype=torch.int32)
        _AHEAD_BUFFERS[generator] = buf

    def draw():
        copy = torch.Generator().manual_seed(0)
        copy.set_state(before)
        _draw_words(buf, copy)
        return buf, before, copy.get_state()

    _AHEAD[generator] = _AHEAD_THREAD.submit(draw)


def _round_fixed(a, e, bits: _Bits, step_exp: int, rounding: str, rnd):
    """k = round(|x| / 2^step_exp) as integers, for |x| given by abs bits ``a`` and exponent field
    ``e``; exact for all |x| < 2^(step_exp + p + 1)."""
    sig = (a & bits.man_mask) | ((e > 0).to(bits.it) << bits.p)
    sh = (bits.eb + bits.p + step_exp) - e.clamp(min=1)
    if rounding == "stochastic":
        extra = (sh - bits.cap).clamp(min=0)
        sh = sh.clamp(1, bits.cap)
        sig = sig >> extra
        return (sig + (rnd & ((1 << sh) - 1))) >> sh
    sh = sh.clamp(1, bits.p + 2)
    if rounding == "zero":
        return sig >> sh
    return (sig + (1 << (sh - 1)) - 1 + ((sig >> sh) & 1)) >> sh


def _quantize_float(x: torch.Tensor, fmt: FloatFormat, rounding: str, saturate: bool, generator):
    """Round a contiguous 1-D float32/float64 tensor onto a FloatFormat (torch, any device)."""
    rnd = _random_bits(x, _Bits(x.dtype), generator) if rounding == "stochastic" else None
    return _round_float(x, fmt, rounding, saturate, rnd)


def _round_float(x: torch.Tensor, fmt: FloatFormat, rounding: str, saturate: bool, rnd, skip_empty: bool = True,
                 max_bits: int | None = None):
    """:func:`_quantize_float` given its random words ``rnd`` (or None); ``skip_empty=False``
    computes the subnormal branch even where no value needs it (the same result, no host read:
    the form ``torch.compile`` fuses into one loop, given ``max_bits`` = fmt.max_bits(x.dtype))."""
    bits = _Bits(x.dtype)
    b = x.view(bits.it)
    a = b & bits.abs_mask

    # Normal range of the format: round the bit pattern at bit s (the carry runs into the exponent).
    s = bits.p - fmt.man_bits
    if s == 0:
        res = a.clone()
    elif rounding == "nearest":
        res = ((a >> s) & 1).add_((1 << (s - 1)) - 1).add_(a).bitwise_and_(-(1 << s))
    elif rounding == "stochastic":
        res = (rnd & ((1 << s) - 1)).add_(a).bitwise_and_(-(1 << s))
    else:
        res = a & -(1 << s)

    # Below the smallest normal: a fixed grid of step Q = 2^(e_min − M) (or {0, 2^e_min} without
    # subnormals); also reached by input subnormals when the format's e_min is above the dtype's.
    emin_field = fmt.emin + bits.eb
    m2 = fmt.man_bits if fmt.subnormals else 0
    if emin_field >= 2 or not fmt.subnormals:
        low_mask = a < (emin_field << bits.p)
        if not skip_empty or bool(low_mask.any()):
            if rounding == "stochastic":
                k = _round_fixed(a, a >> bits.p, bits, fmt.emin - m2, rounding, rnd).to(x.dtype)
            else:  # |x|·2^(M−e_min) is exact; round (half to even) or truncate it
                y = x.abs().mul_(2.0 ** (m2 - fmt.emin))
                k = y.round_() if rounding == "nearest" else y.trunc_()
            low = k.mul_(2.0 ** (fmt.emin - m2)).view(bits.it)
            res = torch.where(low_mask, low, res)

    # Overflow. An input ±inf arrives here as the inf bit pattern (above max too) and then takes
    # the format's own rule: ±inf where it has inf, else ±max if saturating, else NaN.
    max_bits = fmt.max_bits(x.dtype) if max_bits is None else max_bits
    if saturate or rounding == "zero" or fmt.overflow == "saturate":
        over_val = max_bits
    else:
        over_val = bits.inf_bits if fmt.overflow == "inf" else bits.nan_bits
    if fmt.has_inf:
        inf_val = bits.inf_bits
    else:
        inf_val = max_bits if saturate or fmt.overflow == "saturate" else bits.nan_bits
    if over_val == max_bits and inf_val == max_bits:
        res.clamp_(max=max_bits)
    else:
        res = torch.where(res > max_bits, over_val, res)
        if inf_val != over_val:
            res = torch.where(a == bits.inf_bits, inf_val, res)

    sign = b & bits.sign_mask
    if not fmt.signed_zero:
        sign.masked_fill_(res == 0, 0)
    res.bitwise_or_(sign)
    out = torch.where(a > bits.inf_bits, b, res)  # NaN stays NaN (payload kept)
    return out.view(x.dtype)


# Exact native round trips on the CPU (checked against ml_dtypes in the tests); torch's float8_e4m3fn
# cast saturates instead of overflowing to NaN, so that format stays on lowbit's own path.
_native = threading.local()


@contextlib.contextmanager
def native_casts(enabled: bool):
    """Within the block, nearest rounding on the CPU onto float16, bfloat16 and torch's own float8
    formats takes (``enabled``, the default outside it) or skips torch's native casts, which give
    the same values: lowbit's own arithmetic then rounds them (a reference for the casts, and the
    path every other format takes).  Per thread."""
    before = getattr(_native, "on", True)
    _native.on = bool(enabled)
    try:
        yield
    finally:
        _native.on = before
_NATIVE_CPU = {
    get_format(name): getattr(torch, name)
    for name in ("float16", "bfloat16", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
}


def _bfloat16_round_trip(x: torch.Tensor) -> torch.Tensor:
    """float32 → bfloat16 → float32 on the CPU by ml_dtypes' cast (round half to even, exact),
    in 1 M-element chunks over the thread pool (the casts release the GIL)."""
    import ml_dtypes  # 0.5 s to import: only where bfloat16 is rounded on the CPU

    a = x.contiguous().reshape(-1).numpy()
    out = np.empty_like(a)
    step = 1 << 20

    def work(i: int) -> None:
        out[i : i + step] = a[i : i + step].astype(ml_dtypes.bfloat16).astype(np.float32)

    list(_pool().map(work, range(0, a.size, step)))
    return torch.from_numpy(out).reshape(x.shape)


def round_integer(x: torch.Tensor, rounding: str = "stochastic", *, generator=None) -> torch.Tensor:
    """Round every entry of a float32/float64 tensor to an integer (kept in x's dtype).

    ``"stochastic"``: ⌊t⌋ + Bernoulli(t − ⌊t⌋), unbiased (IntSGD's Int(·)); ``"nearest"``: half to
    even; ``"zero"``: truncation.  Values ≥ 2^p (already integers) are returned unchanged.
    """
    _check(x, rounding)
    if x.dtype in (torch.float16, torch.bfloat16):
        return round_integer(x.float(), rounding, generator=generator).to(x.dtype)
    if x.numel() == 0:
        return x.clone()
    bits = _Bits(x.dtype)

    def fn(v, gen):
        b = v.view(bits.it)
        a = b & bits.abs_mask
        e = a >> bits.p
        rnd = _random_bits(v, bits, gen) if rounding == "stochastic" else None
        k = _round_fixed(a, e, bits, 0, rounding, rnd).to(v.dtype)
        out = torch.where(v < 0, -k, k)
        big = e >= bits.eb + bits.p  # |x| >= 2^p: already an integer (or inf/NaN)
        return torch.where(big, v, out)

    if rounding == "stochastic" and x.device.type == "cpu":
        if x.dtype == torch.float32 and cpu.wanted(x):
            flat = x.contiguous().reshape(-1)
            words = random_words(flat.numel(), generator)
            k = cpu.call(cpu.stochastic_integers, flat, words)
            if k is None:  # no compiler: the same formula eagerly, on the words already drawn
                k = _stochastic_integers(flat, bits, None, words)
            return k.reshape(x.shape)
        return _elementwise(x, rounding, generator, lambda v, gen: _stochastic_integers(v, bits, gen))
    return _elementwise(x, rounding, generator, fn)


def clamped_stochastic_integers(x: torch.Tensor, alpha: float, lim: int, dtype: torch.dtype, *, generator=None):
    """``round_integer(x·α, "stochastic").clamp(−lim, lim).to(dtype)`` of a CPU float32 vector,
    the same values and draws, and whether x is all finite (a 0-d bool), in one compiled loop
    where :func:`lowbit.kernels.cpu.wanted` (else None: the caller runs its own passes)."""
    if not (x.dtype == torch.float32 and x.dim() == 1 and x.is_contiguous() and cpu.wanted(x)):
        return None
    blocks = random_blocks(x.numel(), generator)
    a_lim = torch.tensor([alpha, float(lim)], dtype=torch.float32)
    out = torch.empty(x.numel(), dtype=dtype)
    r = cpu.by_blocks(cpu.clamped_integers_into, blocks, x.numel(), x, a_lim[0], cpu.WORDS, a_lim[1], out)
    if r is not None:
        return out, r[0] if r[1] is None else r[0] & r[1]
    # no compiler: the eager passes, on the words already drawn
    k = _stochastic_integers(x * alpha, _Bits(torch.float32), None, joined_words(blocks))
    return out.copy_(k.clamp_(-lim, lim)), torch.isfinite(x).all()


def _stochastic_integers(v: torch.Tensor, bits: _Bits, generator, rnd=None) -> torch.Tensor:
    """:func:`round_integer`'s stochastic rounding of a 1-D chunk, bit for bit its formula
    (:func:`_round_fixed` with step 2^0: k = (sig ≫ extra + (r mod 2^sh)) ≫ sh, the sign applied
    after, |x| ≥ 2^p kept) with the same random draws, computed in place in four buffers instead
    of a fresh tensor per operation: on the CPU each temporary costs as much as the pass."""
    b = v.view(bits.it)
    a = b & bits.abs_mask
    big = int(a.max()) >= (bits.eb + bits.p) << bits.p if a.numel() else False  # |x| ≥ 2^p, inf or NaN
    keep = (a >= (bits.eb + bits.p) << bits.p) if big else None
    e = a >> bits.p
    rnd = _random_bits(v, bits, generator) if rnd is None else rnd
    h = e.clamp(max=1).bitwise_left_shift_(bits.p)  # the hidden bit of normal numbers
    sig = a.bitwise_and_(bits.man_mask).bitwise_or_(h)
    sh = torch.clamp(e, min=1, out=h).neg_().add_(bits.eb + bits.p)
    extra = torch.sub(sh, bits.cap, out=e).clamp_(min=0)
    sh.clamp_(1, bits.cap)
    sig.bitwise_right_shift_(extra)
    mask = extra.fill_(1).bitwise_left_shift_(sh).sub_(1)
    k = rnd.bitwise_and_(mask).add_(sig).bitwise_right_shift_(sh)
    out = k.to(v.dtype)
    torch.where(v < 0, torch.neg(out), out, out=out)
    if keep is not None:
        torch.where(keep, v, out, out=out)
    return out


def _quantize_int(x, fmt: IntFormat, rounding, generator):
    qmax = fmt.max
    r = round_integer(x.clamp(-qmax - 1, qmax + 1), rounding, generator=generator)
    return r.clamp(-qmax, qmax)  # NaN propagates through clamp


GRADS = ("ste", "cut")


def _keep(x: torch.Tensor, q: torch.Tensor, fmt, scaling) -> torch.Tensor | None:
    """What the backward of a scaled rounding needs (x and q finite), computed in the forward;
    None without scaling, where |x| ≤ max, read from x in the backward, decides alone."""
    return None if scaling is None else torch.isfinite(x) & torch.isfinite(q)


class _StraightThrough(torch.autograd.Function):
    """quantize with :func:`straight_through` as its gradient (the output itself is not saved, so
    it may be modified in place)."""

    @staticmethod
    def forward(ctx, x, fmt, rounding, saturate, generator, scaling, block):
        q = _quantize(x, fmt, rounding, saturate, generator, scaling, block)
        q = q.detach() if q._is_view() else q  # a reshaped temporary: no view of it leaves the function
        keep = _keep(x, q, fmt, scaling)
        ctx.save_for_backward(x if keep is None else keep)
        ctx.spec = (fmt, keep is not None)
        return q

    @staticmethod
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        fmt, masked = ctx.spec
        g = straight_through(grad, saved, fmt, keep=saved if masked else None)
        return g, None, None, None, None, None, None


def quantize(
    x: torch.Tensor,
    fmt,
    rounding: str = "nearest",
    *,
    saturate: bool = False,
    generator: torch.Generator | None = None,
    scaling: str | None = None,
    block: int = 32,
    grad: str = "ste",
) -> torch.Tensor:
    """Round ``x`` onto the format ``fmt`` (a name, alias, ``e{E}m{M}`` string or format object).

    Args:
        x: float32, float64, float16 or bfloat16 tensor of any shape and strides, CPU or CUDA.
        fmt: the target format.
        rounding: ``"nearest"`` (half to even), ``"stochastic"`` (unbiased) or ``"zero"``.
        saturate: clamp finite values beyond ±max to ±max instead of the format's overflow rule.
        generator: torch.Generator for stochastic rounding (fixed seed → identical output).
        scaling: ``None`` (values as they are), ``"tensor"`` (one float32 scale per tensor mapping
            max|x| to the format's max) or ``"block"`` (a shared power-of-two scale per block of
            ``block`` values along the last dimension, as in the OCP MX formats); see
            :mod:`lowbit.scaling`.

        grad: how gradients flow through the rounding when ``x`` requires them: ``"ste"`` (the
            straight-through estimator: passed unchanged inside the format's range, zero where the
            value overflowed, saturated or was not finite; see :class:`_StraightThrough`) or
            ``"cut"`` (the result is a constant: no gradient reaches ``x``).

    Returns:
        a new tensor of x's dtype and shape.
    """
    _check(x, rounding)
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
    fmt = get_format(fmt)
    if generator is None and torch.compiler.is_compiling():
        if _fusable(fmt, rounding, scaling, saturate) and x.dtype == torch.float32:  # fused by inductor
            if grad == "ste":
                return FusedRound.apply(x, fmt.name, None)
            return fused_round(x.detach(), fmt.name)
        if _triton_op(x, fmt, rounding, scaling):  # the Triton kernel itself as the operator
            return torch.ops.lowbit.quantize_triton(x if grad == "ste" else x.detach(), fmt.name, rounding, saturate)
        # one opaque operator in the graph
        name = fmt.name if get_format(fmt.name) is fmt else None
        if name is None:
            raise ValueError(f"under torch.compile, quantize takes a registered format name; {fmt!r} is not one")
        op = torch.ops.lowbit.quantize if grad == "ste" else torch.ops.lowbit.quantize_cut
        return op(x, name, rounding, saturate, scaling or "", block)
    if grad == "ste" and x.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(x, fmt, rounding, saturate, generator, scaling, block)
    return _quantize(x.detach(), fmt, rounding, saturate, generator, scaling, block)


# -- under torch.compile: float8 rounding as torch operations that inductor fuses -----------------------
# Rounding to nearest onto a float8 format is torch's own dtype conversion plus lowbit's overflow
# rule, so a compiled model gets it fused into the neighbouring kernels (a batch norm's loads, say)
# instead of a separate pass over memory.  Only float8: inductor drops a float16/bfloat16 round trip
# (it computes in float32), so those keep the opaque operator below.
# The fnuz variants are left out: Triton converts them in software on NVIDIA GPUs, not bit for bit.
_FUSABLE = {name: getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)}


def _fusable(fmt, rounding: str, scaling, saturate: bool = False) -> bool:
    return fmt is not None and getattr(fmt, "name", None) in _FUSABLE and rounding == "nearest" and scaling is None \
        and not saturate and get_format(fmt.name) is fmt


def fused_round(x: torch.Tensor, name: str) -> torch.Tensor:
    """x (float32) rounded to nearest-even onto the float8 format ``name`` by torch's conversion,
    with the format's overflow rule: |x| past the largest value's rounding boundary (ties to the
    even neighbour; ±inf too) gives ±inf where the format has infinities, else NaN — conversions may
    saturate instead (the GPU's ``cvt …satfinite``).  Bit for bit :func:`quantize` (tested)."""
    fmt = get_format(name)
    half = 2.0 ** (fmt.emax - fmt.man_bits - 1)  # half a step at the top binade
    top_even = round((fmt.max / 2.0**fmt.emax - 1) * 2**fmt.man_bits) % 2 == 0
    a = x.abs()
    over = a > fmt.max + half if top_even else a >= fmt.max + half  # false for NaN
    q = x.to(_FUSABLE[name]).to(x.dtype)
    wide = torch.copysign(torch.full_like(x, float("inf")), x) if fmt.has_inf else torch.full_like(x, float("nan"))
    return torch.where(over, wide, q)


if torch.cuda.is_available() and kernels.triton_available():
    from .kernels import quantize_triton as _registers_the_triton_op  # noqa: F401  (lowbit::quantize_triton)


def _triton_op(x: torch.Tensor, fmt, rounding: str, scaling) -> bool:
    """Whether compiled code calls the quantize kernel as a Triton operator (``lowbit::quantize_triton``)."""
    return (x.is_cuda and x.dtype == torch.float32 and scaling is None and rounding in ("nearest", "zero")
            and kernels.supports(fmt) and get_format(fmt.name) is fmt)


class FusedRound(torch.autograd.Function):
    """Forward: x rounded onto the float8 format ``fwd`` (or left as it is: None); backward: the
    gradient through the straight-through estimator (zero where |x| > max of ``fwd``), then rounded
    onto ``bwd`` (or None).  Torch operations both ways (:func:`fused_round`), so that
    torch.compile traces them and inductor fuses them into the neighbouring kernels; the values
    are those of :func:`quantize` and :class:`lowbit.nn.Quantizer`."""

    @staticmethod
    def forward(ctx, x, fwd, bwd):
        ctx.fwd, ctx.bwd = fwd, bwd
        if fwd is None:
            return x.clone()
        ctx.save_for_backward(x)
        return fused_round(x, fwd)

    @staticmethod
    def backward(ctx, grad):
        if ctx.fwd is not None:
            (x,) = ctx.saved_tensors
            grad = torch.where(x.abs() <= get_format(ctx.fwd).max, grad, torch.zeros_like(grad))
        if ctx.bwd is not None:
            grad = fused_round(grad, ctx.bwd)
        return grad, None, None


# -- the operator torch.compile sees: lowbit::quantize, with a fake kernel and the same gradient ----------
@torch.library.custom_op("lowbit::quantize_cut", mutates_args=())
def _quantize_op_cut(x: torch.Tensor, fmt: str, rounding: str, saturate: bool, scaling: str, block: int) -> torch.Tensor:
    out = _quantize(x.detach(), get_format(fmt), rounding, saturate, None, scaling or None, block)
    return out.clone() if out.data_ptr() == x.data_ptr() else out  # an operator returns no alias of its input


@torch.library.custom_op("lowbit::quantize", mutates_args=())
def _quantize_op(x: torch.Tensor, fmt: str, rounding: str, saturate: bool, scaling: str, block: int) -> torch.Tensor:
    return _quantize_op_cut(x, fmt, rounding, saturate, scaling, block)


for _op in (_quantize_op, _quantize_op_cut):
    _op.register_fake(lambda x, fmt, rounding, saturate, scaling, block: torch.empty_like(x))


def _op_setup(ctx, inputs, output):
    x, fmt, _, _, scaling, _ = inputs
    fmt = get_format(fmt)
    keep = _keep(x, output, fmt, scaling or None)
    ctx.save_for_backward(x if keep is None else keep)
    ctx.spec = (fmt, keep is not None)


def _op_backward(ctx, grad):
    (saved,) = ctx.saved_tensors
    fmt, masked = ctx.spec
    return straight_through(grad, saved, fmt, keep=saved if masked else None), None, None, None, None, None


_quantize_op.register_autograd(_op_backward, setup_context=_op_setup)


@torch.library.custom_op("lowbit::round_grad", mutates_args=())
def _round_grad_op(x: torch.Tensor, fmt: str, rounding: str, scaling: str, block: int) -> torch.Tensor:
    """The identity forward; backward, the incoming gradient rounded onto ``fmt`` (lowbit.nn's
    error rounding, as one operator for torch.compile)."""
    return x.clone()


_round_grad_op.register_fake(lambda x, fmt, rounding, scaling, block: torch.empty_like(x))


def _round_grad_setup(ctx, inputs, output):
    ctx.spec = inputs[1:]


def _round_grad_backward(ctx, grad):
    fmt, rounding, scaling, block = ctx.spec
    return torch.ops.lowbit.quantize_cut(grad, fmt, rounding, False, scaling, block), None, None, None, None


_round_grad_op.register_autograd(_round_grad_backward, setup_context=_round_grad_setup)


def scaled_values(sf: ScaledFormat, x: torch.Tensor, rounding: str = "nearest", generator=None):
    """(scales, x / scale rounded onto the element format, saturating) of a scaled format — in
    blocks (blocks × block, zero-padded) for block scaling: what its codes encode."""
    scales = sf.scales(x)
    return scales, quantize(sf.divide(x, scales), sf.fmt, rounding, saturate=True, generator=generator)


def scaled_quantize(x: torch.Tensor, fmt, scaling: str, *, block: int = 32, rounding: str = "nearest",
                    generator=None, rule: str | None = None) -> torch.Tensor:
    """x rounded with a scale: s·Q(x/s).  Stochastic rounding takes block scales that never clip
    (``rule="fit"``), so it stays unbiased; nearest rounding the MX rule ("ocp")."""
    sf = ScaledFormat(fmt, scaling, block, rule or ("fit" if rounding == "stochastic" else "ocp"))
    if x.numel() == 0:
        return x.clone()
    if x.dtype in (torch.float16, torch.bfloat16):
        return scaled_quantize(x.float(), fmt, scaling, block=block, rounding=rounding, generator=generator,
                               rule=sf.rule).to(x.dtype)
    scales, y = scaled_values(sf, x, rounding, generator)
    return sf.unscale(y, scales, x.shape)


def _quantize(x, fmt, rounding, saturate, generator, scaling, block) -> torch.Tensor:
    if scaling is not None:
        return scaled_quantize(x, fmt, scaling, block=block, rounding=rounding, generator=generator)
    if x.numel() == 0:
        return x.clone()
    if x.dtype in (torch.float16, torch.bfloat16):
        return _quantize(x.float(), fmt, rounding, saturate, generator, None, block).to(x.dtype)
    if isinstance(fmt, IntFormat):
        return _quantize_int(x, fmt, rounding, generator)
    use = getattr(_native, "on", True) and not saturate and rounding == "nearest"
    native = _NATIVE_CPU.get(fmt) if use else None
    if native is not None and x.device.type == "cpu" and x.dtype == torch.float32:
        if native is torch.bfloat16:  # ml_dtypes' cast loop is twice as fast as torch's on the CPU
            return _bfloat16_round_trip(x)
        return _elementwise(x, rounding, generator, lambda v, g: v.to(native).to(torch.float32))
    if x.is_cuda and x.dtype == torch.float32:
        if kernels.supports(fmt):
            return kernels.quantize(x, fmt, rounding, saturate, generator)
    if rounding == "stochastic" and x.dtype == torch.float32 and cpu.wanted(x):
        return _stochastic_loop(x, fmt, saturate, generator).reshape(x.shape)
    return _elementwise(x, rounding, generator, lambda v, g: _quantize_float(v, fmt, rounding, saturate, g))


def _stochastic_loop(x: torch.Tensor, fmt: FloatFormat, saturate: bool, generator, native=None,
                     words=None) -> torch.Tensor:
    """Stochastic rounding of a CPU float32 tensor onto ``fmt`` in one compiled loop, on the words
    drawn first (or given), the eager formula on the same words where the compiler is
    unavailable, as a flat vector: the values, or with ``native`` (torch's 8-bit float dtype of
    fmt) their bytes."""
    flat = x.contiguous().reshape(-1)
    words = random_words(flat.numel(), generator) if words is None else words
    q = cpu.call(_stochastic_float(fmt, saturate, native), flat, words)
    if q is None:
        q = _round_float(flat, fmt, "stochastic", saturate, words)
        q = q if native is None else q.to(native).view(torch.uint8)
    return q


def stochastic_codes(x: torch.Tensor, fmt, native: torch.dtype, *, saturate: bool = False, generator=None):
    """The bytes of ``quantize(x, fmt, "stochastic")`` as torch's 8-bit float dtype ``native``
    (fmt's codes), the same draws, from one compiled loop on a large CPU float32 tensor (the
    cast codec's encode without a pass over the rounded floats: the codes computed from the
    words as the Triton kernels compute them, :func:`_stochastic_code`, where that formula
    applies); None where that does not apply."""
    if not (x.dtype == torch.float32 and cpu.wanted(x)):
        return None
    f = get_format(fmt)
    if (loop := _stochastic_code(f, saturate, native)) is not None:
        flat = x.contiguous().reshape(-1)
        blocks, q = random_blocks(flat.numel(), generator), torch.empty(flat.numel(), dtype=torch.uint8)
        if cpu.by_blocks(loop, blocks, flat.numel(), flat, cpu.WORDS, q) is not None:
            return q
        return _stochastic_loop(flat, f, saturate, None, native, joined_words(blocks))
    return _stochastic_loop(x, f, saturate, generator, native)


def _codes_from_words(v: torch.Tensor, rnd: torch.Tensor, key: str) -> torch.Tensor:
    """The 8-bit codes of float32 ``v`` rounded stochastically with words ``rnd`` onto a format
    with subnormals — the Triton kernels' integer formula (``_stochastic_magnitude`` and
    ``_round_code`` of :mod:`lowbit.kernels.rounding`): the pattern rebased so that its smallest
    normal binade is the significand with its hidden bit, code = (x + (rnd mod 2^sh)) ≫ sh, with
    sh the format's mantissa shift in the normal range and the subnormal grid's below it (at most
    30 random bits); then the overflow, inf and NaN codes and the sign.  The values of
    :func:`_round_float` on the same words, as codes, without the float rounding and conversion."""
    k = _COMPILED_CODES[key]
    b = v.view(torch.int32)
    a = b & 0x7FFFFFFF
    e = torch.clamp(a >> 23, max=k["EMIN_FIELD"])  # rebased pattern, or the significand below
    x = a - ((e - 1) << 23)
    sh = (150 + k["LOW_EXP"]) - e
    sh30 = torch.clamp(sh, max=30)
    mag = ((x >> (sh - sh30)) + (rnd & ((1 << sh30) - 1))) >> sh30
    mag = torch.where(mag > k["MAX_CODE"], k["OVER_CODE"], mag)  # also every inf or NaN input
    if k["INF_CODE"] != k["OVER_CODE"] and k["NAN_CODE"] != k["OVER_CODE"]:
        mag = torch.where(a >= 0x7F800000, torch.where(a == 0x7F800000, k["INF_CODE"], k["NAN_CODE"]), mag)
    elif k["INF_CODE"] != k["OVER_CODE"]:
        mag = torch.where(a == 0x7F800000, k["INF_CODE"], mag)
    elif k["NAN_CODE"] != k["OVER_CODE"]:
        mag = torch.where(a > 0x7F800000, k["NAN_CODE"], mag)
    sign = (b >> 31) & 1
    if k["FNUZ"]:
        sign = torch.where(mag == 0, 0, sign)
    return (mag | (sign << (k["EF"] + k["M"]))).to(torch.uint8)


_COMPILED_CODES: dict = {}


@functools.lru_cache(maxsize=None)
def _stochastic_code(fmt: FloatFormat, saturate: bool, native: torch.dtype):
    """:func:`_codes_from_words` for an 8-bit ``fmt`` (torch's dtype ``native``) written into the
    uint8 vector ``out`` (``loop(v, rnd, out)``), as a loop of its own
    (its constants read from a module global, a code object per format: see
    :func:`_stochastic_float`), or None where the formula does not apply (no subnormals, a
    subnormal grid 2^−96 or finer, not 8 bits) or where its codes differ from torch's conversion
    of :func:`_round_float`'s values on a set of special inputs (checked once).  A NaN input takes
    torch's NaN code for the format (e5m2: 0x7F with the sign, where the Triton kernels write 0x7E)."""
    k = dict(_code_constants(fmt, "stochastic", saturate))
    if not (k["LOW"] and k["SUB"] and 120 + k["LOW_EXP"] >= 24 and 1 + k["EF"] + k["M"] == 8):
        return None
    nan = int(torch.tensor(float("nan")).to(native).view(torch.uint8))
    k["NAN_CODE"] = nan if k["FNUZ"] else nan & 0x7F  # fnuz: the negative zero's code, 0x80
    key = f"{fmt!r}/{saturate}"
    _COMPILED_CODES[key] = k

    def stochastic_code(v, rnd, out):
        return out.copy_(_codes_from_words(v, rnd, key))

    loop = cpu.own_code(stochastic_code)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -float("nan"), 1e30, -1e30, 1e-45,
                            -3e-38, fmt.max, -fmt.max, fmt.smallest_subnormal / 3, 1.0, -1.5, 2.0**-20, 0.1]).repeat(4)
    rnd = torch.arange(special.numel(), dtype=torch.int32) * 0x1F2E3D4 & 0x7FFFFFFF
    want = _round_float(special, fmt, "stochastic", saturate, rnd).to(native).view(torch.uint8)
    return loop if torch.equal(loop(special, rnd, torch.empty_like(want)), want) else None


_COMPILED_FORMATS: dict = {}


@functools.lru_cache(maxsize=None)
def _stochastic_float(fmt: FloatFormat, saturate: bool, native: torch.dtype | None = None):
    """Stochastic rounding onto ``fmt`` of a CPU float32 vector given its random words, as one
    loop for :func:`lowbit.kernels.cpu.call` (the formula of :func:`_round_float`), converted to
    ``native`` and viewed as bytes when given."""

    # the format is read from a module global: torch.compile makes the integers of a global
    # constants of the loop, those of a closure or an argument symbols (shifts by a symbol and a
    # 2^k computed per vector: twice as slow)
    key = f"{fmt!r}/{saturate}/{native}"
    _COMPILED_FORMATS[key] = (fmt, saturate, fmt.max_bits(torch.float32), native)

    def stochastic_float(v, rnd):
        f, sat, max_bits, to = _COMPILED_FORMATS[key]
        q = _round_float(v, f, "stochastic", sat, rnd, skip_empty=False, max_bits=max_bits)
        return q if to is None else q.to(to).view(torch.uint8)

    return cpu.own_code(stochastic_float)  # one compilation budget per format
