"""Batch augmentation on the device: random crop from zero-padded images and horizontal flips for
a whole batch in a few tensor operations (no per-sample Python), and the test-time centre crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4, crop: int | None = None) -> torch.Tensor:
    """Random crop of size ``crop`` (default: the image size) from the zero-padded images and a
    random horizontal flip, for a whole batch in a few tensor operations."""
    n, c, h, w = x.shape
    ch, cw = crop or h, crop or w
    xp = F.pad(x, (pad, pad, pad, pad))
    i = torch.randint(0, h + 2 * pad - ch + 1, (n,), device=x.device, generator=gen)
    j = torch.randint(0, w + 2 * pad - cw + 1, (n,), device=x.device, generator=gen)
    rows = (i[:, None] + torch.arange(ch, device=x.device))[:, None, :, None]
    cols = (j[:, None] + torch.arange(cw, device=x.device))[:, None, None, :]
    out = xp[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
             rows, cols]
    flip = torch.rand(n, device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def centre(x: torch.Tensor, crop: int | None) -> torch.Tensor:
    if crop is None or crop >= x.shape[-1]:
        return x
    o = (x.shape[-1] - crop) // 2
    return x[..., o : o + crop, o : o + crop]
