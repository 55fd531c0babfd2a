"""The Zarr v3 LULC mosaic: one store per mapping target (AOI), one ``time`` slice per acquisition.

Schema (DESIGN.md "Zarr mosaic")
--------------------------------
* ``lulc``, ``confidence``, ``optical_reliability``, ``cloud``: (time, y, x) uint8, chunks
  ``1 x chunk_size x chunk_size`` (default 1024), Zarr ``fill_value`` 255 *and* CF ``_FillValue`` 255
  (setting only ``_FillValue`` leaves Zarr's fill at 0, so unwritten chunks would read as water).
  ``lulc`` carries CF ``flag_values`` / ``flag_meanings`` from :mod:`cloudlulc.classes`.
* ``x``, ``y`` pixel-centre coordinates, ``time`` (int64 milliseconds since 1970, CF units), and the
  CF grid mapping ``spatial_ref`` written by rioxarray (``grid_mapping`` on every variable), so
  ``xr.open_zarr(store, decode_coords="all")`` yields the CRS and GDAL (>= 3.11, the first release
  that reads spec-final Zarr v3) georeferences it.
* Codec: gzip. It is the compressor every GDAL build has; zstd/blosc are optional in GDAL builds
  (the GDAL bundled with some wheels cannot read them).
* Root attribute ``provenance``: a dict keyed by ISO time (ms) with, per slice, the caller's attrs
  (S2/S1 item ids and hrefs with any ``?query`` token stripped, S1-S2 gap, model name, weights
  sha256, parameters), the software version, creation time, a run ``fingerprint`` and ``status``
  (``in_progress`` / ``complete``). Per-time so it survives appends.
* Group ``_resume`` holds ``done`` (time, ychunk, xchunk) uint8: 1 once that chunk of that slice is
  written. One Zarr chunk per marker, so parallel writers never share a chunk.

Time order: slices are stored in **append order** (an append never moves existing data, so a crash
cannot damage earlier slices); :func:`open_mosaic` and :func:`mapped_times` present them sorted.

Writing a time that exists replaces that slice. A write interrupted mid-way leaves the slice marked
``in_progress``; writing the same time again with the same run fingerprint (same attrs) resumes and
computes only chunks without a ``done`` marker; a different fingerprint restarts the slice. Other
slices are never touched. A result on a different grid or CRS is refused before anything is written.
One writing process per store at a time (the Prefect flow serialises acquisitions); its chunk
writes run in parallel on Dask, each chunk owned by exactly one task. A slice is computed in square
blocks of ``block_chunks`` x ``block_chunks`` chunks, one block per ``dask.compute``, so peak memory
is bounded by the block rather than by the AOI (lazy inference would otherwise keep a row of chunks
alive); tile groups shared by neighbouring blocks run once and are carried on disk
(:mod:`cloudlulc.block_compute`); a resumed write skips blocks whose chunks are all done.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import pandas as pd
import pyproj
import xarray as xr
import zarr
from zarr.codecs import GzipCodec

from cloudlulc.block_compute import compute_blocks
from cloudlulc.classes import CLASS_NAMES, CLASSES, NODATA, class_table
from cloudlulc.inference import INPUT_PREFIX, TILE_GROUP_PREFIX

__all__ = [
    "MOSAIC_VARIABLES",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_BLOCK_PIXELS",
    "auto_block_chunks",
    "MosaicError",
    "MosaicGridError",
    "WriteSummary",
    "write_mosaic",
    "open_mosaic",
    "mapped_times",
    "read_provenance",
    "store_chunk_size",
    "strip_query",
    "export_cog",
    "quicklook_png",
]

MOSAIC_VARIABLES: tuple[str, ...] = ("lulc", "confidence", "optical_reliability", "cloud")
DEFAULT_CHUNK_SIZE = 1024
#: side, in pixels, of the square blocks a slice is computed and written in (one block at a time) when
#: ``block_chunks="auto"``: 4 chunks of 512 px, 2 of 1024 px. Memory is bounded by the block.
DEFAULT_BLOCK_PIXELS = 2048

_STATE_GROUP = "_resume"
_DONE = "done"
_TIME_UNITS = "milliseconds since 1970-01-01"
_CODEC = GzipCodec(level=1)
_TITLE = "CloudLULC land use / land cover mosaic"
_VOLATILE_KEYS = {"created", "creation_time"}

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


class MosaicError(RuntimeError):
    """The store or the result cannot be written as asked; nothing was changed."""


class MosaicGridError(MosaicError):
    """The result's grid or CRS differs from the store's."""


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_mosaic` did: which slice, and how many chunks it wrote or found done."""

    time: np.datetime64
    time_index: int
    action: str  # "append", "replace" or "resume"
    chunks_total: int
    chunks_written: int
    chunks_skipped: int


