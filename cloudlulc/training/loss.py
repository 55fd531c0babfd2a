"""The training loss of every model in :mod:`cloudlulc.model` (they all return ``ModelOutput``).

loss = CE(logits, label, ignore 255; optionally class-weighted)
+ ``anchor_weight`` x semantic anchor loss (CloudLULC-Net: latent vs EMA class anchors)
+ ``reliability_weight`` x ORM BCE against 1 - cloud (only where the batch carries ``cloud``)
+ ``reconstruction_weight`` x L1 of the reconstruction-first baseline against ``optical_clear``.

Every term is a mean over the pixels (or cells) it counts. Each term is computed as a sum and a
count; the counts (and, for the logged values, the sums) are added up over the processes of a
data-parallel run before dividing. So the loss of a process's share is its sum over the *global*
count, times the world size: DistributedDataParallel averages gradients over the processes, and the
average is then the gradient of the global-batch mean, ignored pixels and all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.classes import NODATA
from cloudlulc.model.orm import reliability_terms
from cloudlulc.training.config import TrainConfig
from cloudlulc.training.distributed import DistContext


def compute_loss(
    model: nn.Module,
    out: Any,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    dist: DistContext | None = None,
    class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total training loss of this process's share and its parts over the global batch.

    ``model`` is the bare network (not its DistributedDataParallel wrapper); ``dist`` the process
    group's context (None: one process). The returned parts are global means, the same on every rank.
    ``class_weights`` [C] weight each pixel's cross-entropy by its class (the mean is then over the
    summed weights, as ``F.cross_entropy`` does).
    """
    ctx = dist or DistContext()
    terms: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # name, sum, count
    label = batch["label"]
    weight = None if class_weights is None else class_weights.to(out.logits.device, torch.float32)
    ce = F.cross_entropy(out.logits.float(), label, weight=weight, ignore_index=NODATA, reduction="sum")
    valid = label != NODATA
    count = valid.sum().float() if weight is None else weight[label[valid]].sum()
    terms.append(("ce", ce, count))
    anchors = getattr(model, "anchors", None)
    if anchors is not None and out.latent is not None and cfg.anchor_weight > 0:
        total, n = anchors.loss_terms(out.latent, label, reduce=ctx.sum if ctx.distributed else None)
        terms.append(("anchor", total, torch.tensor(float(n), device=ce.device)))
    if out.reliability_pyramid and "cloud" in batch and cfg.reliability_weight > 0:
        for total, weight in reliability_terms(out.reliability_pyramid, batch["cloud"], batch.get("valid")):
            terms.append(("reliability", total, weight))  # one term per pyramid level
    if out.reconstruction is not None and "optical_clear" in batch and cfg.reconstruction_weight > 0:
        norm_optical = model.norm_optical
        assert isinstance(norm_optical, nn.Module)
        target = norm_optical(batch["optical_clear"])
        err = (out.reconstruction.float() - target).abs().mean(1)
        mask = batch.get("clear_valid", batch["valid"]).float()
        terms.append(("reconstruction", (err * mask).sum(), mask.sum()))

    # one collective for every count and every (detached) sum
    glob = ctx.sum(torch.stack([torch.stack([s.detach().float(), n.float()]) for _, s, n in terms])).tolist()
    weights = {
        "ce": 1.0,
        "anchor": cfg.anchor_weight,
        "reliability": cfg.reliability_weight,
        "reconstruction": cfg.reconstruction_weight,
    }
    # reliability is the mean over the levels that hold a known cell anywhere in the global batch
    known_levels = max(1, sum(1 for (name, _, _), (_, g_n) in zip(terms, glob) if name == "reliability" and g_n > 0))
    loss = ce.new_zeros(())
    parts: dict[str, float] = {}
    for (name, s, _), (g_sum, g_n) in zip(terms, glob):
        share = 1.0 / known_levels if name == "reliability" else 1.0
        denom = max(g_n, 1.0)  # a term counting nothing sums to zero (and keeps its graph)
        loss = loss + (weights[name] * share * ctx.world_size / denom) * s
        parts[name] = parts.get(name, 0.0) + share * g_sum / denom
    parts["total"] = sum(weights[name] * v for name, v in parts.items())
    return loss, parts
