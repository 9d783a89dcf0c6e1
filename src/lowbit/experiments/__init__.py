"""Experiments as data: validated configs, a registry of named experiments, one runner."""

from .config import ConfigError, RunConfig, make_config
from .registry import get, names
from .runner import KINDS, run
from . import deep  # noqa: E402,F401  (registers the 'deep' kind)

__all__ = ["ConfigError", "KINDS", "RunConfig", "get", "make_config", "names", "run"]
