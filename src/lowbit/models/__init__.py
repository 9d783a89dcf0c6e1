"""Models of the sources' deep experiments, by name: ``get_model("resnet18")``.

=============  ============================================================  ====================
name           model                                                         used by
=============  ============================================================  ====================
fc             784-1000-300-100-10 fully connected, ReLU                     ISGQ (MNIST)
lenet          LeNet-5 as the ISGQ paper counts it: conv 5×5 32, conv 5×5    ISGQ (MNIST)
               64 ('same', max-pool 2), fc 3136-512-10
cifarnet       conv 5×5 64 ×2 (max-pool 3/2), fc 2304-384-192-10 on 24×24    ISGQ (CIFAR-10)
resnet18/50    CIFAR-style ResNet (3×3 stem, no max-pool); ``stem="imagenet"`` slowdown, IntSGD,
               gives the ImageNet-style 7×7 stem with max-pool                 HALP (CIFAR-10)
vae, btcvae    the IntSGD experiments' VAE and β-TC-VAE on 28×28 images      IntSGD (MNIST)
=============  ============================================================  ====================
"""

from __future__ import annotations

import difflib

import torch

from .small import FC, CifarNet, LeNet
from .resnet import resnet18, resnet50
from .vae import VAE, vae_loss

MODELS = {
    "fc": FC,
    "lenet": LeNet,
    "cifarnet": CifarNet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vae": lambda **kw: VAE(**kw),
    "btcvae": lambda **kw: VAE(beta_tc=6.0, **kw),
}

# Parameter counts the sources report (ISGQ's Table of models), for `lowbit models`.
PAPER_COUNTS = {"fc": 1.16e6, "lenet": 1.66e6, "cifarnet": 1.07e6}


def get_model(name: str, **options) -> torch.nn.Module:
    key = name.strip().lower()
    if key not in MODELS:
        close = difflib.get_close_matches(key, MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(MODELS)}")
    return MODELS[key](**options)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["get_model", "count_parameters", "MODELS", "PAPER_COUNTS", "FC", "LeNet", "CifarNet", "resnet18",
           "resnet50", "VAE", "vae_loss"]
