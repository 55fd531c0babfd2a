"""Small building blocks shared by CloudLULC-Net and the baselines.

GroupNorm rather than BatchNorm everywhere: training batches are small (large patches, CPU or one GPU)
and inference runs tile by tile, so statistics that do not depend on the batch keep training and
inference consistent.
"""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvNormAct(nn.Sequential):
    """3x3 (or kxk) convolution, GroupNorm, GELU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 8) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            group_norm(cout, groups),
            nn.GELU(),
        )


class ResBlock(nn.Module):
    """Pre-activation-free residual block: two 3x3 convs with a GroupNorm'd identity path."""

    def __init__(self, channels: int, groups: int = 8) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, groups=groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(channels, groups)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.norm2(self.conv2(self.conv1(x))))


class EncoderStage(nn.Sequential):
    """Stride-2 downsampling convolution followed by ``depth`` residual blocks."""

    def __init__(self, cin: int, cout: int, depth: int, groups: int = 8) -> None:
        super().__init__(
            ConvNormAct(cin, cout, stride=2, groups=groups), *[ResBlock(cout, groups) for _ in range(depth)]
        )


class Encoder(nn.Module):
    """Four stages at strides 2, 4, 8, 16; returns the feature of every stage (fine to coarse)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...], groups: int = 8) -> None:
        super().__init__()
        chans = (in_channels, *widths)
        self.stages = nn.ModuleList(EncoderStage(chans[i], chans[i + 1], depths[i], groups) for i in range(len(widths)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class Normalise(nn.Module):
    """Physical units -> standardised inputs with constants kept as (persistent) buffers.

    NaN (nodata) becomes 0 after standardisation, i.e. the band mean: inference fills gaps the same
    way the training loop does, and one NaN pixel never poisons a whole tile through the convolutions.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected {self.mean.shape[1]} input bands, got {x.shape[1]} (shape {tuple(x.shape)})")
        return torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)


def check_divisible(x: torch.Tensor, stride: int) -> None:
    """Raise a clear error when H or W is not a multiple of the network stride."""
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(
            f"input height/width ({h}, {w}) must be multiples of the network stride {stride}; "
            "pad or crop the tile (cloudlulc.inference does this for you)"
        )
