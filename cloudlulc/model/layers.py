"""Small building blocks shared by CloudLULC-Net and the baselines.

GroupNorm rather than BatchNorm everywhere: training batches are small (large patches, CPU or one GPU)
and inference runs tile by tile, so statistics that do not depend on the batch keep training and
inference consistent. GroupNorm still normalises over the tile's pixels, so a tile of one material
(open water, a forest) loses its absolute level and the map depends on the tile size; ``norm_groups=0``
selects :class:`ChannelNorm` instead (a LayerNorm over the channels of each pixel: no spatial statistics).
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a [B, C, H, W] map (weights named like GroupNorm's)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def group_norm(channels: int, max_groups: int = 8) -> nn.Module:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``;
    ``max_groups=0``: :class:`ChannelNorm` (per-pixel, independent of the tile)."""
    if max_groups == 0:
        return ChannelNorm(channels)
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

    mean: torch.Tensor
    std: torch.Tensor

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
