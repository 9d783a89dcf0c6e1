"""Experiments as data: validated configs, a registry of named experiments, one runner."""

from .config import ConfigError, RunConfig, make_config
from .registry import get, names
from .kind import KINDS
from .runner import run

__all__ = ["ConfigError", "KINDS", "RunConfig", "get", "make_config", "names", "run"]
