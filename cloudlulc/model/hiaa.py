"""HIAA: High-order Interaction Attention Aggregation of optical and SAR features.

Why: concatenation or addition (early/late fusion) only models first-order, pixel-wise relations
between the modalities. Under partial cloud the useful relation is higher order and contextual:
"this SAR texture, in this neighbourhood, means the optical response should look like that". HIAA
fuses each scale with two complementary high-order interactions and aggregates the scales
progressively (fine to coarse).

SHOI — spatial high-order interaction (cross-modal recursive gated convolution). Following gnConv
(HorNet), an order-n interaction is ``p_{k+1} = phi_k(p_k) * q_k`` with ``q_k`` large-kernel
depthwise-convolved gates; here the *gates come from the other modality*: optical features are
modulated n times by spatial context from SAR and vice versa, giving n-th order cross-modal products
at O(n) cost. Channel widths double at each order (C/2^(n-1) ... C) as in gnConv.

CHOI — channel high-order interaction. Second-order statistics: the cross-modal correlation
(normalised Gram) matrix ``K = Z_opt Z_sar^T / N`` [B,C,C] of the centred, unit-variance features
says which optical channels co-vary with which SAR channels in *this* patch. A learnt row projection
of K (and of K^T) yields channel weights for each modality, so channels that the other modality
corroborates are amplified and uncorroborated ones (typically cloud-driven) are damped.

Aggregation — ``F_i = conv1x1([SHOI_i, CHOI_i]) + down(F_{i-1})``: each scale's fused feature also
receives the previous (finer) fused feature through a strided conv, so the coarsest fused map that
feeds the USMT has seen every scale.
"""

from __future__ import annotations

import torch
from torch import nn

from cloudlulc.model.layers import ConvNormAct, group_norm


def _feasible_order(channels: int, order: int) -> int:
    """Largest order <= ``order`` for which the narrowest branch C/2^(n-1) keeps >= 4 channels."""
    while order > 1 and (channels % (2 ** (order - 1)) or channels // 2 ** (order - 1) < 4):
        order -= 1
    return order


class CrossModalGnConv(nn.Module):
    """Order-n recursive gated convolution of ``x`` with gates computed from ``guide``."""

    def __init__(self, channels: int, order: int = 3, kernel: int = 7) -> None:
        super().__init__()
        self.order = _feasible_order(channels, order)
        self.dims = [channels // 2**i for i in range(self.order)][::-1]  # narrow to wide
        self.proj_in = nn.Conv2d(channels, self.dims[0], 1)
        self.gate_in = nn.Conv2d(channels, sum(self.dims), 1)
        self.gate_dw = nn.Conv2d(sum(self.dims), sum(self.dims), kernel, padding=kernel // 2, groups=sum(self.dims))
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(self.order - 1))
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.scale = 1.0 / 3.0  # gnConv's gate scaling keeps the n-fold product well conditioned

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        p = self.proj_in(x)
        gates = torch.split(self.gate_dw(self.gate_in(guide)) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for i, pw in enumerate(self.pws):
            p = pw(p) * gates[i + 1]
        return self.proj_out(p)


class SHOI(nn.Module):
    """Spatial high-order interaction in both directions (optical<-SAR gates, SAR<-optical gates)."""

    def __init__(self, channels: int, order: int = 3, groups: int = 8) -> None:
        super().__init__()
        self.opt_by_sar = CrossModalGnConv(channels, order)
        self.sar_by_opt = CrossModalGnConv(channels, order)
        self.norm_o = group_norm(channels, groups)
        self.norm_s = group_norm(channels, groups)
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor) -> torch.Tensor:
        o, s = self.norm_o(f_opt), self.norm_s(f_sar)
        y_o = f_opt + self.opt_by_sar(o, s)
        y_s = f_sar + self.sar_by_opt(s, o)
        return self.merge(torch.cat([y_o, y_s], dim=1))


class CHOI(nn.Module):
    """Channel high-order interaction from the cross-modal channel correlation matrix."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # a row of K (length C) -> one logit per channel; separate heads for each modality
        self.row_opt = nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, 1))
        self.row_sar = nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, 1))
        for head in (self.row_opt, self.row_sar):
            head_out = head[-1]
            assert isinstance(head_out, nn.Linear)
            nn.init.normal_(head_out.weight, std=0.01)  # starts ~ sigmoid(2) = 0.88 everywhere
            nn.init.constant_(head_out.bias, 2.0)
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    @staticmethod
    def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cross-correlation matrix [B,C,C] of two feature maps over their spatial positions."""
        a = a.flatten(2).float()
        b = b.flatten(2).float()
        a = (a - a.mean(-1, keepdim=True)) / (a.std(-1, keepdim=True) + 1e-5)
        b = (b - b.mean(-1, keepdim=True)) / (b.std(-1, keepdim=True) + 1e-5)
        return a @ b.transpose(1, 2) / a.shape[-1]

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor) -> torch.Tensor:
        k = self.correlation(f_opt, f_sar).to(f_opt.dtype)  # [B, C_opt, C_sar]
        w_opt = torch.sigmoid(self.row_opt(k))[..., None]  # [B, C, 1] -> [B, C, 1, 1]
        w_sar = torch.sigmoid(self.row_sar(k.transpose(1, 2)))[..., None]
        return self.merge(torch.cat([f_opt * w_opt, f_sar * w_sar], dim=1))


class HIAAStage(nn.Module):
    """Fuse one scale with SHOI + CHOI and add the previous scale's fused feature."""

    def __init__(self, channels: int, prev_channels: int | None, order: int = 3, groups: int = 8) -> None:
        super().__init__()
        self.shoi = SHOI(channels, order, groups)
        self.choi = CHOI(channels)
        self.fuse = ConvNormAct(2 * channels, channels, kernel=1, groups=groups)
        self.down = ConvNormAct(prev_channels, channels, stride=2, groups=groups) if prev_channels else None

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        fused = self.fuse(torch.cat([self.shoi(f_opt, f_sar), self.choi(f_opt, f_sar)], dim=1))
        if self.down is not None and prev is not None:
            fused = fused + self.down(prev)
        return fused


class ConcatStage(nn.Module):
    """Ablation of :class:`HIAAStage`: a 1x1 convolution over the concatenated modalities (first order)."""

    def __init__(self, channels: int, prev_channels: int | None, groups: int = 8) -> None:
        super().__init__()
        self.fuse = ConvNormAct(2 * channels, channels, kernel=1, groups=groups)
        self.down = ConvNormAct(prev_channels, channels, stride=2, groups=groups) if prev_channels else None

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        fused = self.fuse(torch.cat([f_opt, f_sar], dim=1))
        if self.down is not None and prev is not None:
            fused = fused + self.down(prev)
        return fused


class HIAA(nn.Module):
    """Progressive multi-scale HIAA: returns the fused feature of every scale (fine to coarse).

    ``concat=True`` replaces SHOI + CHOI by concatenation at every scale (the ablation).
    """

    def __init__(self, widths: tuple[int, ...], order: int = 3, groups: int = 8, *, concat: bool = False) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            ConcatStage(w, widths[i - 1] if i else None, groups)
            if concat
            else HIAAStage(w, widths[i - 1] if i else None, order, groups)
            for i, w in enumerate(widths)
        )

    def forward(self, opt_feats: list[torch.Tensor], sar_feats: list[torch.Tensor]) -> list[torch.Tensor]:
        fused: list[torch.Tensor] = []
        prev = None
        for stage, fo, fs in zip(self.stages, opt_feats, sar_feats, strict=True):
            prev = stage(fo, fs, prev)
            fused.append(prev)
        return fused
