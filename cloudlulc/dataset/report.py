"""Summary of a built dataset: ``summary.json`` (machine-readable), ``report.md`` and a cloud-level
histogram PNG (matplotlib Agg, no display needed).

Built from the consolidated index and the store's per-region stats, so a resumed build reports the
whole dataset, not only the regions built in the last run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cloudlulc.classes import CLASS_NAMES, NODATA, NUM_CLASSES
from cloudlulc.dataset.params import DatasetParams, DatasetSummary
from cloudlulc.dataset.patches import DROP_REASONS
from cloudlulc.dataset.regions import SPLITS, Region


def _class_pixels(df: pd.DataFrame) -> dict[str, int]:
    out = {CLASS_NAMES[k]: int(df[f"class_{k}"].sum()) if len(df) else 0 for k in range(NUM_CLASSES)}
    out["ignore"] = int(df[f"class_{NODATA}"].sum()) if len(df) else 0
    return out


def histogram_png(index: pd.DataFrame, levels: list[str], path: Path) -> Path:
    """Stacked bars: patches per cloud level and split."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bottom = np.zeros(len(levels))
    for split in SPLITS:
        sub = index[index["split"] == split]
        counts = np.array([int((sub["cloud_level"] == lv).sum()) for lv in levels])
        ax.bar(levels, counts, bottom=bottom, label=split)
        bottom += counts
    ax.set_xlabel("cloud cover of the cloudy target (%)")
    ax.set_ylabel("patches")
    ax.set_title("CloudLULC dataset: patches per cloud level")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    out: Path,
    params: DatasetParams,
    index: pd.DataFrame,
    dropped: dict[str, int],
    regions: list[Region],
    splits: dict[str, str],
    store: Any,
    *,
    skipped: int = 0,
    geotiff_root: Path | None = None,
) -> DatasetSummary:
    """Write ``summary.json``, ``report.md`` and ``cloud_levels.png``; return the summary."""
    levels = params.level_names
    per_split = {s: int((index["split"] == s).sum()) for s in SPLITS}
    per_level = {lv: int((index["cloud_level"] == lv).sum()) for lv in levels}
    per_split_level = {
        s: {lv: int(((index["split"] == s) & (index["cloud_level"] == lv)).sum()) for lv in levels} for s in SPLITS
    }
    class_px = {s: _class_pixels(index[index["split"] == s]) for s in SPLITS}
    regions_per_split = {s: sorted(r.id for r in regions if splits[r.id] == s) for s in SPLITS}
    png = histogram_png(index, levels, out / "cloud_levels.png")
    summary = DatasetSummary(
        out=out,
        zarr_path=out / "dataset.zarr",
        index_path=out / "index.parquet",
        index_csv_path=out / "index.csv",
        report_path=out / "report.md",
        summary_path=out / "summary.json",
        histogram_png=png,
        geotiff_root=geotiff_root,
        n_patches=int(len(index)),
        n_regions=len(regions),
        regions_done=len(store.regions_done),
        regions_skipped_on_resume=skipped,
        patches_per_split=per_split,
        patches_per_level=per_level,
        patches_per_split_level=per_split_level,
        class_pixels_per_split=class_px,
        dropped={k: int(v) for k, v in sorted(dropped.items())},
        regions_per_split=regions_per_split,
        params=params.model_dump(mode="json"),
        created=datetime.now(UTC).isoformat(),
    )
    (out / "summary.json").write_text(json.dumps(summary.model_dump(mode="json"), indent=2))
    (out / "report.md").write_text(_markdown(summary, levels))
    return summary


def _markdown(s: DatasetSummary, levels: list[str]) -> str:
    lines = [
        "# CloudLULC training dataset",
        "",
        f"Created {s.created}. {s.n_patches} patches of {s.params['patch_size']} px from {s.regions_done}/"
        f"{s.n_regions} regions; AOI {s.params['aoi']}, {s.params['start']} .. {s.params['end']}, labels "
        f"`{s.params['label_collection']}`. Store: `{s.zarr_path.name}`, index: `{s.index_path.name}` / "
        f"`{s.index_csv_path.name}`.",
        "",
        "Splits are by region (spatial blocks): every patch of a region is in one split, so no pixel is "
        "shared across splits.",
        "",
        "## Patches per split and cloud level",
        "",
        "| split | regions | " + " | ".join(f"{lv} %" for lv in levels) + " | total |",
        "|---|---|" + "---|" * len(levels) + "---|",
    ]
    for sp in SPLITS:
        row = s.patches_per_split_level[sp]
        lines.append(
            f"| {sp} | {len(s.regions_per_split[sp])} | "
            + " | ".join(str(row[lv]) for lv in levels)
            + f" | {s.patches_per_split[sp]} |"
        )
    lines += ["", "![patches per cloud level](cloud_levels.png)", "", "## Class balance (label pixels)", ""]
    names = [*CLASS_NAMES, "ignore"]
    lines.append("| split | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for sp in SPLITS:
        px = s.class_pixels_per_split[sp]
        tot = sum(px.values()) or 1
        lines.append(f"| {sp} | " + " | ".join(f"{px[n]} ({100 * px[n] / tot:.1f} %)" for n in names) + " |")
    lines += ["", "## Curation: patches removed per filter", "", "| filter | removed | meaning |", "|---|---|---|"]
    for k, v in s.dropped.items():
        lines.append(f"| {k} | {v} | {DROP_REASONS.get(k, '')} |")
    if not s.dropped:
        lines.append("| (none) | 0 | |")
    lines += ["", "## Parameters", "", "```json", json.dumps(s.params, indent=2, default=str), "```", ""]
    return "\n".join(lines)
