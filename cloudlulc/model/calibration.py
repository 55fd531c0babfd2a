"""Confidence calibration: temperatures that turn a network's logits into honest probabilities.

A network trained with cross-entropy is over-confident where its inputs are unlike its training
data, and most of all where no optical observation exists (its radar-only maps are far less accurate
than its fused ones). Temperature scaling divides the logits by a fitted ``T`` before the softmax:
the class map is unchanged, the probabilities (``confidence``) become calibrated. Pixels without any
optical observation get their own temperature, fitted on validation patches with the optical input
removed, so that a radar-only pixel never borrows the confidence of a fused one; pixels with optical
data but no radar (optical-only runs, outside the S1 frames) get a third, fitted with the radar
removed.

The temperatures are fitted on held-out validation data after training and stored in the weights'
JSON sidecar (``"calibration"``), not in the safetensors file: the weights' checksum stays that of
the trained network. :func:`cloudlulc.model.io.from_pretrained` attaches them to the model as
``model.calibration``; inference applies them (:func:`scale_logits`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["Calibration", "calibration_of", "scale_logits"]


@dataclass(frozen=True)
class Calibration:
    """Temperatures for the logits: ``temperature`` where the pixel has both inputs,
    ``temperature_optical_missing`` where it has no optical data, ``temperature_sar_missing`` where it
    has optical data but no radar (None: the same ``temperature``)."""

    temperature: float = 1.0
    temperature_optical_missing: float | None = None
    temperature_sar_missing: float | None = None
    #: how and on what the temperatures were fitted, and the calibration errors before and after
    fitted: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("temperature", "temperature_optical_missing", "temperature_sar_missing"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"calibration {name} must be a positive finite number, got {value!r}")

    @property
    def missing(self) -> float:
        """The temperature of pixels without optical data."""
        return self.temperature if self.temperature_optical_missing is None else self.temperature_optical_missing

    @property
    def sar_missing(self) -> float:
        """The temperature of pixels with optical data but no radar."""
        return self.temperature if self.temperature_sar_missing is None else self.temperature_sar_missing

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and self.missing == 1.0 and self.sar_missing == 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"method": "temperature", **asdict(self)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> Calibration:
        """From a sidecar's ``"calibration"`` entry (None or empty: no calibration)."""
        if not doc:
            return cls()
        method = doc.get("method", "temperature")
        if method != "temperature":
            raise ValueError(f"unknown calibration method {method!r}; this software applies 'temperature'")
        return cls(
            temperature=float(doc.get("temperature", 1.0)),
            temperature_optical_missing=_optional_float(doc, "temperature_optical_missing"),
            temperature_sar_missing=_optional_float(doc, "temperature_sar_missing"),
            fitted=dict(doc.get("fitted") or {}),
        )


def _optional_float(doc: dict[str, Any], key: str) -> float | None:
    return None if doc.get(key) is None else float(doc[key])


def calibration_of(model: torch.nn.Module) -> Calibration:
    """The calibration attached to ``model`` (identity when it has none)."""
    cal = getattr(model, "calibration", None)
    return cal if isinstance(cal, Calibration) else Calibration()


def scale_logits(
    logits: torch.Tensor,
    calibration: Calibration,
    optical_missing: torch.Tensor | None,
    sar_missing: torch.Tensor | None = None,
) -> torch.Tensor:
    """``logits`` [B, C, H, W] divided by the temperature of each pixel. ``optical_missing`` and
    ``sar_missing`` [B, H, W] (bool) mark pixels without optical data and without radar (None: every
    pixel has that input); a pixel without optical data takes that temperature whatever its radar."""
    if calibration.is_identity:
        return logits

    def used(mask: torch.Tensor | None, t: float) -> bool:
        return mask is not None and t != calibration.temperature and bool(mask.any())

    use_optical, use_sar = used(optical_missing, calibration.missing), used(sar_missing, calibration.sar_missing)
    if not (use_optical or use_sar):
        return logits / calibration.temperature
    t = torch.full(
        logits.shape[:1] + logits.shape[2:], calibration.temperature, dtype=logits.dtype, device=logits.device
    )
    if use_sar:
        assert sar_missing is not None
        t = torch.where(sar_missing.to(logits.device), calibration.sar_missing, t)
    if use_optical:
        assert optical_missing is not None
        t = torch.where(optical_missing.to(logits.device), calibration.missing, t)
    return logits / t[:, None]
