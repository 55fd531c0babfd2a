"""The Zarr v3 LULC mosaic on disk: variables, attributes, coordinates and the resume state.

Schema (DESIGN.md "Zarr mosaic"):

* ``lulc``, ``confidence``, ``optical_reliability``, ``cloud``: (time, y, x) uint8, chunks
  ``1 x chunk_size x chunk_size`` (default 1024), Zarr ``fill_value`` 255 *and* CF ``_FillValue``
  255 (``_FillValue`` alone leaves Zarr's fill at 0, so unwritten chunks would read as water).
  ``lulc`` carries CF ``flag_values`` / ``flag_meanings`` from :mod:`cloudlulc.classes`.
* ``x``, ``y`` pixel-centre coordinates, ``time`` (int64 milliseconds since 1970, CF units), and the
  CF grid mapping ``spatial_ref`` (``grid_mapping`` on every variable), so
  ``xr.open_zarr(store, decode_coords="all")`` yields the CRS and GDAL >= 3.11 georeferences it.
* Codec: gzip, which every GDAL build reads (zstd and blosc are optional in GDAL builds).
* Root attribute ``provenance``: per ISO time, the slice's attrs (item ids and unsigned hrefs, S1
  gap, model and weights sha256, parameters), software version, creation time, a run
  ``fingerprint`` and ``status`` (``in_progress`` / ``complete``).
* Group ``_resume`` holds ``done`` (time, ychunk, xchunk) uint8: 1 once that chunk of that slice is
  written; one Zarr chunk per marker, so parallel writers never share a chunk.

Slices are stored in append order (an append never moves existing data); readers sort by time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyproj
import xarray as xr
import zarr
from zarr.codecs import GzipCodec

from cloudlulc.classes import CLASS_NAMES, CLASSES, NODATA, class_table
from cloudlulc.errors import CloudLULCError

MOSAIC_VARIABLES: tuple[str, ...] = ("lulc", "confidence", "optical_reliability", "cloud")


DEFAULT_CHUNK_SIZE = 1024


_STATE_GROUP = "_resume"


_DONE = "done"


_TIME_UNITS = "milliseconds since 1970-01-01"


_CODEC = GzipCodec(level=1)


_TITLE = "CloudLULC land use / land cover mosaic"


_VARIABLE_ATTRS: dict[str, dict[str, Any]] = {
    "lulc": {
        "long_name": "land use / land cover class",
        "flag_values": [c.value for c in CLASSES],
        "flag_meanings": " ".join(n.replace("-", "_") for n in CLASS_NAMES),
    },
    "confidence": {"long_name": "top-class probability", "units": "percent", "valid_range": [0, 100]},
    "optical_reliability": {
        "long_name": "optical reliability estimated by the model (255: model has none)",
        "units": "percent",
        "valid_range": [0, 100],
    },
    "cloud": {
        "long_name": "cloud or cloud shadow from SCL (3, 8, 9, 10)",
        "flag_values": [0, 1],
        "flag_meanings": "clear cloud_or_shadow",
    },
}


class MosaicError(CloudLULCError):
    """The store or the result cannot be written as asked; nothing was changed."""


class MosaicGridError(MosaicError):
    """The result's grid or CRS differs from the store's."""


def _open_group(store: Any, mode: str = "r") -> zarr.Group | None:
    """The root group read from live metadata (never the consolidated snapshot, which lags writes)."""
    try:
        group = zarr.open_group(store, mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None
    return group


def _crs_of(obj: xr.Dataset | xr.DataArray) -> pyproj.CRS | None:
    crs = obj.rio.crs if hasattr(obj, "rio") else None
    if crs is None and "spatial_ref" in obj.coords:
        wkt = obj["spatial_ref"].attrs.get("crs_wkt") or obj["spatial_ref"].attrs.get("spatial_ref")
        return pyproj.CRS.from_wkt(wkt) if wkt else None
    return pyproj.CRS.from_user_input(crs.to_wkt()) if crs is not None else None


def _create_store(
    store: Any, result: xr.Dataset, time: np.datetime64, chunk_size: int, overwrite: bool = False
) -> zarr.Group:
    """Write metadata, coordinates and the CF grid mapping of an empty one-slice mosaic; its open root.

    xarray writes the coordinates and the grid mapping (their CF encodings); the products are
    created empty with zarr, with the attributes xarray would give them. Why not an xarray template
    of lazy products: encoding it builds a Dask graph and a fill-value pass per product for
    metadata only, a tenth of a second before a run's first task with every worker idle.
    """
    ny, nx = result.sizes["y"], result.sizes["x"]
    coords = {"time": [np.datetime64(time, "ns")], "y": result["y"].values, "x": result["x"].values}
    template = xr.Dataset(coords=coords)
    for c in ("x", "y"):
        template[c].attrs.update(
            {k: v for k, v in result[c].attrs.items() if k in ("units", "long_name", "standard_name", "axis")}
        )
    crs = _crs_of(result)
    template = template.rio.write_crs(crs.to_wkt())
    try:
        template = template.rio.write_transform(result.rio.transform())
    except Exception:  # a 1-pixel axis has no derivable transform; coordinates still define the grid
        pass
    # a variable of its own, as when products name it in grid_mapping (no root "coordinates" attribute)
    template = template.reset_coords("spatial_ref")
    encoding: dict[str, dict[str, Any]] = {
        "time": {"units": _TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64", "compressors": [_CODEC]},
        **{c: {"compressors": [_CODEC]} for c in ("x", "y", "spatial_ref")},
    }
    template.attrs = {
        "Conventions": "CF-1.8",
        "title": _TITLE,
        "classes": class_table(),
        "time_order": "append",
        "chunk_size": chunk_size,
        "provenance": {},
    }
    template.to_zarr(store, mode="w" if overwrite else "w-", encoding=encoding, zarr_format=3, consolidated=False)
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    for name in MOSAIC_VARIABLES:
        root.create_array(
            name,
            shape=(1, ny, nx),
            chunks=(1, chunk_size, chunk_size),
            dtype="uint8",
            fill_value=NODATA,
            compressors=[_CODEC],
            dimension_names=("time", "y", "x"),
            attributes={**_VARIABLE_ATTRS[name], "grid_mapping": "spatial_ref", "_FillValue": NODATA},
        )
    nby, nbx = -(-ny // chunk_size), -(-nx // chunk_size)
    state = root.require_group(_STATE_GROUP)
    state.create_array(
        _DONE,
        shape=(1, nby, nbx),
        chunks=(1, 1, 1),
        dtype="uint8",
        fill_value=0,
        compressors=None,
        dimension_names=("time", "ychunk", "xchunk"),
    )
    return root


def _half_created(root: zarr.Group) -> bool:
    """A store :func:`_create_store` began and never finished (the process died in between): our
    title, nothing written yet, some product or the resume state missing. Safe to create again."""
    attrs = dict(root.attrs)
    missing = any(name not in root for name in MOSAIC_VARIABLES) or _STATE_GROUP not in root
    return attrs.get("title") == _TITLE and not attrs.get("provenance") and missing


def _lengths_consistent(root: zarr.Group) -> bool:
    n = root["time"].shape[0]
    return all(root[name].shape[0] == n for name in MOSAIC_VARIABLES)


def _repair_lengths(root: zarr.Group) -> int:
    """Make every time-dimensioned array as long as ``time`` (heals a crash between two resizes).

    Idempotent and metadata-only: a new slice reads as fill (255) and has no completion markers.
    """
    n = root["time"].shape[0]
    for name in MOSAIC_VARIABLES:
        arr = root[name]
        if arr.shape[0] != n:
            arr.resize((n,) + arr.shape[1:])
    if _STATE_GROUP not in root:
        ny, nx = root["lulc"].shape[1:]
        cs = root["lulc"].chunks[1]
        root.require_group(_STATE_GROUP).create_array(
            _DONE,
            shape=(n, -(-ny // cs), -(-nx // cs)),
            chunks=(1, 1, 1),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            dimension_names=("time", "ychunk", "xchunk"),
        )
    done = root[_STATE_GROUP][_DONE]
    if done.shape[0] != n:
        done.resize((n,) + done.shape[1:])
    return n


def _stored_times(root: zarr.Group) -> np.ndarray:
    raw = np.asarray(root["time"][:], dtype=np.int64)
    return raw.astype("datetime64[ms]")


def _chunk_size_of(root: zarr.Group) -> int:
    return int(root.attrs.get("chunk_size", root["lulc"].chunks[1]))
