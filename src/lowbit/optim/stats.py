"""Shrinkage statistics of a quantized gradient (the low-precision SGD slowdown paper's model).

For a gradient g and its quantized version g̃ (all tensors of a parameter group, concatenated):

    q        = ‖g̃‖₂ / ‖g‖₂          the shrinkage factor: SGD with g̃ steps like SGD with μ·q
    error    = ‖g̃ − g‖₂
    residual = ‖g̃ − q·g‖₂           the part of g̃ not explained by shrinkage (ε in g̃ = q·g + ε)
    flushed  = #{i : g_i ≠ 0, g̃_i = 0} / #{i : g_i ≠ 0}
    bits     = bits sent (the codec's packets)

:func:`shrinkage` returns them as 0-d tensors (no host sync); :func:`tensor_sums` gives the sums
behind them for every tensor of a flat buffer at once (per-layer q), :func:`from_sums` the
statistics; :class:`StatsLog` collects them per step and per group and converts to floats only
when read.
"""

from __future__ import annotations

import pandas as pd
import torch

from .. import kernels


def _derive(gg, qq, ee, nz, fl) -> dict[str, torch.Tensor]:
    """q, ‖g‖, ‖g̃ − g‖, ‖g̃ − q·g‖ and the flushed share from the sums ‖g‖², ‖g̃‖², ‖g̃ − g‖²
    and the counts of non-zero and flushed entries (scalars, or one value per tensor)."""
    gnorm = gg.sqrt()
    q = torch.where(gnorm > 0, qq.sqrt() / gnorm.clamp(min=1e-300), torch.ones_like(gnorm))
    gq = (gg + qq - ee) / 2  # ⟨g, g̃⟩
    resid = (qq - 2 * q * gq + q * q * gg).clamp(min=0).sqrt()
    flushed = fl.double() / nz.double().clamp(min=1)
    return {"q": q, "grad_norm": gnorm, "error": ee.clamp(min=0).sqrt(), "residual": resid, "flushed": flushed}


def tensor_sums(flat: torch.Tensor, out: torch.Tensor, segments) -> dict[str, torch.Tensor]:
    """Per tensor of a flat buffer (the segments of ``segments``): ‖g‖², ‖g̃‖², ‖g̃ − g‖²
    (float64 accumulation) and the counts of entries with g ≠ 0 and of those flushed (g̃ = 0),
    as device tensors of one value per tensor — a few multi-tensor passes, no host sync."""
    if k := kernels.fused_codecs(flat, out):  # one read of g and g̃ (a Triton kernel)
        t = k.tensor_sums(flat.detach(), out.detach(), segments.block_plan(k.BLOCK))
        return {"gg": t[:, 0], "qq": t[:, 1], "ee": t[:, 2], "nz": t[:, 3], "fl": t[:, 4]}
    sizes = segments.sizes
    g, gt = torch.split(flat.detach(), sizes), torch.split(out.detach(), sizes)
    diff = torch.split(out.detach() - flat.detach(), sizes)
    norms = [torch.stack(torch._foreach_norm(list(t), 2, dtype=torch.float64)) for t in (g, gt, diff)]
    nonzero = flat != 0
    ends = segments.ends
    return {"gg": norms[0] ** 2, "qq": norms[1] ** 2, "ee": norms[2] ** 2,
            "nz": _segment_counts(nonzero, ends), "fl": _segment_counts(nonzero & (out == 0), ends)}


