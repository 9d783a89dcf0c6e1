"""Gradient compressors: ``get_compressor(name, **options)`` → :class:`Compressor`.

Names: identity, cast, intsgd, hintsgd, natural, qsgd, terngrad, onebit, signsgd, topk, randk,
isgq, powersgd.  Wrappers: :class:`ErrorFeedback`, :class:`Shifted` (DIANA).
"""

from . import (  # noqa: F401  (each module registers its codec)
    cast,
    identity,
    intsgd,
    isgq,
    natural,
    onebit,
    ops,
    powersgd,
    qsgd,
    randk,
    signsgd,
    terngrad,
    topk,
)
from .base import Compressor, OptionError, Packet, Summable, Traits, WorkerAgreement, compressor_names, register
from .factory import get_compressor, resolve_codec
from .feedback import ErrorFeedback, Shifted
from .isgq import Factored
from .many import MultiTensor, roundtrip_many

__all__ = ["Compressor", "Traits", "MultiTensor", "Summable", "WorkerAgreement", "OptionError", "Packet",
           "ErrorFeedback", "Shifted", "Factored", "compressor_names", "get_compressor", "register", "resolve_codec",
           "roundtrip_many"]
