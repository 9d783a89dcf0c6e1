"""lowbit: low-precision and compressed-gradient training.

Public face: :func:`quantize`, :func:`get_format`, :class:`FloatFormat`, :class:`IntFormat`,
:class:`ScaledFormat`, :func:`get_compressor` and the compressor wrappers; :mod:`lowbit.nn` for
rounding inside a model.
"""

from .formats import FloatFormat, IntFormat, format_names, get_format, register_format
from .quantize import ROUNDINGS, quantize, round_integer
from .scaling import ScaledFormat
from .compress import Compressor, ErrorFeedback, Packet, Shifted, compressor_names, get_compressor
from . import nn

__version__ = "0.1.0"

__all__ = [
    "Compressor",
    "ErrorFeedback",
    "Packet",
    "Shifted",
    "compressor_names",
    "get_compressor",
    "FloatFormat",
    "IntFormat",
    "ScaledFormat",
    "ROUNDINGS",
    "format_names",
    "get_format",
    "quantize",
    "register_format",
    "round_integer",
    "nn",
]
