"""Write one acquisition's products into the mosaic as a time slice: append, replace or resume.

Writing a time that exists replaces that slice. A write interrupted mid-way leaves the slice marked
``in_progress``; writing the same time again with the same run fingerprint (same attrs) resumes and
computes only chunks without a ``done`` marker; a different fingerprint restarts the slice. Other
slices are never touched. A result on a different grid or CRS is refused before anything is
written. A slice is computed in square blocks of chunks, one block per ``dask.compute``, so peak
memory is bounded by the block rather than by the AOI (:mod:`cloudlulc.store.blocks`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import pyproj
import xarray as xr
import zarr

from cloudlulc.classes import NODATA
from cloudlulc.store.blocks import compute_blocks
from cloudlulc.store.provenance import _fingerprint, _jsonable, _set_provenance, _software_version, strip_query
from cloudlulc.store.schema import (
    _DONE,
    _STATE_GROUP,
    DEFAULT_CHUNK_SIZE,
    MOSAIC_VARIABLES,
    MosaicError,
    MosaicGridError,
    _chunk_size_of,
    _create_store,
    _crs_of,
    _half_created,
    _open_group,
    _repair_lengths,
    _stored_times,
)
from cloudlulc.times import iso_utc, to_datetime64

#: side, in pixels, of the square blocks a slice is computed and written in (one block at a time) when
#: ``block_chunks="auto"``: 4 chunks of 512 px, 2 of 1024 px. Memory is bounded by the block.
DEFAULT_BLOCK_PIXELS = 2048


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_mosaic` did: which slice, and how many chunks it wrote or found done."""

    time: np.datetime64
    time_index: int
    action: str  # "append", "replace" or "resume"
    chunks_total: int
    chunks_written: int
    chunks_skipped: int


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
    compare every chunk with the fill value first to delete such chunks instead, a large share of
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


def write_mosaic(
    result: xr.Dataset,
    store: str | Path | Any,
    *,
    time: Any,
    attrs: Mapping[str, Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resume: bool = True,
    block_chunks: int | Literal["auto"] | None = "auto",
    shared_work: Callable[[Hashable], bool] | None = None,
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
    the AOI size. Each block's graph is culled to what its chunks need: with
    :func:`~cloudlulc.inference.predict_cube` that is the block's tiles, the halo strips of the chunks
    just past its far edges, and the neighbour tiles that reach into it (same inputs, same results:
    block-wise output equals a single compute). Without blocks (``None``) Dask would keep about one
    row of input chunks and tile sums alive, so memory would grow with the AOI width.

    ``shared_work``: a predicate naming the keys worth computing once for all blocks
    (:func:`cloudlulc.inference.is_shared_work`); on local schedulers they are carried between
    blocks on disk instead of recomputed (:mod:`cloudlulc.store.blocks`). Same output either way.
    """
    import rioxarray  # noqa: F401

    _check_result(result)
    if block_chunks is not None and block_chunks != "auto" and (not isinstance(block_chunks, int) or block_chunks < 1):
        raise MosaicError(f"block_chunks must be >= 1, 'auto' or None, got {block_chunks!r}")
    t = to_datetime64(time, "ms")
    key = iso_utc(t, "ms")
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
    # one block at a time: each compute holds only its block's inputs, tile sums and products
    compute_blocks(
        stacked,
        _blocks(todo, auto_block_chunks(chunk_size) if block_chunks == "auto" else block_chunks, (nby, nbx)),
        lambda chunk, key: (_write_block, key, store_arg, idx, chunk[0], chunk[1], chunk_size),
        shared=shared_work,
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
