"""The Zarr v3 LULC mosaic on disk: variables, attributes, coordinates, slots and resume markers.

Schema (DESIGN.md "Zarr mosaic"):

* ``lulc``, ``confidence``, ``optical_reliability``, ``cloud``, ``input_quality``: (time, y, x)
  uint8, chunks ``1 x chunk_size x chunk_size`` (default 1024), Zarr ``fill_value`` *and* CF
  ``_FillValue`` 255 (``input_quality``: 0, see :mod:`cloudlulc.cube.quality`; ``_FillValue``
  alone leaves Zarr's fill at 0, so unwritten chunks would read as water). ``lulc`` carries CF
  ``flag_values`` / ``flag_meanings`` from :mod:`cloudlulc.classes`, ``input_quality`` CF
  ``flag_masks``. ``optical_reliability`` is 0 where no optical band had a value.
* ``probabilities`` (optional, once a run asks for it): (time, class, y, x) uint8 percent per class,
  fill 255, chunks ``1 x classes x chunk_size x chunk_size``, with a ``class`` coordinate (the
  class values, names in its ``flag_meanings``). Slices mapped without it read 255.
* ``x``, ``y`` pixel-centre coordinates, ``time`` (int64 milliseconds since 1970, CF units, NaT for
  slots that hold no published slice), and the CF grid mapping ``spatial_ref``, named by every
  variable's ``grid_mapping`` and ``coordinates``, so plain ``xr.open_zarr(store)`` yields the CRS
  and GDAL >= 3.11 georeferences it.
* Codec: gzip, which every GDAL build reads (zstd and blosc are optional in GDAL builds).
* Root attributes, JSON strings (netCDF-safe): ``provenance`` (per ISO time, the published slice's
  record: item ids and hrefs without tokens, S1 gap, model and weights sha256, parameters, software
  version, times, ``fingerprint`` and its ``slot``) and ``slots`` (per slot index: ``time``,
  ``status`` writing / complete / retired, ``fingerprint``).
* Group ``_resume`` holds ``done`` (time, ychunk, xchunk) uint8: 1 once that chunk of that slot is
  written; one Zarr chunk per marker, so parallel tasks never share a chunk.

A *slot* is one index along ``time``. A slice is written into a slot of its own and published by one
attribute write that points ``provenance`` at it; a replaced slice's slot is retired only then and
reused by a later write. So a write that dies never hides or damages a published slice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyproj
import xarray as xr
import zarr
from zarr.codecs import GzipCodec

from cloudlulc.classes import CLASS_NAMES, CLASSES, NODATA, class_table
from cloudlulc.cube.quality import INPUT_QUALITY_ATTRS, INPUT_QUALITY_FILL
from cloudlulc.errors import CloudLULCError
from cloudlulc.store.provenance import read_json_attr

MOSAIC_VARIABLES: tuple[str, ...] = ("lulc", "confidence", "optical_reliability", "cloud", "input_quality")
#: the optional per-class probabilities (time, class, y, x)
PROBABILITIES = "probabilities"
DEFAULT_CHUNK_SIZE = 1024
#: the store layout this code writes (1: before slots, provenance as JSON data with a status)
LAYOUT_VERSION = 2

STATE_GROUP = "_resume"
DONE = "done"
TIME_UNITS = "milliseconds since 1970-01-01"
#: int64 of NaT: the time of a slot that holds no published slice
NAT = np.iinfo(np.int64).min
CODEC = GzipCodec(level=1)
TITLE = "CloudLULC land use / land cover mosaic"

VARIABLE_ATTRS: dict[str, dict[str, Any]] = {
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
    "input_quality": dict(INPUT_QUALITY_ATTRS),
    PROBABILITIES: {"long_name": "class probability (calibrated)", "units": "percent", "valid_range": [0, 100]},
}

#: fill values other than :data:`~cloudlulc.classes.NODATA`
_FILL = {"input_quality": INPUT_QUALITY_FILL}


def fill_value(name: str) -> int:
    """The value of a variable's unwritten pixels (and of pixels a run did not map)."""
    return _FILL.get(name, NODATA)


SlotStatus = Literal["writing", "complete", "retired"]


class MosaicError(CloudLULCError):
    """The store or the result cannot be written as asked; nothing was changed."""


class MosaicGridError(MosaicError):
    """The result's grid or CRS differs from the store's."""


