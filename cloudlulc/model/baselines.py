"""Baselines trained with the same loop as CloudLULC-Net, all returning :class:`ModelOutput`.

* ``unet-optical`` — U-Net on Sentinel-2 only: what a cloud-naive mapper does.
* ``unet-sar`` — U-Net on Sentinel-1 only: cloud-proof but spectrally poor.
* ``unet-early-fusion`` — U-Net on the 14-band concatenation: the standard fusion baseline.
* ``reconstruct-then-segment`` — the reconstruction-first pipeline: a SAR-guided cloud-removal
  U-Net (optical + SAR -> cloud-free optical, trained with L1 against the clear acquisition) followed
  by the optical-only U-Net applied to the reconstruction. The segmenter reads a *detached*
  reconstruction, so the cloud-removal net is trained by its L1 loss alone, as in a two-stage pipeline;
  the training loop adds that L1 term whenever a batch carries ``optical_clear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.model.config import ReconstructThenSegmentConfig, UNetConfig
from cloudlulc.model.layers import ConvNormAct, Normalise, ResBlock, check_divisible
from cloudlulc.model.outputs import ModelOutput


class UNet(nn.Module):
    """Plain U-Net: ``len(widths)`` levels (stride 2**(levels-1)), GroupNorm, bilinear upsampling."""

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...], groups: int = 8) -> None:
        super().__init__()
        self.stride = 2 ** (len(widths) - 1)
        self.stem = nn.Sequential(ConvNormAct(in_channels, widths[0], groups=groups), ResBlock(widths[0], groups))
        self.downs = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(widths[i], widths[i + 1], stride=2, groups=groups), ResBlock(widths[i + 1], groups)
            )
            for i in range(len(widths) - 1)
        )
        self.ups = nn.ModuleList(
            ConvNormAct(widths[i + 1] + widths[i], widths[i], groups=groups) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            skip = skips.pop()
            y = up(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self.head(y)


class UNetSegmenter(nn.Module):
    """U-Net baseline reading optical, SAR or both (early fusion) in physical units."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        self.norm_optical = Normalise(config.optical_mean, config.optical_std)
        self.norm_sar = Normalise(config.sar_mean, config.sar_std)
        n_in = {"optical": len(config.s2_bands), "sar": len(config.s1_bands)}.get(
            config.inputs, len(config.s2_bands) + len(config.s1_bands)
        )
        self.unet = UNet(n_in, config.num_classes, config.widths, config.norm_groups)
        self.stride = self.unet.stride

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        check_divisible(optical, self.stride)
        if self.config.inputs == "optical":
            x = self.norm_optical(optical)
        elif self.config.inputs == "sar":
            x = self.norm_sar(sar)
        else:
            x = torch.cat([self.norm_optical(optical), self.norm_sar(sar)], dim=1)
        return ModelOutput(logits=self.unet(x))


class ReconstructThenSegment(nn.Module):
    """SAR-guided cloud removal, then optical-only segmentation of the reconstruction."""

    def __init__(self, config: ReconstructThenSegmentConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ReconstructThenSegmentConfig()
        n_opt, n_sar = len(config.s2_bands), len(config.s1_bands)
        self.norm_optical = Normalise(config.optical_mean, config.optical_std)
        self.norm_sar = Normalise(config.sar_mean, config.sar_std)
        self.reconstructor = UNet(n_opt + n_sar, n_opt, config.reconstruction_widths, config.norm_groups)
        self.segmenter = UNet(n_opt, config.num_classes, config.segmenter_widths, config.norm_groups)
        self.stride = max(self.reconstructor.stride, self.segmenter.stride)

    def reconstruct(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """Cloud-free optical estimate in *normalised* units (residual on the cloudy input)."""
        x_opt = self.norm_optical(optical)
        return x_opt + self.reconstructor(torch.cat([x_opt, self.norm_sar(sar)], dim=1))

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        check_divisible(optical, self.stride)
        recon = self.reconstruct(optical, sar)
        logits = self.segmenter(recon.detach())
        return ModelOutput(logits=logits, reconstruction=recon)
