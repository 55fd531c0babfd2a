"""CloudLULC-Set style training dataset: builder, Zarr and GeoTIFF-layout readers, report.

Entry point for the flow (``flows/build_dataset.py``) and the CLI::

    from cloudlulc.dataset import DatasetParams, build_dataset
    summary = build_dataset(DatasetParams(aoi=..., start=..., end=..., out=...), client=None)

Readers yield the training sample dict of :mod:`cloudlulc.train`:
``optical`` [12,H,W] float32 reflectance (cloudy target), ``optical_clear`` [12,H,W], ``sar`` [2,H,W]
float32 dB, ``label`` [H,W] int64 (255 ignore), ``cloud`` [H,W] uint8.
"""

from __future__ import annotations

from cloudlulc.dataset.builder import build_dataset
from cloudlulc.dataset.errors import (
    DatasetError,
    NoLabelCoverageError,
    NoPatchesError,
    NoScenesError,
    StoreMismatchError,
)
from cloudlulc.dataset.params import DEFAULT_CLOUD_LEVELS, DatasetParams, DatasetSummary

__all__ = [
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
