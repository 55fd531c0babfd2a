"""CloudLULC-Net: cloud-robust LULC segmentation from Sentinel-2 + Sentinel-1.

No public implementation exists; this is our design from the method description (documented in
docs/model.md):

```
optical [B,12,H,W] (reflectance) --normalise--> optical encoder (4 stages, strides 2..16) --+
sar     [B, 2,H,W] (dB)          --normalise--> SAR encoder     (4 stages, strides 2..16) --+
      per scale i:  ORM_i(opt_i, sar_i) -> opt_i' (reliability-gated, SAR fill-in), r_i
                    HIAA_i(opt_i', sar_i, F_{i-1}) -> F_i     (SHOI + CHOI, progressive)
      USMT(F_4) -> latent [B,D,H/16,W/16]      (semantic anchors shape it during training)
      decoder: latent + F_4 -> up + F_3 -> up + F_2 -> up + F_1 -> head -> up x2 -> logits [B,6,H,W]
```

The two encoders are independent (no weight sharing: the sensors differ physically). The ORM sees the
raw optical features of its scale, so every scale judges reliability from its own receptive field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.model.anchors import SemanticAnchors
from cloudlulc.model.config import CloudLULCNetConfig
from cloudlulc.model.hiaa import HIAA
from cloudlulc.model.layers import ConvNormAct, Encoder, Normalise, check_divisible
from cloudlulc.model.orm import OpticalReliabilityModule
from cloudlulc.model.outputs import ModelOutput
from cloudlulc.model.usmt import USMT


class FPNDecoder(nn.Module):
    """Top-down decoder: latent -> stride 2 with skip connections from the fused features."""

    def __init__(self, latent_dim: int, skip_widths: tuple[int, ...], width: int, num_classes: int, groups: int = 8):
        super().__init__()
        self.top = nn.Conv2d(latent_dim, width, 1)
        self.top_skip = nn.Conv2d(skip_widths[-1], width, 1)
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in skip_widths[:-1][::-1])
        self.blocks = nn.ModuleList(ConvNormAct(2 * width, width, groups=groups) for _ in skip_widths[:-1])
        self.head = nn.Sequential(ConvNormAct(width, width, groups=groups), nn.Conv2d(width, num_classes, 1))

    def forward(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.top(latent) + self.top_skip(skips[-1])
        for lateral, block, skip in zip(self.laterals, self.blocks, skips[:-1][::-1], strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, lateral(skip)], dim=1))
        return self.head(x)


class CloudLULCNet(nn.Module):
    """Dual-encoder ORM + HIAA + USMT network; ``forward(optical, sar) -> ModelOutput``."""

    def __init__(self, config: CloudLULCNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CloudLULCNetConfig()
        g = config.norm_groups
        self.stride = 2 ** len(config.widths)
        self.norm_optical = Normalise(config.optical_mean, config.optical_std)
        self.norm_sar = Normalise(config.sar_mean, config.sar_std)
        self.optical_encoder = Encoder(len(config.s2_bands), config.widths, config.depths, g)
        self.sar_encoder = Encoder(len(config.s1_bands), config.widths, config.depths, g)
        # ablations (config.orm / fusion / usmt) change these modules only; the default is the design above
        self.orm = (
            nn.ModuleList(OpticalReliabilityModule(w, g, mode=config.orm) for w in config.widths)
            if config.orm != "off"
            else None
        )
        self.hiaa = HIAA(config.widths, config.hiaa_order, g, concat=config.fusion == "concat")
        self.usmt = USMT(
            config.widths[-1],
            config.latent_dim,
            config.usmt_layers if config.usmt else 0,
            config.usmt_heads,
            config.usmt_mlp_ratio,
            config.dropout,
        )
        self.decoder = FPNDecoder(config.latent_dim, config.widths, config.decoder_width, config.num_classes, g)
        self.anchors = SemanticAnchors(config.num_classes, config.latent_dim, ignore_index=config.ignore_index)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        check_divisible(optical, self.stride)
        if sar.shape[-2:] != optical.shape[-2:]:
            raise ValueError(f"optical {tuple(optical.shape)} and sar {tuple(sar.shape)} must share H and W")
        size = optical.shape[-2:]
        opt_feats = self.optical_encoder(self.norm_optical(optical))
        sar_feats = self.sar_encoder(self.norm_sar(sar))
        gated, pyramid = list(opt_feats), []
        if self.orm is not None:
            gated = []
            for orm, fo, fs in zip(self.orm, opt_feats, sar_feats, strict=True):
                g, r = orm(fo, fs)
                gated.append(g)
                pyramid.append(r)
        fused = self.hiaa(gated, sar_feats)
        latent = self.usmt(fused[-1])
        logits = F.interpolate(self.decoder(latent, fused), size=size, mode="bilinear", align_corners=False)
        if not pyramid:
            return ModelOutput(logits=logits, latent=latent)
        reliability = F.interpolate(pyramid[0], size=size, mode="bilinear", align_corners=False)
        # a constant ORM has nothing to learn from the cloud mask: no pyramid for the auxiliary loss
        aux = pyramid[::-1] if self.config.orm == "learned" else []
        return ModelOutput(logits=logits, reliability=reliability, latent=latent, reliability_pyramid=aux)