def open_group(store: Any, mode: Literal["r", "r+"] = "r") -> zarr.Group | None:
    """The root group read from live metadata (never a consolidated snapshot, which lags writes)."""
    try:
        return zarr.open_group(store, mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def array(root: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` (a :class:`MosaicError` when the store lacks it or holds a group there)."""
    node = root[path] if path in root else None
    if not isinstance(node, zarr.Array):
        raise MosaicError(f"{root.store}: no array {path!r}; is this a CloudLULC mosaic?")
    return node


def crs_of(obj: xr.Dataset | xr.DataArray) -> pyproj.CRS | None:
    """The CRS of a result or a stored grid mapping (rioxarray's, or the CF ``spatial_ref`` WKT)."""
    crs = obj.rio.crs if hasattr(obj, "rio") else None
    if crs is None and "spatial_ref" in obj.coords:
        wkt = obj["spatial_ref"].attrs.get("crs_wkt") or obj["spatial_ref"].attrs.get("spatial_ref")
        return pyproj.CRS.from_wkt(wkt) if wkt else None
    return pyproj.CRS.from_user_input(crs.to_wkt()) if crs is not None else None


def create_store(store: Any, result: xr.Dataset, chunk_size: int) -> zarr.Group:
    """Write metadata, coordinates and the CF grid mapping of an empty mosaic (no slot yet).

    xarray writes the coordinates and the grid mapping (their CF encodings); the products are
    created empty with zarr, with the attributes xarray would give them (an xarray template of lazy
    products would build a Dask graph just for metadata).
    """
    import rioxarray  # noqa: F401  (registers .rio)

    ny, nx = result.sizes["y"], result.sizes["x"]
    coords = {"time": np.array([], dtype="datetime64[ns]"), "y": result["y"].values, "x": result["x"].values}
    template = xr.Dataset(coords=coords)
    for c in ("x", "y"):
        keep = ("units", "long_name", "standard_name", "axis")
        template[c].attrs.update({k: v for k, v in result[c].attrs.items() if k in keep})
    crs = crs_of(result)
    if crs is None:
        raise MosaicError("result has no CRS (spatial_ref); write one with rio.write_crs before mosaicking")
    template = template.rio.write_crs(crs.to_wkt())
    try:
        template = template.rio.write_transform(result.rio.transform())
    except Exception:
        pass
    template = template.reset_coords("spatial_ref")  # a variable of its own, named by each product
    encoding: dict[str, dict[str, Any]] = {
        "time": {
            "units": TIME_UNITS,
            "calendar": "proleptic_gregorian",
            "dtype": "int64",
            "_FillValue": NAT,
            "compressors": [CODEC],
        },
        **{c: {"compressors": [CODEC]} for c in ("x", "y", "spatial_ref")},
    }
    template.attrs = {
        "Conventions": "CF-1.8",
        "title": TITLE,
        "cloudlulc_layout": LAYOUT_VERSION,
        "classes": json.dumps(class_table()),
        "chunk_size": chunk_size,
        "provenance": "{}",
        "slots": "{}",
    }
    template.to_zarr(store, mode="a", encoding=encoding, zarr_format=3, consolidated=False)
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    for name in MOSAIC_VARIABLES:
        create_variable(root, name, (ny, nx), chunk_size, 0)
    if PROBABILITIES in result:
        create_variable(root, PROBABILITIES, (ny, nx), chunk_size, 0)
    nby, nbx = -(-ny // chunk_size), -(-nx // chunk_size)
    root.require_group(STATE_GROUP).create_array(
        DONE,
        shape=(0, nby, nbx),
        chunks=(1, 1, 1),
        dtype="uint8",
        fill_value=0,
        compressors=None,
        dimension_names=("time", "ychunk", "xchunk"),
        overwrite=True,
    )
    return root


def create_variable(root: zarr.Group, name: str, shape: tuple[int, int], chunk_size: int, n_slots: int) -> zarr.Array:
    """Create product ``name`` with ``n_slots`` slots of fill (a store made before it existed gets it
    this way: its older slices read as not mapped for it)."""
    fill = fill_value(name)
    attrs = {**VARIABLE_ATTRS[name], "grid_mapping": "spatial_ref", "coordinates": "spatial_ref", "_FillValue": fill}
    if name == PROBABILITIES:
        n = len(CLASSES)
        if "class" not in root:
            cls = root.create_array(
                "class", shape=(n,), dtype="uint8", fill_value=0, dimension_names=("class",), overwrite=True
            )
            cls[:] = np.array([c.value for c in CLASSES], dtype=np.uint8)
            cls.attrs.update(
                {
                    "long_name": "land use / land cover class",
                    "flag_values": [c.value for c in CLASSES],
                    "flag_meanings": " ".join(n.replace("-", "_") for n in CLASS_NAMES),
                }
            )
        return root.create_array(
            name,
            shape=(n_slots, n, *shape),
            chunks=(1, n, chunk_size, chunk_size),
            dtype="uint8",
            fill_value=fill,
            compressors=[CODEC],
            dimension_names=("time", "class", "y", "x"),
            overwrite=True,
            attributes=attrs,
        )
    return root.create_array(
        name,
        shape=(n_slots, *shape),
        chunks=(1, chunk_size, chunk_size),
        dtype="uint8",
        fill_value=fill,
        compressors=[CODEC],
        dimension_names=("time", "y", "x"),
        overwrite=True,
        attributes=attrs,
    )


def half_created(root: zarr.Group) -> bool:
    """A store :func:`create_store` began and never finished (the process died in between): our
    title, nothing published, some product or the resume state missing. Safe to create again."""
    missing = any(name not in root for name in MOSAIC_VARIABLES) or STATE_GROUP not in root
    return root.attrs.get("title") == TITLE and not read_json_attr(root, "provenance", {}) and missing


def chunk_size_of(root: zarr.Group) -> int:
    return int(root.attrs.get("chunk_size", array(root, "lulc").chunks[1]))  # type: ignore[arg-type]


def stored_times(root: zarr.Group) -> np.ndarray:
    """The raw ``time`` values as ``datetime64[ms]`` (NaT for slots without a published slice)."""
    raw = np.asarray(array(root, "time")[:], dtype=np.int64)
    return raw.astype("datetime64[ms]")


def slot_count(root: zarr.Group) -> int:
    return int(array(root, "time").shape[0])


def slot_variables(root: zarr.Group) -> list[str]:
    """The products the store holds (a store older than a product lacks it until the next write)."""
    return [name for name in (*MOSAIC_VARIABLES, PROBABILITIES) if name in root]


def ensure_variables(root: zarr.Group, probabilities: bool) -> list[str]:
    """Create the products this software writes that the store lacks (and ``probabilities`` when
    asked), as long as the other slot arrays; returns :func:`slot_variables`. Writers only."""
    n = slot_count(root)
    ny, nx = array(root, "lulc").shape[1:]
    for name in (*MOSAIC_VARIABLES, *([PROBABILITIES] if probabilities else [])):
        if name not in root:
            create_variable(root, name, (ny, nx), chunk_size_of(root), n)
    return slot_variables(root)


def lengths_consistent(root: zarr.Group) -> bool:
    n = slot_count(root)
    return all(array(root, name).shape[0] == n for name in slot_variables(root))


def repair_lengths(root: zarr.Group) -> int:
    """Make every slot-dimensioned array as long as ``time`` (heals a crash between two resizes).

    Idempotent and metadata-only: a new slot reads as fill and has no completion markers.
    """
    n = slot_count(root)
    for name in slot_variables(root):
        arr = array(root, name)
        if arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))
    if STATE_GROUP not in root:
        ny, nx = array(root, "lulc").shape[1:]
        cs = chunk_size_of(root)
        root.require_group(STATE_GROUP).create_array(
            DONE,
            shape=(n, -(-ny // cs), -(-nx // cs)),
            chunks=(1, 1, 1),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            dimension_names=("time", "ychunk", "xchunk"),
        )
    done = array(root, f"{STATE_GROUP}/{DONE}")
    if done.shape[0] != n:
        done.resize((n, *done.shape[1:]))
    return n


@dataclass(frozen=True)
class StoreRecords:
    """The store's bookkeeping: published slices (``provenance`` by ISO time) and ``slots``."""

    provenance: dict[str, dict[str, Any]]
    slots: dict[int, dict[str, Any]]

    def published(self) -> dict[int, str]:
        """Slot index -> ISO time of every published slice."""
        return {
            int(e["slot"]): iso
            for iso, e in self.provenance.items()
            if "slot" in e and self.slots.get(int(e["slot"]), {}).get("status") == "complete"
        }


def read_records(root: zarr.Group) -> StoreRecords:
    """The store's records; a store of layout 1 (no slots) is read as one slot per time index."""
    provenance = read_json_attr(root, "provenance", {})
    slots = {int(k): v for k, v in read_json_attr(root, "slots", {}).items()}
    if int(str(root.attrs.get("cloudlulc_layout", 1))) < 2:  # layout 1: a slice's status in its provenance
        from cloudlulc.times import iso_utc

        for i, t in enumerate(stored_times(root)):
            entry = provenance.get(iso_utc(t, "ms"))
            if entry is not None:
                status = "complete" if entry.get("status") == "complete" else "writing"
                slots[i] = {"time": iso_utc(t, "ms"), "status": status, "fingerprint": entry.get("fingerprint")}
                entry["slot"] = i
        provenance = {k: v for k, v in provenance.items() if v.get("status") == "complete"}
    return StoreRecords(provenance, slots)


def write_records(root: zarr.Group, records: StoreRecords) -> None:
    """Replace the store's records in one attribute write (``zarr.json`` is replaced whole)."""
    root.attrs.update(
        {
            "cloudlulc_layout": LAYOUT_VERSION,
            "provenance": json.dumps(records.provenance, sort_keys=True),
            "slots": json.dumps({str(k): v for k, v in sorted(records.slots.items())}, sort_keys=True),
            "classes": json.dumps(class_table()),
        }
    )
