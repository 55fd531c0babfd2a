"""What every segmentation model in :mod:`cloudlulc.model` returns.

A fixed output type lets training, inference and evaluation treat CloudLULC-Net and the baselines
alike: baselines leave the auxiliaries as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    #: class scores, [B, num_classes, H, W] at input resolution
    logits: torch.Tensor
    #: ORM optical reliability in [0, 1], [B, 1, H, W] at input resolution (None for baselines)
    reliability: torch.Tensor | None = None
    #: USMT semantic latent tokens, [B, D, h, w] at the coarsest scale (None for baselines)
    latent: torch.Tensor | None = None
    #: per-scale reliability maps for auxiliary losses (coarse to fine), optional
    reliability_pyramid: list[torch.Tensor] | None = None
    #: reconstruction-first baseline only: cloud-free optical estimate in *normalised* units
    #: [B, 12, H, W], trained with L1 against the normalised clear acquisition
    reconstruction: torch.Tensor | None = None
