"""The compressor factory: a codec from a name and options, from a number-format name (a
``cast``), or as given, and optionally wrapped in error feedback."""

from __future__ import annotations

from .base import Compressor, compressor_names, make_compressor
from .feedback import ErrorFeedback


def get_compressor(name: str | Compressor, *, error_feedback: bool = False, **options) -> Compressor:
    """A compressor by name with its options, e.g. ``get_compressor("qsgd", levels=4)``.

    ``error_feedback=True`` wraps it in :class:`lowbit.compress.ErrorFeedback`.  Unknown names and
    options raise errors that list the valid ones."""
    if isinstance(name, Compressor):
        if options:
            raise TypeError("options go with a compressor name, not an instance")
        codec = name
    else:
        codec = make_compressor(name, **options)
    return ErrorFeedback(codec) if error_feedback else codec


def resolve_codec(codec, rounding: str = "nearest") -> Compressor:
    """A Compressor from a Compressor, a compressor name, or a number-format name (→ ``cast``)."""
    if isinstance(codec, Compressor):
        return codec
    if isinstance(codec, str) and codec.strip().lower() in compressor_names():
        return get_compressor(codec)
    return get_compressor("cast", format=codec, rounding=rounding)


__all__ = ["get_compressor", "resolve_codec"]
