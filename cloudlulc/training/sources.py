"""Datasets from their configs, and a fingerprint that says which data trained a model.

The readers stream: :class:`~cloudlulc.dataset.ZarrPatchDataset` and
:class:`~cloudlulc.dataset.GeoTiffLayoutDataset` read one patch per ``__getitem__``, so a process of a
data-parallel run touches only the patches its sampler hands it. The fingerprint is recorded in the
weights' sidecar and checked on resume, so a run never continues on other data by mistake.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch.utils.data import Dataset

from cloudlulc.training.config import DataConfig, GeoTiffDataConfig, SimulatedDataConfig, ZarrDataConfig
from cloudlulc.training.data import SimulatedPatches


def open_dataset(config: DataConfig) -> Dataset:
    """The dataset a :data:`~cloudlulc.training.config.DataConfig` describes."""
    if isinstance(config, SimulatedDataConfig):
        return SimulatedPatches(config)
    if isinstance(config, ZarrDataConfig):
        from cloudlulc.dataset.readers import ZarrPatchDataset

        return ZarrPatchDataset(config.path, config.split)
    if isinstance(config, GeoTiffDataConfig):
        from cloudlulc.dataset.readers import GeoTiffLayoutDataset

        return GeoTiffLayoutDataset(
            config.root,
            config.split,
            optical_scale=config.optical_scale,
            optical_offset=config.optical_offset,
            label_map=config.label_map,
            sar_units=config.sar_units,
            sar_backscatter=config.sar_backscatter,
            incidence_deg=config.incidence_deg,
        )
    raise TypeError(f"unknown training data config {type(config).__name__}")


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def data_fingerprint(config: DataConfig) -> str:
    """sha256 naming the data of ``config``: same fingerprint, same patches in the same order.

    Simulated: the config itself (the patches are a function of it). Zarr store: the build's own
    fingerprint, the committed row count and the index file. GeoTIFF layout: the split's id list and
    ``layout.json``, plus the reader options.
    """
    described = json.dumps(config.model_dump(mode="json", exclude={"path", "root"}), sort_keys=True).encode()
    if isinstance(config, SimulatedDataConfig):
        return _sha256(described)
    if isinstance(config, ZarrDataConfig):
        from cloudlulc.dataset.readers import _resolve_zarr

        store, index = _resolve_zarr(config.path)
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
        stamp = json.dumps({k: attrs.get(k) for k in ("fingerprint", "n_committed")}, sort_keys=True).encode()
        return _sha256(described, stamp, index.read_bytes() if index is not None else b"")
    if isinstance(config, GeoTiffDataConfig):
        from cloudlulc.dataset.readers import read_split_ids

        root = Path(config.root)
        ids = "\n".join(read_split_ids(root, config.split)).encode()
        layout = (root / "layout.json").read_bytes() if (root / "layout.json").exists() else b""
        return _sha256(described, ids, layout)
    raise TypeError(f"unknown training data config {type(config).__name__}")
