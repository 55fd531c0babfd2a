"""The training loss of every model in :mod:`cloudlulc.model` (they all return ``ModelOutput``).

loss = CE(logits, label, ignore 255)
+ ``anchor_weight`` x semantic anchor loss (CloudLULC-Net: latent vs EMA class anchors)
+ ``reliability_weight`` x ORM BCE against 1 - cloud (only where the batch carries ``cloud``)
+ ``reconstruction_weight`` x L1 of the reconstruction-first baseline against ``optical_clear``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.classes import NODATA
from cloudlulc.model.orm import reliability_loss
from cloudlulc.training.config import TrainConfig


def compute_loss(
    model: nn.Module, out: Any, batch: dict[str, torch.Tensor], cfg: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total training loss and its parts (see module docstring)."""
    label = batch["label"]
    ce = F.cross_entropy(out.logits.float(), label, ignore_index=NODATA)
    if not torch.isfinite(ce):  # an all-ignore batch
        ce = out.logits.sum() * 0.0
    total, parts = ce, {"ce": float(ce.detach())}
    anchors = getattr(model, "anchors", None)
    if anchors is not None and out.latent is not None and cfg.anchor_weight > 0:
        la = anchors(out.latent, label)
        total = total + cfg.anchor_weight * la
        parts["anchor"] = float(la.detach())
    if out.reliability_pyramid and "cloud" in batch and cfg.reliability_weight > 0:
        lr_ = reliability_loss(out.reliability_pyramid, batch["cloud"], batch.get("valid"))
        total = total + cfg.reliability_weight * lr_
        parts["reliability"] = float(lr_.detach())
    if out.reconstruction is not None and "optical_clear" in batch and cfg.reconstruction_weight > 0:
        target = model.norm_optical(batch["optical_clear"])
        err = (out.reconstruction.float() - target).abs().mean(1)
        mask = batch.get("clear_valid", batch["valid"]).float()
        l1 = (err * mask).sum() / mask.sum().clamp_min(1)
        total = total + cfg.reconstruction_weight * l1
        parts["reconstruction"] = float(l1.detach())
    parts["total"] = float(total.detach())
    return total, parts
