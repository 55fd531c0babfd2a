"""Score segmentation models on a dataset split with :class:`cloudlulc.training.metrics.ConfusionMatrix`.

Any ``torch.utils.data.Dataset`` yielding the dataset contract works (``ZarrPatchDataset``,
``GeoTiffLayoutDataset``, :class:`~cloudlulc.evaluation.simulated.SimulatedSplit`): a dict with
``optical`` [12,H,W] reflectance, ``sar`` [2,H,W] dB, ``label`` [H,W] (255 ignore) and optionally
``cloud`` [H,W] (1 cloud, 0 clear, 255 unknown). Inputs are filled before inference because the models
require finite inputs (with the model's band means, as in training and inference); the filled pixels
are excluded from scoring for *every* model (``nan_policy``, default "any" as in training) so all
methods are compared on one mask. Samples without a known cloud mask count in the totals but in no
cloud bin.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cloudlulc.classes import NODATA
from cloudlulc.evaluation.params import ModelSpec
from cloudlulc.evaluation.scoring import BinnedScorer
from cloudlulc.inference.device import resolve_device
from cloudlulc.model.calibration import calibration_of, scale_logits
from cloudlulc.model.inputs import OPTICAL_FILL, SAR_FILL, fill_nan, fill_values, model_stride
from cloudlulc.model.io import load_model as load_weights

log = logging.getLogger(__name__)

NanPolicy = Literal["any", "all", "none"]

ModelLike = nn.Module | ModelSpec | str | Path


def load_model(spec: ModelLike) -> nn.Module:
    """An ``nn.Module`` from a module, a :class:`ModelSpec`, a weights path or a ``build_model`` name."""
    if isinstance(spec, nn.Module):
        return spec
    from cloudlulc.model import build_model, from_pretrained  # lazy: model code lands independently

    if isinstance(spec, ModelSpec):
        if spec.weights is not None:
            return from_pretrained(spec.weights)
        assert spec.model is not None  # ModelSpec's validator defaults it to the name
        return build_model(spec.model, **spec.overrides)
    if isinstance(spec, Path) or (
        isinstance(spec, str) and (spec.endswith((".safetensors", ".json")) or Path(spec).exists())
    ):
        return load_weights(Path(spec))[0]
    return build_model(str(spec))


def describe_model(spec: ModelLike, net: nn.Module) -> dict[str, Any]:
    """What was evaluated, for the report: architecture, size, and the weights file with its sha256."""
    cfg = getattr(net, "config", None)
    info: dict[str, Any] = {
        "class": type(net).__name__,
        "architecture": getattr(cfg, "arch", None) or getattr(cfg, "name", None) or type(net).__name__,
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "weights": None,
        "weights_sha256": None,
    }
    path = spec.weights if isinstance(spec, ModelSpec) else (Path(spec) if isinstance(spec, (str, Path)) else None)
    if path is not None and (Path(path).exists() or Path(path).with_suffix(".safetensors").exists()):
        from cloudlulc.model.io import sha256_file

        st = Path(path).with_suffix(".safetensors")
        info["weights"] = str(st)
        info["weights_sha256"] = sha256_file(st) if st.exists() else None
    elif isinstance(spec, ModelSpec):
        info["weights"] = f"untrained build_model({spec.model!r})"
    return info


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack the array fields of dataset samples (numpy or torch) into batch tensors; drop the rest."""
    keys = ("optical", "sar", "label", "cloud")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        if all(key in s and s[key] is not None for s in samples):
            out[key] = torch.stack([_as_tensor(s[key]) for s in samples])
    missing = [k for k in ("optical", "sar", "label") if k not in out]
    if missing:
        raise KeyError(
            f"dataset samples lack {missing}; evaluation needs optical, sar and label (see dataset contract)"
        )
    return out


