"""The per-patch index: one Parquet part per region while building, one Parquet + CSV at the end.

Per-region parts make resuming simple: a part is written before its region is committed in the
store, and the consolidated index only takes parts of committed regions, so a crashed region's
half-written part is never read (it is overwritten when the region is rebuilt).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cloudlulc.classes import NODATA, NUM_CLASSES

#: Columns of the index, in order (documented in the report and README of the dataset).
COLUMNS: list[str] = [
    "patch_id",
    "zarr_index",
    "split",
    "region_id",
    "row",
    "col",
    "size",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "s2_datetime",
    "clear_datetime",
    "s1_datetime",
    "s1_s2_gap_days",
    "clear_gap_days",
    "cloud_fraction",
    "cloud_level",
    "clear_cloud_fraction",
    "label_valid_fraction",
    "optical_nodata_fraction",
    "clear_nodata_fraction",
    "sar_nodata_fraction",
    *[f"class_{k}" for k in range(NUM_CLASSES)],
    f"class_{NODATA}",
    "s2_cloudy_ids",
    "s2_clear_ids",
    "s1_ids",
    "label_ids",
    "label_collection",
]


def write_part(path: Path, df: pd.DataFrame) -> None:
    """Write one region's rows (atomically: temp file then rename, so a crash leaves no torn part)."""
    df = df.reindex(columns=COLUMNS)
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def consolidate(out: Path, parts: Path, regions_done: list[str]) -> pd.DataFrame:
    """Concatenate the parts of committed regions into ``index.parquet`` and ``index.csv``."""
    frames = [pd.read_parquet(parts / f"{rid}.parquet") for rid in regions_done if (parts / f"{rid}.parquet").exists()]
    frames = [f for f in frames if len(f)]
    if frames:
        df = pd.concat(frames, ignore_index=True).sort_values("zarr_index", kind="stable").reset_index(drop=True)
        df["zarr_index"] = df["zarr_index"].astype("int64")
    else:
        df = pd.DataFrame(columns=COLUMNS)
    df.to_parquet(out / "index.parquet", index=False)
    df.to_csv(out / "index.csv", index=False)
    return df
