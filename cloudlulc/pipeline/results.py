"""What a mapping run did: one result per mapped acquisition, class areas, a Markdown summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudlulc.classes import CLASS_NAMES, NODATA, NUM_CLASSES
from cloudlulc.model.io import ModelInfo


@dataclass
class AcquisitionResult:
    """One mapped acquisition (one ``time`` slice of the store)."""

    time: str
    s2_items: list[str]
    s1_items: list[str]
    s1_gap_days: float | None
    optical_only: bool
    #: ``fused``, ``optical-only`` (no Sentinel-1 paired) or ``sar-only`` (no optical value at all)
    mode: str = "fused"
    #: cloud over the AOI (percent) from the tiles' metadata, and the Sentinel-1 orbit direction
    cloud_cover_aoi: float | None = None
    s1_orbit_state: str | None = None
    #: share of the mapped pixels per input state (:func:`cloudlulc.cube.quality.input_fractions`)
    inputs: dict[str, float] = field(default_factory=dict)
    class_areas_km2: dict[str, float] = field(default_factory=dict)
    mapped_km2: float = 0.0
    quicklook: str | None = None
    cog: str | None = None
    #: the STAC Collection written beside the store (one Item per mapped time)
    stac: str | None = None


@dataclass
class MapResult:
    """What a run did: the store, each mapped acquisition, the model, and what was skipped."""

    output: str
    model: ModelInfo | None
    acquisitions: list[AcquisitionResult] = field(default_factory=list)
    skipped_times: list[str] = field(default_factory=list)
    #: acquisitions an NRT run did not map for want of Sentinel-1: time, reason, status, retry_until
    unpaired: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "model": self.model.as_dict() if self.model else None,
            "acquisitions": [a.__dict__ for a in self.acquisitions],
            "skipped_times": self.skipped_times,
            "unpaired": self.unpaired,
            "warnings": self.warnings,
        }

    def to_markdown(self) -> str:
        """A human summary (the Prefect flow publishes it as a markdown artifact)."""
        return summary_markdown(self)


def class_areas_km2(lulc: Any) -> dict[str, float]:
    """Area of each class in km² from a (y, x) class map on a metric grid (nodata 255 excluded)."""
    values = np.asarray(lulc.values if hasattr(lulc, "values") else lulc)
    xs = np.asarray(lulc["x"].values) if hasattr(lulc, "coords") and "x" in lulc.coords else None
    ys = np.asarray(lulc["y"].values) if hasattr(lulc, "coords") and "y" in lulc.coords else None
    if xs is not None and ys is not None and xs.size > 1 and ys.size > 1:
        pixel_m2 = abs(float(xs[1] - xs[0])) * abs(float(ys[1] - ys[0]))
    else:
        pixel_m2 = 100.0  # the 10 m grid of DESIGN.md
    counts = np.bincount(values[values != NODATA].ravel().astype(np.int64), minlength=NUM_CLASSES)
    return {name: round(float(counts[i]) * pixel_m2 / 1e6, 6) for i, name in enumerate(CLASS_NAMES)}


_MODE_MEANING = {
    "optical-only": "no Sentinel-1 pass was paired; cloudy pixels have no radar to fall back on",
    "sar-only": "no optical value in any mapped pixel; the map rests on radar alone",
}


def summary_markdown(result: MapResult) -> str:
    """Markdown run summary: scenes used, S1 gap, class areas in km², output and quicklooks."""
    lines = ["# CloudLULC mapping run", "", f"**Output store:** `{result.output}`", ""]
    if result.model:
        m = result.model
        trained = "" if m.trained else " — **UNTRAINED, maps are meaningless**"
        lines += [f"**Model:** {m.name}{trained}" + (f" (sha256 `{m.sha256[:12]}…`)" if m.sha256 else ""), ""]
    if not result.acquisitions:
        lines += ["No new acquisition was mapped."]
    if result.model and result.model.simulated:
        lines += ["> ⚠️ The weights were trained on SIMULATED data only: these maps demonstrate the pipeline.", ""]
    for a in result.acquisitions:
        gap = "none (optical-only)" if a.optical_only or a.s1_gap_days is None else f"{a.s1_gap_days:.2f} days"
        orbit = f", {a.s1_orbit_state} orbit" if a.s1_orbit_state else ""
        cloud = "unknown" if a.cloud_cover_aoi is None else f"{a.cloud_cover_aoi:.0f} %"
        lines += [f"## {a.time}", ""]
        if a.mode != "fused":
            lines += [f"> ⚠️ **{a.mode.upper()}**: {_MODE_MEANING[a.mode]}", ""]
        lines += [
            f"- Sentinel-2: {', '.join(f'`{i}`' for i in a.s2_items) or '?'} (cloud over the AOI: {cloud})",
            f"- Sentinel-1: {', '.join(f'`{i}`' for i in a.s1_items) or 'none'}",
            f"- S1–S2 gap: {gap}{orbit}",
        ]
        if a.inputs:
            i = a.inputs
            lines.append(
                f"- Inputs of the mapped pixels: optical clear {100 * i.get('optical_clear', 0):.0f} %, "
                f"cloud or shadow {100 * i.get('optical_cloud_or_shadow', 0):.0f} %, "
                f"**no optical {100 * i.get('optical_missing', 0):.0f} %**, "
                f"no radar {100 * i.get('sar_missing', 0):.0f} %"
            )
        lines += [
            f"- Quicklook: `{a.quicklook}`" if a.quicklook else "- Quicklook: none",
            *([f"- COG: `{a.cog}`"] if a.cog else []),
            *([f"- STAC: `{a.stac}`"] if a.stac else []),
            "",
            "| class | area (km²) | share |",
            "| --- | ---: | ---: |",
        ]
        total = a.mapped_km2 or sum(a.class_areas_km2.values())
        for name, km2 in a.class_areas_km2.items():
            share = f"{100 * km2 / total:.1f} %" if total > 0 else "-"
            lines.append(f"| {name} | {km2:.4f} | {share} |")
        lines += [f"| **mapped** | **{total:.4f}** | |", ""]
    if result.skipped_times:
        lines += ["Already mapped (skipped): " + ", ".join(result.skipped_times), ""]
    for u in result.unpaired:
        lines += [f"- Not mapped, {u['status']} (no Sentinel-1 pass; retried until {u['retry_until']}): {u['time']}"]
    if result.unpaired:
        lines += [""]
    for w in result.warnings:
        lines.append(f"> ⚠️ {w}")
    return "\n".join(lines).rstrip() + "\n"
