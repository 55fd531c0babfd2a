"""The paper's GeoTIFF folder layout (CloudLULC-Set style): writer and the layout's conventions.

Layout under ``root`` (one GeoTIFF per patch and modality, the same ``<id>`` in every folder)::

    SAR_S1/VV/<id>.tif      float32 Sentinel-1 VV backscatter in dB, nodata NaN
    SAR_S1/VH/<id>.tif      float32 VH in dB
    Opt_S2_cloudy/<id>.tif  12 bands B01..B12 (no B10) of the cloudy target
    Opt_S2_clear/<id>.tif   12 bands of the clear reference
    Label/<id>.tif          uint8 classes 0..5 (water, forest, grassland, barren, built-up, cropland), 255 ignore
    Cloud/<id>.tif          uint8 SCL cloud/shadow mask (1/0, 255 nodata): our addition, absent in the paper set
    train.csv val.csv test.csv   one column ``id`` (the patch ids of the split)
    layout.json             how optical values are encoded (written by us; optional when reading)

Optical encoding: ``reflectance`` (float32, exact, NaN nodata) or ``dn`` as the published set is
distributed: uint16 digital numbers 0-10000 = reflectance x 10000 (harmonised, i.e. without the
processing-baseline 04.00 offset), 0 = nodata; valid pixels are clipped to [1, 65535] so that a
reflectance of 0 is not mistaken for nodata. ``dn`` is lossy (1e-4 quantisation).
Every file is georeferenced (CRS and transform of the patch on the 10 m grid) with rasterio.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import rasterio
from rasterio.transform import from_bounds

from cloudlulc.classes import NODATA, S2_BANDS
from cloudlulc.dataset.regions import SPLITS
from cloudlulc.dataset.store import decode_optical, store_array

DN_SCALE = 1e-4
FOLDERS = {
    "vv": Path("SAR_S1/VV"),
    "vh": Path("SAR_S1/VH"),
    "optical_cloudy": Path("Opt_S2_cloudy"),
    "optical_clear": Path("Opt_S2_clear"),
    "label": Path("Label"),
    "cloud": Path("Cloud"),
}


def reflectance_to_dn(a: np.ndarray) -> np.ndarray:
    """Float reflectance -> uint16 DN (x 10000, valid pixels clipped to [1, 65535], NaN -> 0)."""
    dn = np.clip(np.round(np.nan_to_num(a, nan=0.0) / DN_SCALE), 1, 65535).astype(np.uint16)
    dn[np.isnan(a)] = 0
    return dn


def _write(path: Path, data: np.ndarray, crs: str, transform, nodata, descriptions=None) -> None:
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tif.tmp")
    with rasterio.open(
        tmp,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
        zlevel=1,
        tiled=data.shape[1] % 16 == 0 and data.shape[2] % 16 == 0,
    ) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    tmp.replace(path)


def write_geotiff_layout(
    zarr_path: Path,
    index: pd.DataFrame,
    root: Path,
    *,
    optical: Literal["reflectance", "dn"] = "reflectance",
    workers: int = 4,
) -> Path:
    """Write every indexed patch of the Zarr store in the GeoTIFF layout under ``root``.

    Files already present are kept (a resumed build only writes new patches); the split CSVs and
    ``layout.json`` are rewritten each time from ``index``.
    """
    import zarr

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(zarr_path), mode="r")

    def one(rec) -> None:
        pid, i = str(rec.patch_id), int(rec.zarr_index)
        if all((root / f / f"{pid}.tif").exists() for f in FOLDERS.values()):
            return
        transform = from_bounds(rec.minx, rec.miny, rec.maxx, rec.maxy, int(rec.size), int(rec.size))
        crs = str(rec.crs)
        for key in ("optical_cloudy", "optical_clear"):
            refl = decode_optical(np.asarray(store_array(g, key)[i]))
            if optical == "dn":
                _write(root / FOLDERS[key] / f"{pid}.tif", reflectance_to_dn(refl), crs, transform, 0, S2_BANDS)
            else:
                _write(root / FOLDERS[key] / f"{pid}.tif", refl, crs, transform, float("nan"), S2_BANDS)
        sar = np.asarray(store_array(g, "sar")[i], dtype=np.float32)
        _write(root / FOLDERS["vv"] / f"{pid}.tif", sar[0], crs, transform, float("nan"), ["VV dB"])
        _write(root / FOLDERS["vh"] / f"{pid}.tif", sar[1], crs, transform, float("nan"), ["VH dB"])
        _write(
            root / FOLDERS["label"] / f"{pid}.tif",
            np.asarray(store_array(g, "label")[i], np.uint8),
            crs,
            transform,
            NODATA,
        )
        _write(
            root / FOLDERS["cloud"] / f"{pid}.tif",
            np.asarray(store_array(g, "cloud")[i], np.uint8),
            crs,
            transform,
            NODATA,
        )

    # GDAL releases the GIL while encoding, so a few threads overlap compression and file I/O.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, index.itertuples(index=False)))
    for split in SPLITS:
        ids = index.loc[index["split"] == split, "patch_id"].astype(str)
        pd.DataFrame({"id": ids}).to_csv(root / f"{split}.csv", index=False)
    (root / "layout.json").write_text(
        json.dumps(
            {
                "format": "cloudlulc-geotiff-layout",
                "optical": optical,
                "optical_scale": DN_SCALE if optical == "dn" else 1.0,
                "optical_offset": 0.0,
                "optical_nodata": 0 if optical == "dn" else "nan",
                "s2_bands": list(S2_BANDS),
                "sar_units": "dB",
                "folders": {k: str(v) for k, v in FOLDERS.items()},
            },
            indent=2,
        )
    )
    return root
