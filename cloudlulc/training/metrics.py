"""Segmentation metrics stratified by cloud cover.

Why stratify: a model that is good on clear patches and useless under cloud has a fine overall score
when clear patches dominate. Each patch is assigned to a bin by its cloud fraction (from the SCL cloud
mask, or the simulator's mask) and its pixels are counted in that bin's confusion matrix and in the
total. Bins: 0-10, 10-30, 30-60, 60-100 % (lower bound inclusive; 100 % falls in the last bin).

``compute()`` returns plain JSON-able data (floats, ints, lists, dicts; undefined values are None):

```
{"class_names": [...], "bins": ["0-10", ...],
 "total": {"oa", "macro_f1", "miou", "iou": {class: v}, "f1": {class: v}, "n_pixels", "n_patches",
           "confusion": [[...]]},
 "per_bin": {"0-10": {same keys}, ...}}
```

With ``confidence`` (the top-class probability of each pixel) passed to ``update``, every score dict
also holds ``ece``: the expected calibration error over 10 equal-width confidence bins
(:func:`expected_calibration_error`), None where nothing was scored.

Conventions: rows of the confusion matrix are the reference (target), columns the prediction; pixels
whose target is ``ignore_index`` (255) are skipped; a class's IoU/F1 is undefined (None) when it is
absent from both target and prediction, and macro averages run over the defined classes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cloudlulc.classes import CLASS_NAMES, NODATA

#: Cloud-cover bins in percent of the patch, [lo, hi).
CLOUD_BINS: tuple[tuple[float, float], ...] = ((0, 10), (10, 30), (30, 60), (60, 100))

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike | Sequence[float] | float) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


#: Confidence bins of the expected calibration error.
ECE_BINS = 10


def calibration_histogram(
    confidence: ArrayLike, correct: ArrayLike, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: pixel count, sum of confidences, count of correct pixels."""
    conf = _np(confidence).astype(np.float64).ravel()
    ok = _np(correct).astype(np.float64).ravel()
    if conf.shape != ok.shape:
        raise ValueError(f"confidence {conf.shape} and correct {ok.shape} differ in size")
    idx = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    return (
        np.bincount(idx, minlength=n_bins).astype(np.float64),
        np.bincount(idx, weights=conf, minlength=n_bins),
        np.bincount(idx, weights=ok, minlength=n_bins),
    )