def prepare_batch(
    batch: Mapping[str, torch.Tensor],
    nan_policy: NanPolicy = "any",
    fills: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Finite float inputs, a target with unusable pixels set to 255, and per-sample cloud fractions.

    Returns ``(optical, sar, target, cloud_fraction)``. ``cloud_fraction`` [B] is the cloudy share of
    the *scored* pixels with a known mask (``cloud`` 255 = unknown), NaN for a sample with no known
    mask pixel, and ``None`` when the samples carry no ``cloud`` at all. ``fills`` are per-band (or
    scalar) values for non-finite inputs (default: :data:`~cloudlulc.model.inputs.OPTICAL_FILL`,
    :data:`~cloudlulc.model.inputs.SAR_FILL`).
    """
    optical = batch["optical"].float()
    sar = batch["sar"].float()
    target = batch["label"].long().clone()
    if target.ndim == 4:  # [B,1,H,W]
        target = target[:, 0]
    bad_opt = ~torch.isfinite(optical)
    bad_sar = ~torch.isfinite(sar)
    if nan_policy == "any":
        unusable = bad_opt.any(1) | bad_sar.any(1)
    elif nan_policy == "all":
        unusable = bad_opt.all(1) & bad_sar.all(1)
    else:
        unusable = torch.zeros_like(target, dtype=torch.bool)
    target[unusable] = NODATA
    target[(target < 0) | (target > NODATA)] = NODATA
    opt_fill, sar_fill = fills if fills is not None else (np.array([OPTICAL_FILL]), np.array([SAR_FILL]))
    optical, _ = fill_nan(optical, opt_fill)
    sar, _ = fill_nan(sar, sar_fill)

    cloud_fraction = None
    if "cloud" in batch:
        cloud = batch["cloud"]
        if cloud.ndim == 4:
            cloud = cloud[:, 0]
        cloud = cloud.to(torch.int64)
        known = (cloud <= 1) & (target != NODATA)
        cloudy = (cloud == 1) & known
        n_known = known.flatten(1).sum(1)
        frac = cloudy.flatten(1).sum(1).float() / n_known.clamp(min=1).float()
        cloud_fraction = torch.where(n_known > 0, frac, torch.full_like(frac, float("nan")))
    return optical, sar, target, cloud_fraction


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a ``ModelOutput``, a dict with ``logits`` or a bare tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if logits is None:
        raise TypeError(f"model returned {type(output).__name__}; expected ModelOutput or a logits tensor")
    return logits


@torch.no_grad()
def predict(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """Class indices [B,H,W]; inputs are reflect-padded to the model stride and the output cropped back."""
    return predict_logits(model, optical, sar).argmax(1)


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    optical: torch.Tensor,
    sar: torch.Tensor,
    optical_missing: torch.Tensor | None = None,
    sar_missing: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class probabilities [B,C,H,W] with the model's confidence calibration applied as inference
    applies it (``optical_missing`` / ``sar_missing`` [B,H,W]: pixels without optical data or without
    radar take their own temperature)."""
    logits = predict_logits(model, optical, sar).float()
    return torch.softmax(scale_logits(logits, calibration_of(model), optical_missing, sar_missing), dim=1)


@torch.no_grad()
def predict_logits(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """Logits [B,C,H,W]; inputs are reflect-padded to the model stride and the output cropped back."""
    h, w = optical.shape[-2:]
    stride = model_stride(model)
    ph, pw = (math.ceil(h / stride) * stride - h), (math.ceil(w / stride) * stride - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        optical = F.pad(optical, (0, pw, 0, ph), mode=mode)
        sar = F.pad(sar, (0, pw, 0, ph), mode=mode)
    logits = logits_of(model(optical, sar))
    return logits[..., :h, :w]


def evaluate_model(
    model: ModelLike,
    dataset: Dataset,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    nan_policy: NanPolicy = "any",
) -> dict[str, Any]:
    """``ConfusionMatrix.compute()`` of one model over a dataset split (OA, macro F1, mIoU, per class,
    ECE of the calibrated confidence, all per cloud bin too) plus ``cloud_known``,
    ``n_patches_unknown_cloud`` and ``model`` (what was evaluated)."""
    dev = resolve_device(device)
    net = load_model(model).to(dev).eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_samples
    )
    fills = fill_values(net)
    scorer = BinnedScorer()
    for batch in loader:
        optical_missing = ~torch.isfinite(batch["optical"].float()).any(1)  # no optical band has a value
        sar_missing = ~torch.isfinite(batch["sar"].float()).any(1)
        optical, sar, target, cloud_fraction = prepare_batch(batch, nan_policy, fills)
        confidence, pred = predict_proba(net, optical.to(dev), sar.to(dev), optical_missing, sar_missing).max(1)
        scorer.update(pred.cpu(), target, cloud_fraction, confidence.cpu())
    if scorer.n_samples == 0:
        raise ValueError(f"the dataset split is empty ({type(dataset).__name__} has no samples): nothing to evaluate")
    result = scorer.compute()
    result["model"] = describe_model(model, net)
    return result


def evaluate(
    models: Mapping[str, ModelLike] | Sequence[ModelSpec],
    dataset: Dataset,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    nan_policy: NanPolicy = "any",
) -> dict[str, dict[str, Any]]:
    """Score several models on one split; returns ``{name: metrics}`` in the given order."""
    items = models.items() if isinstance(models, Mapping) else [(m.name, m) for m in models]
    results: dict[str, dict[str, Any]] = {}
    for name, spec in items:
        log.info("evaluating %s", name)
        results[name] = evaluate_model(
            spec, dataset, batch_size=batch_size, device=device, num_workers=num_workers, nan_policy=nan_policy
        )
    return results
