"""A plain training loop the tests share: full-batch cross-entropy steps, the losses returned."""

import torch
from torch import nn


def cross_entropy_losses(model: nn.Module, opt, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
