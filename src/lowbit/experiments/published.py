"""The source's own numbers beside lowbit's.

A reproduction's config lists, under ``published``, what its source reports: a quantity, the value,
where it is reported, and a tolerance.  After the run, :func:`compare` measures each quantity on
the run folder and writes ``summary.json``'s ``published`` rows
``{"quantity", "source", "published", "measured", "tolerance", "holds", "note"}``.

Quantities are addresses into the results, so a new comparison is a line of config:

* ``<run>/<column>@<key>=<value>``: a metrics column at one logged row of sub-run ``<run>`` (its
  label, e.g. ``method=vr-intdiana``, or a pattern matching one label, ``codec=intsgd*``; empty
  for a run without a sweep), e.g.
  ``method=l-svrg/suboptimality@step=1000``; with several seeds, their mean (geometric for
  log-scale quantities such as the suboptimality);
* ``<run>/<key>`` or ``<run>/final.<key>``: an entry of the sub-run's summary (``parameters``,
  ``final.test_accuracy``);
* ``ratio(<q1>, <q2>)``: the quotient of two quantities.

Tolerances: ``x2`` (within a factor 2), ``5%`` (relative), ``+-0.5`` (absolute), ``>=v`` or ``<=v``
(a bound on the measured value, for findings stated as bounds); none: equality.
"""

from __future__ import annotations

import fnmatch
import math
import re

import pandas as pd

from .results import LOG_SCALE


def _run(summary: dict, label: str) -> dict:
    """The sub-run whose label is ``label`` or, failing that, the one it matches as a pattern
    (``codec=intsgd*``: shell-style wildcards)."""
    runs = summary["runs"]
    exact = [r for r in runs if (r.get("label") or "") == label]
    hits = exact or [r for r in runs if fnmatch.fnmatchcase(r.get("label") or "", label)]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(repr(r.get("label") or "") for r in runs)
    raise KeyError(f"{'no' if not hits else 'more than one'} sub-run {label!r} (runs: {known})")


def _sub_path(folder, summary: dict, label: str):
    label = _run(summary, label).get("label") or ""
    return folder.sub(label).path if label else folder.path


def measure(quantity: str, folder, summary: dict):
    """The value of ``quantity`` (see the module docstring) in a finished run."""
    q = quantity.strip()
    m = re.fullmatch(r"ratio\((.+)\)", q)
    if m:  # split at the first comma with a whole quantity (a '/') before it: labels hold commas too
        inner = m.group(1)
        cut = next((i for i, c in enumerate(inner) if c == "," and "/" in inner[:i]), None)
        if cut is None:
            raise KeyError(f"{quantity}: ratio(a, b) needs two quantities")
        a, b = measure(inner[:cut], folder, summary), measure(inner[cut + 1:], folder, summary)
        return a / b if b else math.inf
    label, _, item = q.rpartition("/")
    if "@" in item:
        col, _, where = item.partition("@")
        key, _, val = where.partition("=")
        df = pd.read_csv(_sub_path(folder, summary, label) / "metrics.csv")
        if col not in df or key not in df:
            raise KeyError(f"{quantity}: metrics have no column {col if col not in df else key!r}")
        rows = df[df[key] == float(val)]
        if rows.empty:
            raise KeyError(f"{quantity}: no logged row with {key} = {val}")
        v = rows[col].astype(float)
        if col in LOG_SCALE and (v > 0).all():
            return float(math.exp(v.map(math.log).mean()))
        return float(v.mean())
    obj = _run(summary, label)
    for part in item.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(f"{quantity}: the summary of run {label!r} has no {item!r}")
        obj = obj[part]
    return obj


def within(measured, published, tolerance) -> bool:
    """Whether ``measured`` agrees with ``published`` under ``tolerance`` (module docstring)."""
    if tolerance is None or tolerance == "":
        return measured == published
    if isinstance(tolerance, (int, float)):
        return abs(measured - published) <= tolerance
    t = str(tolerance).strip().replace("×", "x").replace("±", "+-")
    if t.startswith("x"):
        f = float(t[1:])
        return published / f <= measured <= published * f if published > 0 else measured == published
    if t.endswith("%"):
        return abs(measured - published) <= abs(published) * float(t[:-1]) / 100
    if t.startswith("+-"):
        return abs(measured - published) <= float(t[2:])
    if t.startswith(">="):
        return measured >= float(t[2:])
    if t.startswith("<="):
        return measured <= float(t[2:])
    raise ValueError(f"unknown tolerance {tolerance!r}: use x<f>, <p>%, +-<a>, >=<v> or <=<v>")


def compare(cfg, folder, summary: dict) -> list[dict]:
    """The ``published`` rows of a finished run (``cfg.published`` measured on ``folder``)."""
    rows = []
    for p in cfg.published:
        try:
            got = measure(p.quantity, folder, summary)
            holds = bool(within(got, p.value, p.tolerance))
        except KeyError as e:  # a quantity this variant did not run (e.g. --quick drops a sub-run)
            got, holds = None, None
            note = f"{p.note} (not measured: {e.args[0]})".strip()
        else:
            note = p.note
        rows.append({"quantity": p.quantity, "source": p.source, "published": p.value, "measured": got,
                     "tolerance": p.tolerance, "holds": holds, "note": note})
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    def fmt(v):
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    out = ["| quantity | source | published | lowbit | tolerance | holds |", "|---|---|---:|---:|---|---|"]
    for r in rows:
        holds = "—" if r["holds"] is None else ("yes" if r["holds"] else "no")
        note = f" ({r['note']})" if r.get("note") else ""
        out.append(f"| {r['quantity']} | {r['source']}{note} | {fmt(r['published'])} | {fmt(r['measured'])} | "
                   f"{fmt(r['tolerance'])} | {holds} |")
    return "\n".join(out) + "\n"
