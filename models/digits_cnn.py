"""A small CNN for scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits, 10 classes).

It has every structure the quantizer must handle: Conv-BN-ReLU, a depthwise-separable block with ReLU6,
a residual Add, global average pooling and a Linear classifier.

Inputs: [N, 1, 8, 8] float32, pixel values (0..16) divided by 16, then (x - MEAN) / STD.
"""

from __future__ import annotations

import torch
from torch import nn

MEAN = 0.3
STD = 0.4


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 24):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width), nn.ReLU6()
        )
        self.pointwise = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.relu = nn.ReLU()
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = self.relu(y + self.pointwise(self.depthwise(y)))  # residual depthwise-separable block
        y = self.pool(self.down(y))
        return self.classifier(torch.flatten(y, 1))


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """Factory for ``edgeq export models.digits_cnn:build`` (untrained weights)."""
    return DigitsCNN().eval(), (torch.zeros(1, 1, 8, 8),)
