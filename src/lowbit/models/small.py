"""The ISGQ experiments' small networks: FC, LeNet-5 and CifarNet."""

from __future__ import annotations

from torch import nn


class FC(nn.Sequential):
    """784-1000-300-100-10 with ReLU (MNIST)."""

    def __init__(self, in_features: int = 784, widths=(1000, 300, 100), classes: int = 10):
        layers, prev = [nn.Flatten()], in_features
        for w in widths:
            layers += [nn.Linear(prev, w), nn.ReLU(inplace=True)]
            prev = w
        layers.append(nn.Linear(prev, classes))
        super().__init__(*layers)


class LeNet(nn.Sequential):
    """LeNet-5 as the ISGQ paper counts it (≈ 1.66 M parameters on 28×28 inputs): conv 5×5→32,
    max-pool 2, conv 5×5→64, max-pool 2 ('same' padding), fc 3136→512→10."""

    def __init__(self, in_channels: int = 1, classes: int = 10, image_size: int = 28):
        side = image_size // 4
        super().__init__(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * side * side, 512), nn.ReLU(inplace=True), nn.Linear(512, classes))


class CifarNet(nn.Sequential):
    """CifarNet (the TensorFlow CIFAR-10 model, ≈ 1.07 M parameters on 24×24 crops): conv 5×5→64,
    max-pool 3/2, conv 5×5→64, max-pool 3/2, fc →384→192→10."""

    def __init__(self, in_channels: int = 3, classes: int = 10, image_size: int = 24):
        side = (image_size + 3) // 4
        super().__init__(
            nn.Conv2d(in_channels, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1),
            nn.Conv2d(64, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1),
            nn.Flatten(), nn.Linear(64 * side * side, 384), nn.ReLU(inplace=True),
            nn.Linear(384, 192), nn.ReLU(inplace=True), nn.Linear(192, classes))


__all__ = ["FC", "LeNet", "CifarNet"]
