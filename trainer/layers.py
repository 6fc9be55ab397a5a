"""Building blocks: EAN's, and the dense teacher's."""

from __future__ import annotations

import math

import torch
from torch import nn


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: t = |(log2 C + b) / gamma|, rounded up to an odd number."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Local channel attention (ECA-Net, Wang et al., CVPR 2020).

    Global average pooling, then a bias-free 1-D convolution across neighbouring channels and a
    sigmoid gate: k parameters instead of an SE block's 2C²/r, and no dimensionality reduction.
    """

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def pooled_gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """The (N, C) gate from (N, C) globally pooled features."""
        return torch.sigmoid(self.conv(pooled.unsqueeze(1)).squeeze(1))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled_gate(x.mean(dim=(2, 3)))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class EANBlock(nn.Module):
    """Depthwise 3×3 → BN → act, pointwise 1×1 → BN → act, then ECA; residual when shapes match.

    ``attention=False`` leaves ECA out: on a CPU each gate costs a layout reorder, a pooling and a
    broadcast multiply whatever the resolution, so it is placed where it pays (see EANConfig.eca).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, attention: bool = True) -> None:
        super().__init__()
        self.dw = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
        )
        self.pw = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
        )
        self.eca = ECA(c_out) if attention else nn.Identity()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.eca(self.pw(self.dw(x)))
        return x + y if self.residual else y


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al., 2016): two 3×3 convolutions, a projected shortcut when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))
