"""Read the mosaic: completed slices only, sorted by time, with their CRS and provenance."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from cloudlulc.store.schema import (
    MOSAIC_VARIABLES,
    MosaicError,
    _chunk_size_of,
    _lengths_consistent,
    _open_group,
    _repair_lengths,
    _stored_times,
)
from cloudlulc.times import iso_utc, to_datetime64


def store_chunk_size(store: Any) -> int | None:
    """The chunk side of an existing mosaic (None when there is no mosaic at ``store`` yet)."""
    root = _open_group(store)
    return None if root is None or "lulc" not in root else _chunk_size_of(root)


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
    out = [t for t in times if not complete_only or prov.get(iso_utc(t, "ms"), {}).get("status") == "complete"]
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


def select_time(ds: xr.Dataset, time: Any) -> xr.Dataset:
    """The slice of ``ds`` at exactly ``time`` (millisecond precision), with a clear error otherwise."""
    t = np.datetime64(to_datetime64(time, "ms"), "ns")
    times = ds["time"].values.astype("datetime64[ms]").astype("datetime64[ns]")
    hits = np.nonzero(times == t)[0]
    if hits.size == 0:
        raise KeyError(f"time {t} is not a completed slice of the mosaic; mapped times: {[str(x) for x in times]}")
    return ds.isel(time=int(hits[0]))
