"""Datasets: synthetic generators (no download needed)."""

from . import synthetic

__all__ = ["synthetic"]