def ece_from_histogram(counts: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> float | None:
    """ECE of a :func:`calibration_histogram` (None when it counts nothing)."""
    total = float(counts.sum())
    if total == 0:
        return None
    safe = np.maximum(counts, 1)
    return float(np.sum(counts / total * np.abs(correct_sum / safe - conf_sum / safe)))


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: ``sum_b n_b / N * |accuracy_b - mean confidence_b|`` over ``n_bins``
    equal-width confidence bins (Guo et al. 2017). ``confidence`` in [0, 1], ``correct`` bool, same size."""
    ece = ece_from_histogram(*calibration_histogram(confidence, correct, n_bins))
    if ece is None:
        raise ValueError("expected_calibration_error of no pixels is undefined")
    return ece


def bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def scores_from_confusion(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """OA, per-class IoU/F1, macro F1 and mIoU of one confusion matrix (rows = target)."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    total = cm.sum()
    union = support + predicted - tp
    denom_f1 = support + predicted
    defined = union > 0
    iou = np.where(defined, tp / np.where(defined, union, 1), np.nan)
    f1 = np.where(denom_f1 > 0, 2 * tp / np.where(denom_f1 > 0, denom_f1, 1), np.nan)

    def clean(v: float | np.floating) -> float | None:
        return None if not np.isfinite(v) else float(v)

    return {
        "oa": clean(tp.sum() / total) if total else None,
        "macro_f1": clean(np.nanmean(f1)) if defined.any() else None,
        "miou": clean(np.nanmean(iou)) if defined.any() else None,
        "iou": {n: clean(v) for n, v in zip(class_names, iou, strict=True)},
        "f1": {n: clean(v) for n, v in zip(class_names, f1, strict=True)},
        "n_pixels": int(total),
        "confusion": cm.astype(np.int64).tolist(),
    }


class ConfusionMatrix:
    """Accumulate confusion matrices per cloud-cover bin and in total.

    ``update(pred, target, cloud_fraction)``: ``pred``/``target`` integer class maps [B,H,W] or [H,W]
    (numpy or torch); ``cloud_fraction`` the cloud fraction of each patch in [0, 1], a scalar or one
    value per batch item.
    """

    def __init__(
        self,
        num_classes: int = len(CLASS_NAMES),
        class_names: Sequence[str] | None = None,
        ignore_index: int = NODATA,
        bins: Sequence[tuple[float, float]] = CLOUD_BINS,
    ) -> None:
        self.num_classes = num_classes
        self.class_names = (
            tuple(class_names)
            if class_names is not None
            else (CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(str(i) for i in range(num_classes)))
        )
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.ignore_index = ignore_index
        self.bins = tuple((float(lo), float(hi)) for lo, hi in bins)
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self.total = np.zeros((k, k), dtype=np.int64)
        self.per_bin = np.zeros((len(self.bins), k, k), dtype=np.int64)
        self.n_patches = np.zeros(len(self.bins), dtype=np.int64)
        #: calibration histograms per cloud bin: [bins, 3 (count, confidence sum, correct sum), ECE_BINS]
        self.calibration = np.zeros((len(self.bins), 3, ECE_BINS), dtype=np.float64)

    def bin_index(self, cloud_fraction: float) -> int:
        pct = 100.0 * float(cloud_fraction)
        if not (0.0 <= pct <= 100.0 + 1e-9):
            raise ValueError(f"cloud_fraction must be a fraction in [0, 1], got {cloud_fraction!r}")
        for i, (lo, hi) in enumerate(self.bins):
            if lo <= pct < hi:
                return i
        return len(self.bins) - 1  # exactly 100 %

    def _counts(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        k = self.num_classes
        keep = target != self.ignore_index
        t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
        if t.size and (t.min() < 0 or t.max() >= k):
            raise ValueError(f"target holds values outside 0..{k - 1} other than ignore_index {self.ignore_index}")
        if p.size and (p.min() < 0 or p.max() >= k):
            raise ValueError(f"prediction holds values outside 0..{k - 1}")
        return np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        cloud_fraction: ArrayLike | Sequence[float] | float,
        confidence: ArrayLike | None = None,
    ) -> None:
        """Count one batch; ``confidence`` (same shape as ``pred``) adds it to the calibration histograms."""
        pred_a, target_a = _np(pred), _np(target)
        if pred_a.shape != target_a.shape:
            raise ValueError(f"pred shape {pred_a.shape} != target shape {target_a.shape}")
        conf_a = None if confidence is None else _np(confidence)
        if conf_a is not None and conf_a.shape != pred_a.shape:
            raise ValueError(f"confidence shape {conf_a.shape} != pred shape {pred_a.shape}")
        if pred_a.ndim == 2:
            pred_a, target_a = pred_a[None], target_a[None]
            conf_a = None if conf_a is None else conf_a[None]
        fractions = np.broadcast_to(_np(cloud_fraction).astype(np.float64).reshape(-1), (pred_a.shape[0],))
        for i, (p, t, cf) in enumerate(zip(pred_a, target_a, fractions, strict=True)):
            counts = self._counts(p, t)
            b = self.bin_index(cf)
            self.per_bin[b] += counts
            self.n_patches[b] += 1
            self.total += counts
            if conf_a is not None:
                keep = t != self.ignore_index
                self.calibration[b] += np.stack(calibration_histogram(conf_a[i][keep], p[keep] == t[keep]))

    def compute(self) -> dict[str, Any]:
        labels = [bin_label(lo, hi) for lo, hi in self.bins]
        total = scores_from_confusion(self.total, self.class_names)
        total["n_patches"] = int(self.n_patches.sum())
        total["ece"] = ece_from_histogram(*self.calibration.sum(0))
        per_bin = {}
        for i, name in enumerate(labels):
            scores = scores_from_confusion(self.per_bin[i], self.class_names)
            scores["n_patches"] = int(self.n_patches[i])
            scores["ece"] = ece_from_histogram(*self.calibration[i])
            per_bin[name] = scores
        return {"class_names": list(self.class_names), "bins": labels, "total": total, "per_bin": per_bin}
