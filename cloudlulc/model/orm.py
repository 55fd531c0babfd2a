"""ORM: Optical Reliability Module.

Why: under cloud and cloud shadow the optical encoder produces confident but wrong features. Instead
of masking clouds with SCL (unavailable or wrong in near-real-time), the network predicts, per scale,
how far the optical response can be trusted and lets the SAR stream take over where it cannot.

Design (one ORM per encoder scale, channels C):

* spatial reliability ``r = sigmoid(conv1x1(GELU(conv3x3([f_opt, f_sar]))))`` in [0, 1], shape [B,1,h,w].
  Conditioning on SAR helps tell "bright because cloud" from "bright because bare soil/built-up":
  SAR sees the ground under the cloud, so a mismatch between the two is evidence of cloud.
  The last bias starts at +2 (r ~ 0.88) so training begins from "trust the optical".
* channel gate ``g = sigmoid(MLP(avgpool(r * f_opt)))`` [B,C,1,1]: squeeze-excitation computed on the
  *reliable* part only, so a scene-wide haze can down-weight the channels it corrupts most
  (e.g. the visible bands' responses) while keeping the rest.
* suppression and fill-in: ``f_opt' = r * g * f_opt + (1 - r) * fill(f_sar)`` with ``fill`` a 1x1
  projection of the SAR features into the optical feature space. Where r -> 0 the optical feature is
  replaced by a SAR-derived one; where r -> 1 it is the (re-weighted) optical feature.

``r`` is returned for the auxiliary loss and for the ``optical_reliability`` product. The auxiliary
loss (:func:`reliability_loss`) is a BCE of each pyramid level against ``1 - cloud`` (SCL cloud and
shadow, average-pooled to the level's resolution) when a cloud mask is available during training.
Inference never needs SCL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.model.layers import group_norm


class OpticalReliabilityModule(nn.Module):
    """Predict optical reliability at one scale and gate/fill the optical features with it."""

    def __init__(self, channels: int, groups: int = 8, reduction: int = 4, mode: str = "learned") -> None:
        super().__init__()
        #: "learned" (the design above), "constant" (r = 0.5 everywhere, no channel gate: ablation)
        self.mode = mode
        hidden = max(channels // 2, 8)
        self.reliability = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 3, padding=1, bias=False),
            group_norm(hidden, groups),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1),
        )
        reliability_out = self.reliability[-1]
        assert isinstance(reliability_out, nn.Conv2d) and reliability_out.bias is not None
        nn.init.constant_(reliability_out.bias, 2.0)
        squeeze = max(channels // reduction, 4)
        self.channel_gate = nn.Sequential(nn.Linear(channels, squeeze), nn.GELU(), nn.Linear(squeeze, channels))
        # small weights, positive bias: the gate starts near 0.95 (identity-like) but gradients still
        # reach the first layer (a zero init would block them until the first update)
        gate_out = self.channel_gate[-1]
        assert isinstance(gate_out, nn.Linear)
        nn.init.normal_(gate_out.weight, std=0.01)
        nn.init.constant_(gate_out.bias, 3.0)
        self.fill = nn.Conv2d(channels, channels, 1)

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (reliability-weighted optical features, reliability map [B,1,h,w])."""
        if self.mode == "constant":
            r = torch.full_like(f_opt[:, :1], 0.5)
            return r * f_opt + (1.0 - r) * self.fill(f_sar), r
        r = torch.sigmoid(self.reliability(torch.cat([f_opt, f_sar], dim=1)))
        pooled = (f_opt * r).sum(dim=(2, 3)) / r.sum(dim=(2, 3)).clamp_min(1e-6)
        g = torch.sigmoid(self.channel_gate(pooled))[:, :, None, None]
        out = r * g * f_opt + (1.0 - r) * self.fill(f_sar)
        return out, r


def reliability_terms(
    pyramid: list[torch.Tensor], cloud: torch.Tensor, valid: torch.Tensor | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per pyramid level: the weighted BCE summed over the level's cells, and the weight summed.

    The sums let a data-parallel trainer normalise by the whole global batch (see
    :func:`reliability_loss` for the loss itself).
    """
    cloud = cloud.float()
    known = (cloud <= 1) if valid is None else (valid & (cloud <= 1))
    clear = (1.0 - cloud.clamp(0, 1)) * known
    known_f = known.float()
    terms = []
    for r in pyramid:
        h, w = r.shape[-2:]
        k = F.adaptive_avg_pool2d(known_f[:, None], (h, w))
        target = F.adaptive_avg_pool2d(clear[:, None], (h, w)) / k.clamp_min(1e-6)
        weight = (k > 0.5).float()
        # BCE is unsafe under autocast; compute it in float32 from the probabilities.
        bce = F.binary_cross_entropy(r.float().clamp(1e-6, 1 - 1e-6), target.clamp(0, 1), reduction="none")
        terms.append(((bce * weight).sum(), weight.sum()))
    return terms


def reliability_loss(
    pyramid: list[torch.Tensor], cloud: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Auxiliary BCE of every reliability level against ``1 - cloud``.

    ``cloud`` is [B,H,W] in {0,1} (255 or ``valid == False`` = unknown, ignored). Each level's target
    is the clear fraction inside its cell (area pooling), so a half-cloudy cell aims at 0.5. The loss
    is the mean over levels (with any known cell) of each level's weighted mean BCE.
    """
    losses = [total / weight for total, weight in reliability_terms(pyramid, cloud, valid) if weight > 0]
    if not losses:
        return pyramid[0].sum() * 0.0
    return torch.stack(losses).mean()
