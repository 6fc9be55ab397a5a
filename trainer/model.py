"""The trainable families for 48×48 grayscale faces: EAN, the student, and a dense ResNet, a teacher.

EAN, an Efficient Attention Network: depthwise-separable blocks with local channel attention keep
parameters and MACs small; a stride-2 stem keeps heavy work off the full 48×48 resolution, which
dominates cost on a CPU. The ResNet has no such budget: it exists to teach the EAN.

Both take raw pixel values 0..255 and normalise inside the graph, so every exported file has the
same uint8 contract.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import ArchConfig, EANConfig, ResNetConfig
from trainer.layers import ECA, BasicBlock, EANBlock

# Pixel statistics the graph normalises with; written to the manifest, never repeated elsewhere.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def _scaled(c: int, mult: float) -> int:
    return max(8, round(c * mult / 8) * 8)


class _RawPixels(nn.Module):
    """Normalises raw 0..255 pixels inside the network, so the graph's input is the camera's uint8."""

    _scale: torch.Tensor
    _shift: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_scale", torch.tensor(1.0 / (255.0 * PIXEL_STD)), persistent=False)
        self.register_buffer("_shift", torch.tensor(PIXEL_MEAN / PIXEL_STD), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self._scale - self._shift


class EAN(_RawPixels):
    def __init__(self, cfg: EANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stem = _scaled(cfg.stem, cfg.width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        c_in = stem
        last_stage = len(cfg.widths) - 1
        for i, (width, depth, stride) in enumerate(zip(cfg.widths, cfg.depths, cfg.strides, strict=True)):
            c_out = _scaled(width, cfg.width_mult)
            for j in range(depth):
                attention = cfg.eca == "every_block" or (
                    cfg.eca == "stage_end" and j == depth - 1 and cfg.eca_from_stage <= i < last_stage
                )
                blocks.append(EANBlock(c_in, c_out, stride=stride if j == 0 else 1, attention=attention))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c_in
        # The last stage's attention acts on the pooled features: a per-channel gate commutes with
        # global pooling, so on (N, C) it costs nothing next to a gate on a feature map.
        self.head_eca = ECA(c_in) if cfg.eca != "every_block" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c_in, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: raw pixel values 0..255 of shape (N, 1, H, W), any float or integer dtype."""
        return self.blocks(self.stem(self.normalise(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        if self.head_eca is not None:
            x = x * self.head_eca.pooled_gate(x)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ResNet(_RawPixels):
    """ResNet basic blocks after a 3×3 stride-2 stem with no max-pool: 48×48 becomes 24×24, not 12×12."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem, 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.stem), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        c_in = cfg.stem
        for width, depth, stride in zip(cfg.widths, cfg.depths, cfg.strides, strict=True):
            for j in range(depth):
                blocks.append(BasicBlock(c_in, width, stride if j == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c_in
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.normalise(x))).mean(dim=(2, 3))
        return self.fc(self.drop(x))


Classifier = EAN | ResNet


def build_model(arch: ArchConfig) -> Classifier:
    return EAN(arch) if isinstance(arch, EANConfig) else ResNet(arch)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, in_size: int = 48) -> int:
    """Multiply-accumulates of one forward pass on one face (convolutions and linear layers)."""
    macs = 0

    def conv_hook(m: nn.Conv1d | nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        kernel = m.weight.shape[1] * int(torch.tensor(m.weight.shape[2:]).prod())
        macs += out[0].numel() * kernel  # per output element: (C_in / groups) × kernel area

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        macs += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 1, in_size, in_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(macs)
