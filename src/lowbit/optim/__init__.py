"""Optimizers and gradient-quantization instrumentation.

* :class:`QuantizedGradients` — wraps any torch optimizer; rounds gradients through a codec and
  records the shrinkage factor q = ‖g̃‖/‖g‖ and friends; optional stepsize compensation.
* Finite sums with a closure API: :class:`SAG`, :class:`SAGA`, :class:`SVRG`, :class:`HALP`.
* Distributed with shifts: :class:`DIANA`, :func:`IntDIANA`, :func:`VRIntDIANA`.
* :class:`LowPrecision` — weights and optimizer state kept in low precision around any optimizer.
"""

from .diana import DIANA, IntDIANA, VRIntDIANA, diana_stepsize, vr_diana_stepsize
from .halp import HALP
from .lowprec import LowPrecision
from ..compress import resolve_codec
from .quantized import QuantizedGradients
from .saga import SAG, SAGA
from .stats import StatsLog, shrinkage
from .svrg import SVRG

__all__ = ["DIANA", "HALP", "IntDIANA", "LowPrecision", "QuantizedGradients", "SAG", "SAGA", "SVRG", "StatsLog", "VRIntDIANA",
           "diana_stepsize", "vr_diana_stepsize", "resolve_codec", "shrinkage"]
