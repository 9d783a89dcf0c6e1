"""Datasets: LIBSVM sets by name (with checked downloads), synthetic generators, the data folder."""

from . import libsvm, synthetic
from .store import CorruptDataError, DataError, DataUnavailable, data_dir

__all__ = ["libsvm", "synthetic", "CorruptDataError", "DataError", "DataUnavailable", "data_dir"]
