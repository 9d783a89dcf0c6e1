"""The face of torch.optim.Optimizer for wrappers that hold an ``optimizer`` and act around its step."""

from __future__ import annotations


class OptimizerWrapper:
    """``param_groups``, ``state`` and ``zero_grad`` are the wrapped optimizer's."""

    optimizer = None

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
