"""Fused GPU kernels (Triton), imported lazily; the CPU never needs them.

``supports(fmt)`` says whether a CUDA float32 tensor can take the fused path for ``fmt``;
otherwise :func:`lowbit.quantize` runs its torch implementation on the device, with the same
results for nearest rounding and the same distribution for stochastic rounding.
"""

from __future__ import annotations

import functools

import torch

from ..formats import FloatFormat


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def supports(fmt) -> bool:
    """Whether the kernels round onto ``fmt`` (:func:`has_kernels`) and Triton is present."""
    return has_kernels(fmt) and triton_available()


def has_kernels(fmt) -> bool:
    """Float formats narrower than float32 whose fixed grid below the smallest normal (if the
    kernel needs one) has a float32-normal step: every named 4–16-bit format."""
    if not isinstance(fmt, FloatFormat) or fmt.man_bits >= 23:
        return False
    m2 = fmt.man_bits if fmt.subnormals else 0
    needs_low_grid = fmt.emin + 127 >= 2 or not fmt.subnormals
    return not needs_low_grid or fmt.emin - m2 >= -126


def quantize(x, fmt, rounding, saturate, generator):
    from .quantize_triton import quantize_triton

    return quantize_triton(x, fmt, rounding, saturate, generator)


def fused_codecs(*tensors, when: bool = True):
    """The fused codec kernels (:mod:`lowbit.kernels.codecs_triton`) for a call on ``tensors``, or
    None for the torch implementation — the choice ``torch.optim`` makes between its fused and
    foreach paths, made here once for every codec.  Fused when ``when`` (the codec's configuration
    has kernels), every tensor lives on CUDA, every floating-point one is float32 (codes and other
    integers pass), and Triton is present; the module is imported on first use."""
    if not when:
        return None
    for t in tensors:
        if not t.is_cuda or (t.is_floating_point() and t.dtype != torch.float32):
            return None
    if not triton_available():
        return None
    from . import codecs_triton

    return codecs_triton
