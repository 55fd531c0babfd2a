"""CloudLULC-Set style training dataset: builder, Zarr and GeoTIFF-layout readers, report.

Entry point for the flow (``flows/build_dataset.py``) and the CLI::

    from cloudlulc.dataset import DatasetParams, build_dataset
    summary = build_dataset(DatasetParams(aoi=..., start=..., end=..., out=...), client=None)

Readers yield the training sample dict of :mod:`cloudlulc.train`:
``optical`` [12,H,W] float32 reflectance (cloudy target), ``optical_clear`` [12,H,W], ``sar`` [2,H,W]
float32 dB, ``label`` [H,W] int64 (255 ignore), ``cloud`` [H,W] uint8.
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
