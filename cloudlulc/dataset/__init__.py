"""CloudLULC-Set style training dataset: builder, Zarr and GeoTIFF-layout readers, report.

Entry point for the flow (``flows/build_dataset.py``) and the CLI::

    from cloudlulc.dataset import DatasetParams, build_dataset
    summary = build_dataset(DatasetParams(aoi=..., start=..., end=..., out=...), client=None)

Output directory (``params.out``)::

    dataset.zarr/       Zarr v3, one chunk per patch (see cloudlulc.dataset.store for the arrays)
    index.parquet/.csv  one row per patch: id, split, region, bounds + CRS, cloud fraction and level,
                        S1-S2 gap, clear-reference gap, class histogram, source item ids (index.COLUMNS)
    index_parts/        per-region index parts (resume bookkeeping)
    summary.json report.md cloud_levels.png
    geotiff/            optional paper-style GeoTIFF layout (cloudlulc.dataset.geotiff)

Splits are by region (square blocks of the AOI grid): a region's patches all go to one split and no
patch crosses a region edge, so train/val/test share no pixel. Re-running with the same parameters
resumes: committed regions are skipped and an interrupted one is rebuilt without duplicates.

Readers yield the training sample dict of :mod:`cloudlulc.training`:
``optical`` [12,H,W] float32 reflectance (cloudy target), ``optical_clear`` [12,H,W], ``sar`` [2,H,W]
float32 dB, ``label`` [H,W] int64 (255 ignore), ``cloud`` [H,W] uint8, ``cloud_fraction`` scalar.
"""

from __future__ import annotations

from cloudlulc.dataset.builder import build_dataset, load_index
from cloudlulc.dataset.errors import (
    DatasetError,
    NoLabelCoverageError,
    NoPatchesError,
    NoScenesError,
    StoreMismatchError,
)
from cloudlulc.dataset.params import DEFAULT_CLOUD_LEVELS, DatasetParams, DatasetSummary


def __getattr__(name: str):
    """Readers import torch: load them only when asked for, so the flow imports fast."""
    if name in ("ZarrPatchDataset", "GeoTiffLayoutDataset", "read_split_ids"):
        from cloudlulc.dataset import readers

        return getattr(readers, name)
    if name == "write_geotiff_layout":
        from cloudlulc.dataset.geotiff import write_geotiff_layout

        return write_geotiff_layout
    raise AttributeError(f"module 'cloudlulc.dataset' has no attribute {name!r}")


__all__ = [
    "GeoTiffLayoutDataset",
    "ZarrPatchDataset",
    "load_index",
    "write_geotiff_layout",
    "DEFAULT_CLOUD_LEVELS",
    "DatasetError",
    "DatasetParams",
    "DatasetSummary",
    "NoLabelCoverageError",
    "NoPatchesError",
    "NoScenesError",
    "StoreMismatchError",
    "build_dataset",
]