def _segment_counts(mask: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """The number of true entries of ``mask`` in each segment (``ends``: each segment's end, the
    running total of the sizes), by one running sum read at the ends — no atomics: an index_add
    into a few counters serializes on the GPU."""
    c = torch.cumsum(mask.reshape(-1), 0, dtype=torch.int64)
    at = c.index_select(0, (ends - 1).clamp(min=0)) * (ends > 0)
    return torch.diff(at, prepend=at.new_zeros(1))


def from_sums(sums: dict[str, torch.Tensor], *, per_tensor: bool = False) -> dict[str, torch.Tensor]:
    """The statistics of the concatenated vector (``per_tensor``: of each tensor) from :func:`tensor_sums`."""
    if per_tensor:
        return _derive(sums["gg"], sums["qq"], sums["ee"], sums["nz"], sums["fl"])
    return _derive(*(sums[k].sum() for k in ("gg", "qq", "ee", "nz", "fl")))


def pair_sums(pairs) -> dict[str, torch.Tensor]:
    """:func:`tensor_sums` of [(g, g̃), …] given tensor by tensor (float64, one value per pair)."""
    rows = {"gg": [], "qq": [], "ee": [], "nz": [], "fl": []}
    for g, gt in pairs:
        g64, q64 = g.detach().double().reshape(-1), gt.detach().double().reshape(-1)
        nonzero = g64 != 0
        rows["gg"].append((g64 * g64).sum())
        rows["qq"].append((q64 * q64).sum())
        rows["ee"].append(((q64 - g64) ** 2).sum())
        rows["nz"].append(nonzero.sum().double())
        rows["fl"].append((nonzero & (q64 == 0)).sum().double())
    return {k: torch.stack(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in rows.items()}


def shrinkage(pairs) -> dict[str, torch.Tensor]:
    """Statistics of [(g, g̃), …] taken as one concatenated vector (float64 accumulation)."""
    return from_sums(pair_sums(list(pairs)))


def _plain(v: torch.Tensor):
    return float(v) if v.numel() == 1 and v.dim() == 0 else [float(x) for x in v.reshape(-1).tolist()]


SUM_KEYS = ("gg", "qq", "ee", "nz", "fl")


def stack_sums(sums: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sums of :func:`tensor_sums` as one float64 tensor of 5 rows (one kernel, kept for later)."""
    return torch.stack([sums[k].to(torch.float64) for k in SUM_KEYS])


def _expand(rows: list[dict]) -> list[dict]:
    """The rows with ``_sums`` (:func:`stack_sums`) replaced, in its place, by the statistics of the
    group and, unless the row says ``_layers: False``, its per-tensor q (``q_layers``), as floats.  Rows whose
    sums have one shape are derived together: one :func:`_derive` for all of them (the same
    elementwise operations), not a dozen small tensor operations per row."""
    out = list(rows)
    batches: dict = {}
    for i, row in enumerate(rows):
        if "_sums" in row:
            batches.setdefault((tuple(row["_sums"].shape), row["_sums"].device), []).append(i)
    for ids in batches.values():
        sums = torch.stack([rows[i]["_sums"] for i in ids])  # (rows, 5, tensors)
        group = {k: v.tolist() for k, v in _derive(*sums.sum(2).unbind(1)).items()}
        layers = _derive(*sums.unbind(1))["q"].tolist()
        for j, i in enumerate(ids):
            row = {}
            for k, v in rows[i].items():  # the statistics where the sums were
                if k == "_sums":
                    row.update({s: vals[j] for s, vals in group.items()})
                    if rows[i].get("_layers", True):
                        row["q_layers"] = layers[j]
                elif k != "_layers":
                    row[k] = v
            out[i] = row
    return out


class StatsLog:
    """Rows of statistics, one per (step, group); floats on demand, a pandas DataFrame if asked.

    A row may hold the raw per-tensor sums (``_sums``) instead of the statistics: they are derived
    when the rows are read, all rows at once, so a step queues one small copy and nothing else
    (``_layers: False``: without the per-tensor q).  ``check``: called
    before every read (QuantizedGradients raises there for a step it skipped on the device)."""

    def __init__(self, check=None):
        self._rows: list[dict] = []
        self._done = 0  # rows before this index are already plain floats
        self._check = check

    def append(self, row: dict) -> None:
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        if self._check is not None:
            self._check()
        for i, row in enumerate(_expand(self._rows[self._done:]), self._done):
            self._rows[i] = {k: (_plain(v) if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
        self._done = len(self._rows)
        return self._rows

    def dataframe(self):
        return pd.DataFrame(self.rows())

    def state_dict(self) -> list[dict]:
        return [dict(r) for r in self.rows()]

    def load_state_dict(self, rows: list[dict]) -> None:
        self._rows = [dict(r) for r in rows]
        self._done = 0
