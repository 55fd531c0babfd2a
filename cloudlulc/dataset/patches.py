"""Per-patch statistics and curation filters (pure numpy, no I/O).

Curation runs in two stages so that only kept patches are read at full spectral depth:

1. cheap, from the uint8 cloud masks and labels already in memory: label ignore fraction, SCL nodata
   (a proxy for optical nodata), clouds in the clear reference, then the seeded per-level cap;
2. exact, once the optical and SAR pixels of the kept patches are read: NaN fraction of optical
   (cloudy and clear) and SAR.

Every removed patch is counted under the name of the filter that removed it, so an empty result can
say which filter to relax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudlulc.classes import NODATA, NUM_CLASSES

#: Filter names used in the ``dropped`` counts (summary.json, NoPatchesError).
DROP_REASONS: dict[str, str] = {
    "missing_s1": "no Sentinel-1 pass within max_gap_days of the cloudy S2 target",
    "no_clear_reference": "no clear S2 reference (regional cloud <= clear_max_cloud) within max_clear_gap_days",
    "label_ignore": "label valid fraction below min_label_fraction",
    "optical_nodata": "optical (cloudy or clear) nodata fraction above max_nodata_fraction",
    "clear_cloudy": "no clear reference candidate is clear (<= clear_max_cloud) and complete over the patch",
    "sar_nodata": "SAR nodata fraction above max_nodata_fraction",
    "level_cap": "over max_patches_per_level for its cloud level in its region",
}


def cloud_fraction(cloud: np.ndarray) -> float:
    """Fraction of cloud/shadow pixels among pixels with a valid SCL (``cloud`` 0/1, 255 nodata)."""
    valid = cloud != NODATA
    n = int(valid.sum())
    return float((cloud[valid] == 1).sum() / n) if n else float("nan")


def nodata_fraction_cloudmask(cloud: np.ndarray) -> float:
    """Fraction of pixels without an SCL class (outside the swath or SCL nodata)."""
    return float((cloud == NODATA).mean())


def nan_fraction(a: np.ndarray) -> float:
    """Fraction of pixels where any band is NaN (a [band, y, x] array)."""
    return float(np.isnan(a).any(axis=0).mean())


def cloud_level(fraction: float, edges: tuple[float, ...]) -> str | None:
    """Level name ("10-30") of a cloud fraction in [0, 1]; the last level includes its upper edge."""
    if not np.isfinite(fraction):
        return None
    pct = fraction * 100.0
    for lo, hi in zip(edges, edges[1:]):
        if lo <= pct < hi or (hi == edges[-1] and pct == hi):
            return f"{lo:g}-{hi:g}"
    return None


def class_histogram(label: np.ndarray) -> dict[str, int]:
    """Pixel counts per class value ("0".."5") and "255" (ignore)."""
    counts = np.bincount(label.ravel().astype(np.int64), minlength=256)
    hist = {str(k): int(counts[k]) for k in range(NUM_CLASSES)}
    hist[str(NODATA)] = int(counts.sum() - sum(hist.values()))
    return hist


@dataclass
class Candidate:
    """A patch window of one cloudy target, before its optical/SAR pixels are read."""

    window: Any  # regions.PatchWindow
    target: int  # index of the cloudy target's pair
    clear: int  # index of the clear reference's pair
    record: dict[str, Any] = field(default_factory=dict)


def cap_per_level(
    candidates: list[Candidate], cap: int | None, rng: np.random.Generator
) -> tuple[list[Candidate], int]:
    """Keep at most ``cap`` candidates per cloud level (seeded uniform choice); returns (kept, dropped).

    Kept candidates stay in their original order so patch ids and Zarr rows are deterministic.
    """
    if cap is None:
        return candidates, 0
    by_level: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        by_level.setdefault(c.record["cloud_level"], []).append(i)
    keep: set[int] = set()
    for level in sorted(by_level):
        idx = by_level[level]
        if len(idx) <= cap:
            keep.update(idx)
        else:
            keep.update(int(i) for i in rng.choice(idx, size=cap, replace=False))
    kept = [c for i, c in enumerate(candidates) if i in keep]
    return kept, len(candidates) - len(kept)
