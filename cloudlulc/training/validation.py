"""Validation by cloud bin, on one process or split over the processes of a data-parallel run."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from cloudlulc.model.calibration import calibration_of, scale_logits
from cloudlulc.model.config import ModelConfigBase
from cloudlulc.training.data import Missing, batch_cloud_fraction, prepare_batch, remove_modality
from cloudlulc.training.distributed import DistContext
from cloudlulc.training.metrics import ConfusionMatrix


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    amp: bool = False,
    dist: DistContext | None = None,
    missing: Missing | None = None,
) -> dict[str, Any]:
    """Stratified metrics (:class:`cloudlulc.training.metrics.ConfusionMatrix`) of ``model`` on a dataset,
    with the expected calibration error of its (calibrated, as inference applies it) confidence.

    ``missing="sar"`` / ``"optical"`` scores the model without that input, filled as inference fills it.
    With ``dist`` of a data-parallel run each process predicts every ``world_size``-th patch and the
    confusion matrices are summed over the processes, so every rank returns the metrics of the whole
    set. ``model`` is the bare network, never its DistributedDataParallel wrapper.
    """
    ctx = dist or DistContext()
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if isinstance(dataset_or_loader, DataLoader):
        if ctx.distributed:
            raise ValueError("evaluate_model: pass a Dataset (not a DataLoader) in a data-parallel run")
        loader = dataset_or_loader
    else:
        data = dataset_or_loader
        if ctx.distributed:
            data = Subset(data, range(ctx.rank, len(data), ctx.world_size))  # type: ignore[arg-type]
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    calibration = calibration_of(model)
    config = cast(ModelConfigBase, model.config)  # every cloudlulc.model network carries its config
    cm = ConfusionMatrix(num_classes=config.num_classes, class_names=config.class_names)
    for raw in loader:
        batch = remove_modality(prepare_batch(raw, model, device), model, missing)
        with torch.autocast(device_type="cuda", enabled=amp and device.type == "cuda"):
            out = model(batch["optical"], batch["sar"])
        probs = torch.softmax(
            scale_logits(out.logits.float(), calibration, batch["optical_missing"], batch["sar_missing"]), dim=1
        )
        confidence, pred = probs.max(1)
        cm.update(pred, batch["label"], batch_cloud_fraction(batch).cpu(), confidence)
    model.train(was_training)
    if ctx.distributed:
        counts = np.concatenate([cm.total.ravel(), cm.per_bin.ravel(), cm.n_patches])
        summed = ctx.sum(torch.from_numpy(counts).to(ctx.device)).cpu().numpy()
        k, nb = cm.num_classes, len(cm.bins)
        cm.total = summed[: k * k].reshape(k, k)
        cm.per_bin = summed[k * k : k * k * (nb + 1)].reshape(nb, k, k)
        cm.n_patches = summed[k * k * (nb + 1) :]
        cm.calibration = ctx.sum(torch.from_numpy(cm.calibration).to(ctx.device)).cpu().numpy()
    return cm.compute()
