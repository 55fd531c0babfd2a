"""Accumulate :class:`cloudlulc.training.metrics.ConfusionMatrix` scores where some samples have no cloud mask.

Every sample counts in the totals; only samples whose cloud fraction is known (finite) are put in a
cloud-cover bin. Putting unknown-cloud samples (the published GeoTIFF set, windows outside the
mosaic's cloud layer) into the 0-10 % bin would report clear-sky accuracy that was never measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


class BinnedScorer:
    """Two confusion matrices: ``everything`` for totals, ``binned`` for samples with a known cloud fraction."""

    def __init__(self) -> None:
        from cloudlulc.training.metrics import ConfusionMatrix

        self.everything = ConfusionMatrix()
        self.binned = ConfusionMatrix()
        self.n_samples = 0
        self.n_unknown = 0

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        cloud_fraction: ArrayLike | None,
        confidence: ArrayLike | None = None,
    ) -> None:
        """``pred``/``target`` [B,H,W]; ``cloud_fraction`` [B] in [0, 1] with NaN = unknown, or None (all
        unknown); ``confidence`` [B,H,W] top-class probabilities (adds the ECE to every score dict)."""
        pred_a = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        target_a = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        conf_a = None
        if confidence is not None:
            conf_a = (
                confidence.detach().cpu().numpy() if isinstance(confidence, torch.Tensor) else np.asarray(confidence)
            )
        b = int(target_a.shape[0])
        self.everything.update(pred_a, target_a, np.zeros(b), conf_a)
        if cloud_fraction is None:
            known = np.zeros(b, dtype=bool)
        else:
            frac = (
                cloud_fraction.detach().cpu().numpy()
                if isinstance(cloud_fraction, torch.Tensor)
                else np.asarray(cloud_fraction)
            )
            frac = np.broadcast_to(frac.astype(np.float64).reshape(-1), (b,))
            known = np.isfinite(frac)
            if known.any():
                self.binned.update(
                    pred_a[known], target_a[known], frac[known], None if conf_a is None else conf_a[known]
                )
        self.n_samples += b
        self.n_unknown += int((~known).sum())

    def compute(self) -> dict[str, Any]:
        """``ConfusionMatrix.compute()`` of the totals, bins from known-cloud samples, plus
        ``cloud_known`` (any sample binned) and ``n_patches_unknown_cloud``."""
        if self.n_samples == 0:
            raise ValueError("nothing was scored: the split (or the common valid mask) is empty")
        result = self.everything.compute()
        result["per_bin"] = self.binned.compute()["per_bin"]
        result["cloud_known"] = self.n_unknown < self.n_samples
        result["n_patches_unknown_cloud"] = self.n_unknown
        return result
