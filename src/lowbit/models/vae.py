"""The IntSGD experiments' VAE on 28×28 images (MLP encoder/decoder, Bernoulli likelihood),
and its β-TC-VAE loss (Chen et al.: the total-correlation term of the KL weighted by β).

    ELBO loss = BCE(x̂, x) + KL(q(z|x) ‖ N(0, I))                       (per image, summed pixels)
    β-TC:      BCE + I(x; z) + β·TC(z) + Σ_j KL(q(z_j) ‖ p(z_j))     (minibatch-weighted estimate)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class VAE(nn.Module):
    def __init__(self, in_features: int = 784, hidden: int = 400, latent: int = 20, beta_tc: float | None = None):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True))
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, in_features))
        self.beta_tc = beta_tc

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar, z


def _log_normal(z, mu, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())


def vae_loss(model: VAE, x: torch.Tensor, dataset_size: int | None = None, forward=None) -> torch.Tensor:
    """Negative ELBO per image (β-TC-VAE's decomposition when ``model.beta_tc`` is set);
    ``forward``: what runs the model (its DDP wrapper), default ``model``."""
    logits, mu, logvar, z = (forward or model)(x)
    target = x.reshape(x.shape[0], -1).clamp(0, 1)
    rec = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / x.shape[0]
    if model.beta_tc is None:
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp()) / x.shape[0]
        return rec + kl
    B, N = x.shape[0], dataset_size or x.shape[0]
    logq_zx = _log_normal(z, mu, logvar).sum(1)
    logp_z = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    mat = _log_normal(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # B × B × latent
    log_mws = math.log(B * N)
    logq_z = torch.logsumexp(mat.sum(2), 1) - log_mws
    logq_prod = (torch.logsumexp(mat, 1) - log_mws).sum(1)
    mi, tc, dwkl = (logq_zx - logq_z).mean(), (logq_z - logq_prod).mean(), (logq_prod - logp_z).mean()
    return rec + mi + model.beta_tc * tc + dwkl
