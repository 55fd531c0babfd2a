"""Read-only accessors over :meth:`cloudlulc.training.metrics.ConfusionMatrix.compute` dicts.

The report and plots go through these few functions so that the metrics layout (``total`` /
``per_bin`` / ``confusion``, defined in :mod:`cloudlulc.metrics`) is interpreted in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cloudlulc.classes import CLASS_NAMES


def _scores(m: Mapping[str, Any]) -> Mapping[str, Any]:
    """The headline scores of a full result (its ``total``) or of one bin (already flat)."""
    return m["total"] if "total" in m else m


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def oa(m: Mapping[str, Any]) -> float:
    return _num(_scores(m).get("oa"))


def macro_f1(m: Mapping[str, Any]) -> float:
    return _num(_scores(m).get("macro_f1"))


def miou(m: Mapping[str, Any]) -> float:
    return _num(_scores(m).get("miou"))


def ece(m: Mapping[str, Any]) -> float:
    """Expected calibration error of the confidence (NaN when it was not measured)."""
    return _num(_scores(m).get("ece"))


def n_pixels(m: Mapping[str, Any]) -> int:
    return int(_scores(m).get("n_pixels") or 0)


def n_patches(m: Mapping[str, Any]) -> int:
    return int(_scores(m).get("n_patches") or 0)


def class_iou(m: Mapping[str, Any]) -> list[float]:
    d = _scores(m).get("iou") or {}
    return [_num(d.get(c)) for c in CLASS_NAMES]


def class_f1(m: Mapping[str, Any]) -> list[float]:
    d = _scores(m).get("f1") or {}
    return [_num(d.get(c)) for c in CLASS_NAMES]


def bin_names(m: Mapping[str, Any]) -> list[str]:
    """Cloud bins of a result; empty when the cloud cover was unknown (bins then mean nothing)."""
    return list(m.get("bins") or []) if m.get("cloud_known", True) else []


def bin_metrics(m: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return (m.get("per_bin") or {}).get(name)


def bin_miou(m: Mapping[str, Any]) -> dict[str, float]:
    """``{bin: mIoU}`` over bins holding at least one scored pixel."""
    out = {}
    for b in bin_names(m):
        bm = bin_metrics(m, b)
        if bm is not None and n_pixels(bm) > 0:
            out[b] = miou(bm)
    return out


def confusion(m: Mapping[str, Any]) -> np.ndarray | None:
    cm = _scores(m).get("confusion")
    return None if cm is None else np.asarray(cm, dtype=np.int64)


def is_nan(v: float) -> bool:
    return isinstance(v, float) and math.isnan(v)