# ------------------------------------------------------------------------------------------ helpers
def _to_datetime64(time: Any) -> np.datetime64:
    ts = pd.Timestamp(time)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.to_datetime64(), "ms")


def _iso(t: np.datetime64) -> str:
    return str(np.datetime64(t, "ms")) + "Z"


_URL_QUERY = re.compile(r"^(https?://[^?#\s]+)[?#].*$", re.IGNORECASE)


def strip_query(value: Any) -> Any:
    """Recursively drop ``?query`` / ``#fragment`` from URL strings: SAS tokens must never be stored."""
    if isinstance(value, str):
        m = _URL_QUERY.match(value)
        return m.group(1) if m else value
    if isinstance(value, Mapping):
        return {str(k): strip_query(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_query(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """Attrs as plain JSON (datetimes -> ISO strings, numpy scalars -> Python) for Zarr attributes."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.datetime64, pd.Timestamp, datetime)):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _fingerprint(attrs: Mapping[str, Any]) -> str:
    stable = {k: v for k, v in attrs.items() if k not in _VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return version("cloudlulc")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "unknown"


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


def _check_result(result: xr.Dataset) -> None:
    import rioxarray  # noqa: F401  (registers .rio)

    if "lulc" not in result:
        raise MosaicError("result has no 'lulc' variable; pass the Dataset returned by predict_cube")
    for name in MOSAIC_VARIABLES:
        if name in result and tuple(result[name].dims) != ("y", "x"):
            raise MosaicError(f"result variable {name!r} must have dims ('y', 'x'), has {result[name].dims}")
        if name in result and result[name].dtype != np.uint8:
            raise MosaicError(f"result variable {name!r} must be uint8 (255 nodata), is {result[name].dtype}")
    if _crs_of(result) is None:
        raise MosaicError("result has no CRS (spatial_ref); write one with rio.write_crs before mosaicking")
    for c in ("x", "y"):
        if c not in result.coords or result.sizes[c] < 1:
            raise MosaicError(f"result lacks the {c!r} coordinate")


def _check_grid(root: zarr.Group, result: xr.Dataset) -> None:
    """Refuse a result whose grid or CRS differs from the store's (before anything is written)."""
    for c in ("x", "y"):
        stored = np.asarray(root[c][:])
        new = np.asarray(result[c].values)
        if stored.shape != new.shape:
            raise MosaicGridError(
                f"result {c} has {new.size} pixels, the store {stored.size}: the mosaic grid is fixed per store; "
                "map the same grid or write to a new store"
            )
        res = abs(float(stored[1] - stored[0])) if stored.size > 1 else 1.0
        if not np.allclose(stored, new, rtol=0, atol=1e-6 * res):
            raise MosaicGridError(
                f"result {c} coordinates differ from the store's (first {new[0]!r} vs {stored[0]!r}); "
                "the mosaic grid is fixed per store"
            )
    attrs = dict(root["spatial_ref"].attrs)
    stored_crs = pyproj.CRS.from_wkt(attrs.get("crs_wkt") or attrs["spatial_ref"])
    new_crs = _crs_of(result)
    assert new_crs is not None
    if not stored_crs.equals(new_crs, ignore_axis_order=True):
        raise MosaicGridError(
            f"result CRS {new_crs.to_string()} differs from the store's {stored_crs.to_string()}; "
            "reproject onto the store's grid or write to a new store"
        )


def _product(result: xr.Dataset, name: str, chunks: tuple[int, int]) -> da.Array:
    """A (y, x) uint8 dask array of one product, chunked like the store (255 when absent)."""
    shape = (result.sizes["y"], result.sizes["x"])
    if name not in result:
        return da.full(shape, NODATA, dtype=np.uint8, chunks=chunks)
    data = result[name].transpose("y", "x").data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=chunks)
    if data.dtype != np.uint8:
        raise MosaicError(f"result variable {name!r} must be uint8, is {data.dtype}")
    return data.rechunk(chunks)


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


def _append_time(root: zarr.Group, time: np.datetime64) -> int:
    """Grow every time-dimensioned array by one slice (fill 255 / 0 without writing chunks).

    ``time`` grows first: if the process dies before the other arrays follow, they are the shorter
    ones and :func:`_repair_lengths` grows them (the new slice has no data and no markers yet).
    """
    n = root["time"].shape[0]
    root["time"].resize((n + 1,))
    root["time"][n] = np.datetime64(time, "ms").astype(np.int64)
    for name in MOSAIC_VARIABLES:
        arr = root[name]
        arr.resize((n + 1,) + arr.shape[1:])
    done = root[_STATE_GROUP][_DONE]
    done.resize((n + 1,) + done.shape[1:])
    done[n] = 0
    return n


def _write_block(block: np.ndarray, store: Any, t: int, bi: int, bj: int, chunk_size: int) -> int:
    """Write one chunk of all products, then its completion marker (the marker only after the data).

    ``write_empty_chunks``: the chunk is stored even when it is all fill (255). Zarr's default would
    compare every chunk with the fill value first to delete such chunks instead, about a quarter of
    the write's CPU for a saving that only all-nodata chunks see (a replaced slice is overwritten
    either way).
    """
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    y0, x0 = bi * chunk_size, bj * chunk_size
    ny, nx = block.shape[1:]
    for k, name in enumerate(MOSAIC_VARIABLES):
        root[name].with_config({"write_empty_chunks": True})[t, y0 : y0 + ny, x0 : x0 + nx] = block[k]
    root[_STATE_GROUP][_DONE][t, bi, bj] = 1
    return 1


def auto_block_chunks(chunk_size: int) -> int:
    """Block side in chunks for a store chunk size: :data:`DEFAULT_BLOCK_PIXELS` of pixels, >= 1 chunk."""
    return max(1, round(DEFAULT_BLOCK_PIXELS / chunk_size))


def _axis_block(i: int, n: int, block_chunks: int) -> int:
    """Block index of chunk ``i`` of ``n`` along one axis: runs of ``block_chunks`` chunks, a short
    remainder (under half a block) joining the last full run.

    A sliver block (a grid one pixel taller than a multiple of the block, say) would cost a whole
    extra row of border tiles (recomputed, or carried through disk) and a ``dask.compute`` for
    almost no pixels. Merging it keeps blocks at most 1.5x the side, so the memory bound still holds.
    """
    full, rest = divmod(n, block_chunks)
    nblocks = max(1, full) if rest < (block_chunks + 1) // 2 else full + 1
    return min(i // block_chunks, nblocks - 1)


def _blocks(
    todo: list[tuple[int, int]], block_chunks: int | None, grid: tuple[int, int]
) -> list[list[tuple[int, int]]]:
    """The ``todo`` chunks of a ``grid`` of (rows, cols) chunks grouped into square blocks of
    ``block_chunks`` x ``block_chunks`` chunks (short remainders merged, see :func:`_axis_block`),
    row-major (``None``: one block with everything). Blocks without a chunk to do are left out."""
    if block_chunks is None:
        return [todo] if todo else []
    nby, nbx = grid
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for bi, bj in todo:
        blocks.setdefault((_axis_block(bi, nby, block_chunks), _axis_block(bj, nbx, block_chunks)), []).append((bi, bj))
    return [blocks[k] for k in sorted(blocks)]


def _set_provenance(root: zarr.Group, key: str, entry: dict[str, Any]) -> None:
    prov = dict(root.attrs.get("provenance", {}))
    prov[key] = entry
    root.attrs["provenance"] = prov


# ------------------------------------------------------------------------------------------ public API
def write_mosaic(
    result: xr.Dataset,
    store: str | Path | Any,
    *,
    time: Any,
    attrs: Mapping[str, Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resume: bool = True,
    block_chunks: int | Literal["auto"] | None = "auto",
    carry_border_tiles: bool = True,
) -> WriteSummary:
    """Write one acquisition's products into the mosaic ``store`` at ``time`` (append or replace).

    ``result`` is the Dataset of :func:`cloudlulc.inference.predict_cube` (lazy is best: chunks are
    computed and written in parallel by Dask, each followed by its completion marker, so memory stays
    bounded by the chunk size). ``attrs`` is the slice's provenance (pairing with item ids and hrefs,
    model name and weights sha256, parameters); URL query strings are stripped, so SAS tokens never
    reach the store. ``result.attrs["pairing"]`` and ``["inference"]`` are added when not in ``attrs``.
    ``chunk_size`` applies when the store is created (an existing store keeps its chunking).
    With ``resume`` (default), an interrupted write of the same time with the same attrs continues
    where it stopped; otherwise, and for a completed slice, the slice is rewritten.

    ``block_chunks``: the slice is computed and written in square blocks of ``block_chunks`` x
    ``block_chunks`` store chunks (``"auto"``: :func:`auto_block_chunks` of the store's chunk size),
    one block (one ``dask.compute``) at a time, so peak memory is bounded by the block size whatever
    the AOI size. Each block's graph is culled to what its chunks
    need: with :func:`~cloudlulc.inference.predict_cube` that is the block's tiles, the halo strips of
    the chunks just past its far edges, and the neighbour tiles that reach into it (see
    ``carry_border_tiles``; same inputs, same results: block-wise output equals a single compute).
    Without blocks (``None``) Dask would keep about one row of input chunks and tile sums alive, so
    memory would grow with the AOI width.

    ``carry_border_tiles``: tile groups and input chunks needed by more than one block are computed
    (read) once and wait on disk for the later blocks (:mod:`cloudlulc.block_compute`; local
    schedulers and same-host clusters), so block borders cost no recomputation and no second COG
    read; off, or on a remote cluster, each block recomputes them. The output is the same either way.
    """
    import rioxarray  # noqa: F401

    _check_result(result)
    if block_chunks is not None and block_chunks != "auto" and (not isinstance(block_chunks, int) or block_chunks < 1):
        raise MosaicError(f"block_chunks must be >= 1, 'auto' or None, got {block_chunks!r}")
    t = _to_datetime64(time)
    key = _iso(t)
    entry: dict[str, Any] = _jsonable(strip_query(dict(attrs or {})))
    for extra in ("pairing", "inference"):
        if extra in result.attrs and extra not in entry:
            entry[extra] = _jsonable(strip_query(result.attrs[extra]))
    fingerprint = _fingerprint(entry)

    root = _open_group(store, mode="r+")
    recreate = root is not None and _half_created(root)  # nothing was ever written there
    if root is None or recreate:
        if chunk_size < 1:
            raise MosaicError(f"chunk_size must be >= 1, got {chunk_size}")
        root = _create_store(store, result, t, chunk_size, overwrite=recreate)
        idx, action = 0, "append"
    else:
        if root.metadata.zarr_format != 3 or "lulc" not in root or "time" not in root:
            raise MosaicError(f"{store} exists but is not a CloudLULC Zarr v3 mosaic; choose another path")
        _check_grid(root, result)
        chunk_size = _chunk_size_of(root)
        n = _repair_lengths(root)
        times = _stored_times(root)[:n]
        hits = np.nonzero(times == t)[0]
        previous = dict(root.attrs.get("provenance", {})).get(key, {})
        if hits.size:
            idx = int(hits[0])
            same_run = previous.get("status") == "in_progress" and previous.get("fingerprint") == fingerprint
            action = "resume" if (resume and same_run) else "replace"
        else:
            idx, action = _append_time(root, t), "append"

    done = root[_STATE_GROUP][_DONE]
    if action != "resume":
        done[idx] = 0
    entry.update(
        {
            "status": "in_progress",
            "fingerprint": fingerprint,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "software_version": _software_version(),
            "time": key,
        }
    )
    _set_provenance(root, key, entry)

    chunks = (chunk_size, chunk_size)
    stacked = da.stack([_product(result, name, chunks) for name in MOSAIC_VARIABLES]).rechunk(
        (len(MOSAIC_VARIABLES),) + chunks
    )
    finished = np.asarray(done[idx]).astype(bool)
    nby, nbx = stacked.numblocks[1], stacked.numblocks[2]
    if finished.shape != (nby, nbx):
        raise MosaicError(f"store chunk grid {finished.shape} does not match the result's {(nby, nbx)}")
    store_arg = str(store) if isinstance(store, Path) else store
    todo = [(bi, bj) for bi in range(nby) for bj in range(nbx) if not finished[bi, bj]]
    # one block at a time: each compute holds only its block's inputs, tile sums and products; tile
    # groups shared with later blocks run once and wait on disk (cloudlulc.block_compute)
    compute_blocks(
        stacked,
        _blocks(todo, auto_block_chunks(chunk_size) if block_chunks == "auto" else block_chunks, (nby, nbx)),
        lambda chunk, key: (_write_block, key, store_arg, idx, chunk[0], chunk[1], chunk_size),
        carry_prefix=(TILE_GROUP_PREFIX, INPUT_PREFIX),
        carry=carry_border_tiles,
    )

    if not np.asarray(done[idx]).astype(bool).all():
        raise MosaicError(f"slice {key}: some chunks have no completion marker after the write; re-run to resume")
    entry["status"] = "complete"
    entry["completed"] = datetime.now(UTC).isoformat(timespec="seconds")
    _set_provenance(root, key, entry)
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec": known, wanted
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store_arg)
    return WriteSummary(t, idx, action, nby * nbx, len(todo), nby * nbx - len(todo))


def store_chunk_size(store: Any) -> int | None:
    """The chunk side of an existing mosaic (None when there is no mosaic at ``store`` yet)."""
    root = _open_group(store)
    return None if root is None or "lulc" not in root else _chunk_size_of(root)


def _chunk_size_of(root: zarr.Group) -> int:
    return int(root.attrs.get("chunk_size", root["lulc"].chunks[1]))


def read_provenance(store: Any) -> dict[str, dict[str, Any]]:
    """The per-slice provenance dict (keyed by ISO time)."""
    root = _open_group(store)
    if root is None:
        raise FileNotFoundError(f"no mosaic at {store}")
    return dict(root.attrs.get("provenance", {}))


def mapped_times(store: Any, complete_only: bool = True) -> list[np.datetime64]:
    """Sorted times in the mosaic (only slices whose write completed, unless ``complete_only=False``)."""
    root = _open_group(store)
    if root is None:
        return []
    prov = dict(root.attrs.get("provenance", {}))
    times = _stored_times(root)
    out = [t for t in times if not complete_only or prov.get(_iso(t), {}).get("status") == "complete"]
    return sorted(np.datetime64(t, "ns") for t in out)


def open_mosaic(store: Any, complete_only: bool = True) -> xr.Dataset:
    """The mosaic as a lazy Dataset sorted by time, CRS decoded (``decode_coords="all"``).

    By default slices whose write has not completed are left out, so readers never see a half-written
    map. Per-slice provenance is in ``ds.attrs["provenance"]``.
    """
    root = _open_group(store)
    if root is None:
        raise FileNotFoundError(f"no mosaic at {store}; write one with write_mosaic")
    if not _lengths_consistent(root):
        # a writer died between resizing ``time`` and the data arrays: heal (metadata only, idempotent)
        try:
            _repair_lengths(zarr.open_group(store, mode="r+", use_consolidated=False))
        except Exception as exc:  # read-only store
            raise MosaicError(
                f"{store}: an append was interrupted and the store is read-only here; run write_mosaic "
                "for that time again (it resumes) or open it where it is writable"
            ) from exc
    ds = xr.open_zarr(store, decode_coords="all", consolidated=False, mask_and_scale=False)
    ds = ds.drop_vars([v for v in ds.variables if v not in ds.coords and v not in MOSAIC_VARIABLES])
    if complete_only:
        keep = set(mapped_times(store, complete_only=True))
        mask = np.array([np.datetime64(t, "ns") in keep for t in ds["time"].values], dtype=bool)
        ds = ds.isel(time=np.nonzero(mask)[0])
    return ds.sortby("time")


def export_cog(store: Any, time: Any, path: str | Path) -> Path:
    """See :func:`cloudlulc.export.export_cog` (kept here for the interfaces.md entry point)."""
    from cloudlulc.export import export_cog as _export_cog

    return _export_cog(store, time, path)


def quicklook_png(store: Any, time: Any, path: str | Path) -> Path:
    """See :func:`cloudlulc.export.quicklook_png`."""
    from cloudlulc.export import quicklook_png as _quicklook_png

    return _quicklook_png(store, time, path)
