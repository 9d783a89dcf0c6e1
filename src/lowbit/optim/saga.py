"""SAG (Schmidt, Le Roux, Bach) and SAGA (Defazio, Bach, Lacoste-Julien): a table y_1 … y_n of the
last gradient seen for each component, and their mean ȳ.

With i the sampled component and g_i = ∇f_i(w) (passed through ``codec`` if one is set, as the
slowdown reproduction quantizes each per-sample gradient before use):

    SAGA:  w ← w − η·(g_i − y_i + ȳ)                  (unbiased)
    SAG:   w ← w − η·(ȳ + (g_i − y_i)/n)              (biased, lower variance)
    then   ȳ ← ȳ + (g_i − y_i)/n,  y_i ← g_i.

``init="pass"`` fills the table with one pass over all components at the starting point (as the
reproduction's SAGA does); ``init="zero"`` starts from an empty table.  ``weight_decay`` λ adds
λ·w to the direction without storing it in the table.

``table="full"`` stores a gradient per component (n × d, batch size 1).  ``table="scalar"`` is the
memory-light form for linear models f_i(w) = φ_i(a_iᵀw): ∇f_i(w) = φ_i'(a_iᵀw)·a_i, so the table
stores one scalar per component.  Then ``features`` is the n × d matrix A, the model has a single
parameter w of d entries, any batch size works, and ``closure(indices)`` must *return* the tensor
of derivatives φ_i'(a_iᵀw) for those indices (no backward needed).
"""

from __future__ import annotations

import torch

from .finite_sum import FiniteSumOptimizer


class SAGA(FiniteSumOptimizer):
    variant = "saga"

    def __init__(self, params, lr: float, n: int, *, weight_decay: float = 0.0, table: str = "full",
                 features: torch.Tensor | None = None, init: str = "zero", batch_size: int = 1,
                 sampling: str = "permutation", codec=None, rounding: str = "nearest", seed: int = 0,
                 record: bool = False):
        if table not in ("full", "scalar"):
            raise ValueError(f"table must be 'full' or 'scalar', got {table!r}")
        if init not in ("zero", "pass"):
            raise ValueError(f"init must be 'zero' or 'pass', got {init!r}")
        if table == "full" and batch_size != 1:
            raise ValueError("table='full' keeps one gradient per component: batch_size must be 1")
        if table == "scalar" and (features is None or codec is not None):
            raise ValueError("table='scalar' needs features=A and no codec (a quantized vector is not s·a_i)")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay}, n, batch_size=batch_size,
                         sampling=sampling, codec=codec, rounding=rounding, seed=seed, record=record)
        if table == "scalar" and (len(self.params) != 1 or self.params[0].dim() != 1):
            raise ValueError("table='scalar' takes a single 1-D parameter (the weight vector)")
        self.table = table
        self.features = features
        self.init = init

    def _initialize(self, closure) -> None:
        for p in self.params:
            st = self.state[p]
            if self.table == "full":
                st["table"] = torch.zeros((self.n, *p.shape), dtype=p.dtype, device=p.device)
            else:
                st["table"] = torch.zeros(self.n, dtype=p.dtype, device=p.device)
            st["mean"] = torch.zeros_like(p)
            st["step"] = torch.zeros((), dtype=torch.int64)
        if self.init == "pass":
            for i in range(0, self.n, self.batch_size):
                idx = torch.arange(i, min(i + self.batch_size, self.n))
                for p, g in zip(self.params, self._component(closure, idx)):
                    self.state[p]["table"][idx] = g
            for p in self.params:
                st = self.state[p]
                st["mean"] = self._table_mean(st["table"])

    def _table_mean(self, table: torch.Tensor) -> torch.Tensor:
        if self.table == "full":
            return table.mean(0)
        return (self.features.to(table.dtype).T @ table) / self.n

    def _component(self, closure, idx):
        """Fresh component values to store: gradients (full) or derivative scalars (scalar)."""
        if self.table == "scalar":
            with torch.no_grad():
                return [closure(idx).detach().to(self.params[0].dtype).reshape(-1)]
        g, _ = self.grads(closure, idx)
        return [v.unsqueeze(0) for v in self.communicate(g)]

    @torch.no_grad()
    def step(self, closure, indices: torch.Tensor | None = None):
        if not self.state or "table" not in self.state[self.params[0]]:
            self._initialize(closure)
        idx = self.next_indices() if indices is None else torch.as_tensor(indices).reshape(-1)
        fresh = self._component(closure, idx)
        group = self.param_groups[0]
        for p, new in zip(self.params, fresh):
            st = self.state[p]
            old = st["table"][idx]
            if self.table == "full":
                diff = (new - old).sum(0)
            else:
                a = self.features[idx].to(p.dtype)
                diff = a.T @ (new - old)
            b = idx.numel()
            if self.variant == "saga":
                direction = diff / b + st["mean"]
            else:
                direction = st["mean"] + diff / self.n
            if group["weight_decay"]:
                direction = direction + group["weight_decay"] * p
            st["mean"] = st["mean"] + diff / self.n
            st["table"][idx] = new
            p.add_(direction, alpha=-group["lr"])
            st["step"] += 1
        self.steps += 1


class SAG(SAGA):
    variant = "sag"
