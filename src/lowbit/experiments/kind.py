"""Experiment kinds as plug-ins: a :class:`Kind` owns how a run of it goes, how its results read
in a table, and which figure draws them; each kind's module registers one (``RunConfig.kind``
names it).  Adding a kind is one new module that calls :func:`register`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Kind:
    name: str
    run: Callable[..., dict]  # (cfg, folder, *, resume, stop_after, progress) → the run's summary
    report: Callable[[list], list[str]]  # the lines of the table printed after a run, from its sub-runs' summaries
    figure: str  # the figure layout drawn by default (lowbit.plots.LAYOUTS)
    batched_seeds: bool = False  # seeds > 1 run together inside one run (else one after another)


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    KINDS[kind.name] = kind
    return kind


def table(runs: list, columns: list) -> list[str]:
    """A report's lines: a header, then one row per sub-run.  ``columns``: (header, width,
    cell(summary) → str); the first column is the sub-run's name, left-aligned, the others right-aligned."""
    def line(cells):
        return " ".join(f"{c[:w]:{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w, _)) in enumerate(zip(cells, columns)))

    return [line([h for h, _, _ in columns])] + [line([cell(r) for _, _, cell in columns]) for r in runs]


def run_name(summary: dict) -> str:
    """A sub-run's label, or its config's name when the run has no sweep."""
    return summary["label"] or summary["config"]["name"]


__all__ = ["KINDS", "Kind", "register", "run_name", "table"]
