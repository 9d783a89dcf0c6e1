"""Optimization problems with exact constants: l2-regularized logistic regression."""

from .logistic import LogisticRegression, WorkerSplit

__all__ = ["LogisticRegression", "WorkerSplit"]
