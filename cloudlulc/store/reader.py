"""Read the mosaic: published slices only, sorted by time, with their CRS and provenance."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from cloudlulc.store.schema import (
    MOSAIC_VARIABLES,
    PROBABILITIES,
    MosaicError,
    chunk_size_of,
    lengths_consistent,
    open_group,
    read_records,
    repair_lengths,
    stored_times,
)
from cloudlulc.times import to_datetime64

__all__ = [
    "mapped_times",
    "open_mosaic",
    "read_provenance",
    "read_slots",
    "read_unpaired",
    "select_time",
    "store_chunk_size",
]


def store_chunk_size(store: Any) -> int | None:
    """The chunk side of an existing mosaic (None when there is no mosaic at ``store`` yet)."""
    root = open_group(store)
    return None if root is None or "lulc" not in root else chunk_size_of(root)


def read_provenance(store: Any) -> dict[str, dict[str, Any]]:
    """The record of every published slice, keyed by ISO time (milliseconds, ``Z``)."""
    root = open_group(store)
    if root is None:
        raise FileNotFoundError(f"no mosaic at {store}")
    return read_records(root).provenance


def read_slots(store: Any) -> dict[int, dict[str, Any]]:
    """Every slot's ``time``, ``status`` (writing, complete, retired) and ``fingerprint``: what an
    interrupted write left, for operators and tests."""
    root = open_group(store)
    if root is None:
        raise FileNotFoundError(f"no mosaic at {store}")
    return read_records(root).slots


def read_unpaired(store: Any) -> dict[str, dict[str, Any]]:
    """Acquisitions near-real-time runs could not map yet for want of Sentinel-1, keyed by ISO time
    (second precision): ``reason``, ``status`` (waiting / given up) and ``retry_until``."""
    from cloudlulc.store.provenance import read_json_attr

    root = open_group(store)
    return {} if root is None else dict(read_json_attr(root, "unpaired", {}))


def _published_slots(root: zarr.Group) -> list[int]:
    return sorted(read_records(root).published())


def mapped_times(store: Any, complete_only: bool = True) -> list[np.datetime64]:
    """Sorted times of the published slices (or of every slot holding a time, ``complete_only=False``)."""
    root = open_group(store)
    if root is None:
        return []
    times = stored_times(root)
    if complete_only:
        times = times[_published_slots(root)]
    return sorted(np.datetime64(t, "ns") for t in times if not np.isnat(t))


def open_mosaic(store: Any, complete_only: bool = True) -> xr.Dataset:
    """The mosaic as a lazy Dataset of its published slices, sorted by time, CRS decoded.

    Slots being written, left by an interrupted write or retired by a replacement are left out, so a
    reader never sees a half-written map (``complete_only=False`` shows every slot, NaT-timed ones
    included). Per-slice provenance is ``ds.attrs["provenance"]`` (a dict keyed by ISO time).
    """
    root = open_group(store)
    if root is None:
        raise FileNotFoundError(f"no mosaic at {store}; write one with write_mosaic")
    if not lengths_consistent(root):
        # a writer died between resizing ``time`` and the data arrays: heal (metadata only, idempotent)
        try:
            repair_lengths(zarr.open_group(store, mode="r+", use_consolidated=False))
        except Exception as exc:  # read-only store
            raise MosaicError(
                f"{store}: an append was interrupted and the store is read-only here; run write_mosaic "
                "for that time again (it resumes) or open it where it is writable"
            ) from exc
    records = read_records(root)
    ds = xr.open_zarr(store, decode_coords="all", consolidated=False, mask_and_scale=False)
    ds = ds.drop_vars([v for v in ds.variables if v not in ds.coords and v not in (*MOSAIC_VARIABLES, PROBABILITIES)])
    if complete_only:
        ds = ds.isel(time=sorted(records.published()))
    ds.attrs["provenance"] = records.provenance
    for name in ("slots", "unpaired"):  # bookkeeping: read_slots / read_unpaired
        ds.attrs.pop(name, None)
    return ds.sortby("time")


def select_time(ds: xr.Dataset, time: Any) -> xr.Dataset:
    """The slice of ``ds`` at ``time``: a time to the millisecond, or a date (``"2022-01-16"``,
    a ``datetime.date``) matching the one slice of that UTC day. Raises ``KeyError`` naming the
    mapped times when nothing (or, for a date, more than one slice) matches."""
    times = ds["time"].values.astype("datetime64[ms]")
    mapped = [str(x) for x in times]
    day = _as_day(time)
    if day is not None:
        hits = np.nonzero(times.astype("datetime64[D]") == day)[0]
        if hits.size > 1:
            raise KeyError(f"{hits.size} slices on {day}: {[mapped[i] for i in hits]}; give the time to the second")
    else:
        t = to_datetime64(time, "ms")
        hits = np.nonzero(times == t)[0]
        if hits.size == 0:  # to the second, as ISO strings in results are written
            hits = np.nonzero(times.astype("datetime64[s]") == t.astype("datetime64[s]"))[0]
    if hits.size == 0:
        raise KeyError(f"time {time} is not a completed slice of the mosaic; mapped times: {mapped}")
    return ds.isel(time=int(hits[0]))


def _as_day(time: Any) -> np.datetime64 | None:
    """``time`` as a UTC day when it names a day only (``YYYY-MM-DD`` or a ``date``)."""
    import datetime as dt

    if isinstance(time, dt.date) and not isinstance(time, dt.datetime):
        return np.datetime64(time, "D")
    if isinstance(time, str) and len(time.strip()) == 10:
        try:
            return np.datetime64(time.strip(), "D")
        except ValueError:
            return None
    return None
