"""Shrinkage statistics of a quantized gradient (the low-precision SGD slowdown paper's model).

For a gradient g and its quantized version g̃ (all tensors of a parameter group, concatenated):

    q        = ‖g̃‖₂ / ‖g‖₂          the shrinkage factor: SGD with g̃ steps like SGD with μ·q
    error    = ‖g̃ − g‖₂
    residual = ‖g̃ − q·g‖₂           the part of g̃ not explained by shrinkage (ε in g̃ = q·g + ε)
    flushed  = #{i : g_i ≠ 0, g̃_i = 0} / #{i : g_i ≠ 0}
    bits     = bits sent (the codec's packets)

:func:`shrinkage` returns them as 0-d tensors (no host sync); :class:`StatsLog` collects them per
step and per group and converts to floats only when read.
"""

from __future__ import annotations

import torch


def shrinkage(pairs) -> dict[str, torch.Tensor]:
    """Statistics of [(g, g̃), …] taken as one concatenated vector (float64 accumulation)."""
    gg = qq = gq = 0
    nz = fl = 0
    for g, gt in pairs:
        g64, q64 = g.detach().double().reshape(-1), gt.detach().double().reshape(-1)
        gg = gg + (g64 * g64).sum()
        qq = qq + (q64 * q64).sum()
        gq = gq + (g64 * q64).sum()
        nonzero = g64 != 0
        nz = nz + nonzero.sum()
        fl = fl + (nonzero & (q64 == 0)).sum()
    gg, qq, gq = (torch.as_tensor(v, dtype=torch.float64) for v in (gg, qq, gq))
    gnorm = gg.sqrt()
    q = torch.where(gnorm > 0, qq.sqrt() / gnorm, torch.ones_like(gnorm))
    err = (qq - 2 * gq + gg).clamp(min=0).sqrt()
    resid = (qq - 2 * q * gq + q * q * gg).clamp(min=0).sqrt()
    flushed = torch.as_tensor(fl, dtype=torch.float64) / torch.as_tensor(nz, dtype=torch.float64).clamp(min=1)
    return {"q": q, "grad_norm": gnorm, "error": err, "residual": resid, "flushed": flushed}


class StatsLog:
    """Rows of statistics, one per (step, group); floats on demand, a pandas DataFrame if asked."""

    def __init__(self):
        self._rows: list[dict] = []
        self._done = 0  # rows before this index are already plain floats

    def append(self, row: dict) -> None:
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        for i in range(self._done, len(self._rows)):
            self._rows[i] = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in self._rows[i].items()}
        self._done = len(self._rows)
        return self._rows

    def dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows())

    def state_dict(self) -> list[dict]:
        return [dict(r) for r in self.rows()]

    def load_state_dict(self, rows: list[dict]) -> None:
        self._rows = [dict(r) for r in rows]
        self._done = 0
