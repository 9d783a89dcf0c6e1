"""A convex run's data: rows, their scaling and the held-out split."""

from __future__ import annotations

import torch

from . import libsvm, synthetic


def train_test(d) -> tuple:
    """(A, y, A_test, y_test) as a run's ``data`` section (a DataConfig) describes them: synthetic
    or LIBSVM rows in float64, scaled, optionally L2-normalized, split into train and held-out rows
    by a seeded shuffle (test None without held-out rows), and a share of the training rows kept."""
    if d.source == "synthetic":
        A, y = synthetic.logistic(d.n_samples, d.n_features, cond=d.cond, separable=d.separable, seed=d.seed)
    else:
        A, y = libsvm.load(d.name)
    A = A.to(torch.float64) * d.scale
    if d.normalize:
        A = A / A.norm(dim=1, keepdim=True).clamp(min=1e-30)
    if d.test_fraction > 0:
        g = torch.Generator().manual_seed(d.seed)
        perm = torch.randperm(A.shape[0], generator=g)
        n_test = int(round(d.test_fraction * A.shape[0]))
        te, tr = perm[:n_test], perm[n_test:]
        tr = tr[: max(1, int(round(d.train_fraction * tr.numel())))]  # a random share: the split's order is random
        return A[tr], y[tr], A[te], y[te]
    if d.train_fraction < 1:
        keep = torch.randperm(A.shape[0], generator=torch.Generator().manual_seed(d.seed))
        keep = keep[: max(1, int(round(d.train_fraction * A.shape[0])))].sort().values  # rows keep their order
        A, y = A[keep], y[keep]
    return A, y, None, None


__all__ = ["train_test"]
