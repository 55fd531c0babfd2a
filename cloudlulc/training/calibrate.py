"""Fit the confidence calibration of a trained network on held-out validation data.

Temperature scaling (Guo et al. 2017): one scalar ``T`` minimising the negative log-likelihood of
the validation labels under ``softmax(logits / T)``. Three temperatures are fitted
(:class:`~cloudlulc.model.calibration.Calibration`): ``temperature`` on the validation patches as they
are, ``temperature_optical_missing`` on the same patches with the optical input removed exactly as
inference removes it (every band at the model's fill value,
:func:`~cloudlulc.training.data.remove_modality`), and ``temperature_sar_missing`` with the radar
removed. The class map never changes; ECE before and after each fit is recorded in
``Calibration.fitted``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cloudlulc.classes import NODATA
from cloudlulc.model.calibration import Calibration
from cloudlulc.training.data import Missing, prepare_batch, remove_modality
from cloudlulc.training.metrics import expected_calibration_error

#: validation pixels kept per fit (a deterministic subsample): enough for a 1-parameter fit
MAX_PIXELS = 400_000


@torch.no_grad()
def collect_logits(
    model: nn.Module,
    dataset: Dataset,
    *,
    missing: Missing | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    max_pixels: int = MAX_PIXELS,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncalibrated logits [N, C] and labels [N] of labelled validation pixels (a seeded subsample)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n_total = len(dataset) * torch.as_tensor(dataset[0]["label"]).numel()  # type: ignore[arg-type]
    keep_rate = min(1.0, max_pixels / max(n_total, 1))
    gen = torch.Generator().manual_seed(seed)
    logits_parts, label_parts = [], []
    for raw in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = remove_modality(prepare_batch(raw, model, device), model, missing)
        logits = model(batch["optical"], batch["sar"]).logits.float()
        logits = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        label = batch["label"].reshape(-1)
        keep = (label != NODATA).cpu() & (torch.rand(label.numel(), generator=gen) < keep_rate)
        logits_parts.append(logits.cpu()[keep])
        label_parts.append(label.cpu()[keep])
    model.train(was_training)
    return torch.cat(logits_parts), torch.cat(label_parts)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature in [0.05, 20] that minimises the NLL of ``labels`` under ``softmax(logits / T)``."""
    if labels.numel() == 0:
        raise ValueError("no labelled validation pixels: cannot fit a temperature")

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


def _ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    conf, pred = torch.softmax(logits / temperature, dim=1).max(1)
    return expected_calibration_error(conf.numpy(), (pred == labels).numpy())


def fit_calibration(
    model: nn.Module,
    dataset: Dataset,
    *,
    description: str = "validation data",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Calibration:
    """The three temperatures of ``model`` on ``dataset``, with ECE before/after in ``fitted``."""
    fitted: dict[str, Any] = {"method": "NLL minimisation (temperature scaling)", "data": description}
    temps: dict[str, float] = {}
    plan: tuple[tuple[Missing | None, str], ...] = (
        (None, "optical_present"),
        ("optical", "optical_missing"),
        ("sar", "sar_missing"),
    )
    for missing, key in plan:
        logits, labels = collect_logits(model, dataset, missing=missing, batch_size=batch_size, device=device)
        t = fit_temperature(logits, labels)
        temps[key] = t
        fitted[key] = {
            "n_pixels": int(labels.numel()),
            "temperature": round(t, 4),
            "ece_before": round(_ece(logits, labels, 1.0), 5),
            "ece_after": round(_ece(logits, labels, t), 5),
            "accuracy": round(float((logits.argmax(1) == labels).float().mean()), 5),
        }
    return Calibration(
        temperature=temps["optical_present"],
        temperature_optical_missing=temps["optical_missing"],
        temperature_sar_missing=temps["sar_missing"],
        fitted=fitted,
    )


def calibration_summary(cal: Calibration) -> dict[str, Any]:
    """The figures of a fit as one flat dict (for logs and tables)."""
    out: dict[str, Any] = {
        "temperature": cal.temperature,
        "temperature_optical_missing": cal.missing,
        "temperature_sar_missing": cal.sar_missing,
    }
    for key in ("optical_present", "optical_missing", "sar_missing"):
        part = cal.fitted.get(key) or {}
        out[f"ece_before_{key}"] = part.get("ece_before")
        out[f"ece_after_{key}"] = part.get("ece_after")
    return out
