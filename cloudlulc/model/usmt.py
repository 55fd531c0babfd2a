"""USMT: Unified Semantic Mapping Transformer.

Why: after HIAA the coarsest fused map mixes two physically different sensors. The USMT maps these
fused tokens into one LULC-oriented latent space (D dims) with global self-attention, so a pixel
under a thick cloud can borrow context from clear regions of the same class across the patch. The
semantic anchor loss (:mod:`cloudlulc.model.anchors`) shapes that space: tokens of one class cluster
round a class anchor.

Design: 1x1 projection C -> D; a convolutional positional encoding (depthwise 3x3, residual, as in
CPVT's PEG) so the encoding is valid for any H, W and tiling; ``layers`` pre-norm transformer encoder
layers (multi-head self-attention + MLP) over the h*w tokens; a final LayerNorm. The output is the
latent map [B, D, h, w], which both feeds the decoder and is returned as ``ModelOutput.latent``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvPositionalEncoding(nn.Module):
    """Depthwise-conv positional encoding: position from zero-padding at the borders, any size."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dw(x)


class USMT(nn.Module):
    """Projection, positional encoding and transformer layers; ``layers=0`` keeps only the projection
    (the ablation "USMT off")."""

    def __init__(
        self, in_channels: int, dim: int, layers: int = 1, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 1)
        self.layers = layers
        if layers == 0:
            return
        self.pos = ConvPositionalEncoding(dim)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=int(dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        if self.layers == 0:
            return self.proj(fused)
        x = self.pos(self.proj(fused))
        b, d, h, w = x.shape
        tokens = self.norm(self.encoder(x.flatten(2).transpose(1, 2)))
        return tokens.transpose(1, 2).reshape(b, d, h, w)
