"""Write one acquisition's products into the mosaic as a time slice: append, replace, resume or skip.

A write holds the store's writer lease (:mod:`cloudlulc.store.lease`) from start to finish, so two
writers of one store never interleave. It writes into a slot of its own: a new or retired slot, or
the slot an interrupted run of the same slice left (``resume``: only chunks without a ``done``
marker are computed). When every chunk is written, one attribute write publishes the slot as the
slice at ``time`` and retires the slot of the slice it replaces. A slice already published from the
same inputs (same fingerprint) is not computed again (``skip``). A result on a different grid or CRS
is refused before anything is written. A slot is computed in square blocks of chunks, one
``dask.compute`` each, so peak memory is bounded by the block (:mod:`cloudlulc.store.blocks`).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import pyproj
import xarray as xr
import zarr
from dask.callbacks import Callback

from cloudlulc.classes import CLASSES
from cloudlulc.store.blocks import compute_blocks
from cloudlulc.store.lease import StoreLease, writer_lease
from cloudlulc.store.provenance import fingerprint, jsonable, redact_values, software_version
from cloudlulc.store.schema import (
    DEFAULT_CHUNK_SIZE,
    DONE,
    MOSAIC_VARIABLES,
    NAT,
    PROBABILITIES,
    STATE_GROUP,
    MosaicError,
    MosaicGridError,
    StoreRecords,
    array,
    chunk_size_of,
    create_store,
    crs_of,
    ensure_variables,
    fill_value,
    half_created,
    open_group,
    read_records,
    repair_lengths,
    write_records,
)
from cloudlulc.times import iso_utc, same_time, to_datetime64

__all__ = ["DEFAULT_BLOCK_PIXELS", "WriteSummary", "auto_block_chunks", "write_mosaic"]

#: side, in pixels, of the square blocks a slice is computed and written in (one block at a time) when
#: ``block_chunks="auto"``: 4 chunks of 512 px, 2 of 1024 px. Memory is bounded by the block.
DEFAULT_BLOCK_PIXELS = 2048


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_mosaic` did: which slot, and how many chunks it wrote or found done."""

    time: np.datetime64
    time_index: int
    action: str  # "append", "replace", "resume" or "skip"
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
    if PROBABILITIES in result:
        probs = result[PROBABILITIES]
        if tuple(probs.dims) != ("class", "y", "x") or probs.sizes["class"] != len(CLASSES) or probs.dtype != np.uint8:
            raise MosaicError(
                f"result {PROBABILITIES!r} must be uint8 (class, y, x) with {len(CLASSES)} classes, "
                f"is {probs.dtype} {dict(probs.sizes)}"
            )
    if crs_of(result) is None:
        raise MosaicError("result has no CRS (spatial_ref); write one with rio.write_crs before mosaicking")
    for c in ("x", "y"):
        if c not in result.coords or result.sizes[c] < 1:
            raise MosaicError(f"result lacks the {c!r} coordinate")


def _check_grid(root: zarr.Group, result: xr.Dataset) -> None:
    """Refuse a result whose grid or CRS differs from the store's (before anything is written)."""
    for c in ("x", "y"):
        stored = np.asarray(array(root, c)[:])
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
    attrs = dict(array(root, "spatial_ref").attrs)
    stored_crs = pyproj.CRS.from_wkt(str(attrs.get("crs_wkt") or attrs["spatial_ref"]))
    new_crs = crs_of(result)
    assert new_crs is not None
    if not stored_crs.equals(new_crs, ignore_axis_order=True):
        raise MosaicGridError(
            f"result CRS {new_crs.to_string()} differs from the store's {stored_crs.to_string()}; "
            "reproject onto the store's grid or write to a new store"
        )


def _layers(result: xr.Dataset, name: str, chunks: tuple[int, int]) -> da.Array:
    """The (layers, y, x) uint8 dask array of one product, chunked like the store: one layer, or
    one per class for ``probabilities``; its fill value when the result lacks it (so a reused slot
    never keeps an older slice's pixels)."""
    shape = (result.sizes["y"], result.sizes["x"])
    n = len(CLASSES) if name == PROBABILITIES else 1
    if name not in result:
        return da.full((n, *shape), fill_value(name), dtype=np.uint8, chunks=(n, *chunks))
    dims = ("class", "y", "x") if name == PROBABILITIES else ("y", "x")
    data = result[name].transpose(*dims).data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data))
    if data.dtype != np.uint8:
        raise MosaicError(f"result variable {name!r} must be uint8, is {data.dtype}")
    return data.reshape((n, *shape)).rechunk((n, *chunks))


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


def _open_or_create(store: Any, result: xr.Dataset, chunk_size: int) -> zarr.Group:
    """The store's root, created (or created again after an interrupted creation) when needed."""
    root = open_group(store, mode="r+")
    if root is not None and half_created(root):
        for name in list(root.keys()):  # nothing was ever published there: start the creation over
            del root[name]
        root = None
    if root is None:
        if chunk_size < 1:
            raise MosaicError(f"chunk_size must be >= 1, got {chunk_size}")
        if not _empty_but_ours(store):
            raise MosaicError(f"{store} exists but is not a CloudLULC Zarr v3 mosaic; choose another path")
        return create_store(store, result, chunk_size)
    if root.metadata.zarr_format != 3 or "lulc" not in root or "time" not in root:
        raise MosaicError(f"{store} exists but is not a CloudLULC Zarr v3 mosaic; choose another path")
    return root


def _refuse_foreign(store: Any) -> None:
    """A :class:`MosaicError` when ``store`` holds something that is not a CloudLULC mosaic."""
    from cloudlulc.store.schema import TITLE

    root = open_group(store)
    if root is not None:
        if root.metadata.zarr_format != 3 or root.attrs.get("title") != TITLE:
            raise MosaicError(f"{store} exists but is not a CloudLULC Zarr v3 mosaic; choose another path")
    elif not _empty_but_ours(store):
        raise MosaicError(f"{store} exists but is not a CloudLULC Zarr v3 mosaic; choose another path")


def _empty_but_ours(store: Any) -> bool:
    """Whether a local path holds nothing but what this package put there (the lease, a half-made
    store); remote stores are checked by the Zarr open above."""
    from cloudlulc.store.lease import LEASE_DIR, is_local

    if not is_local(store):
        return True
    path = Path(str(store).removeprefix("file://"))
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    root = open_group(store)
    if root is not None:
        return half_created(root)
    return all(p.name == LEASE_DIR for p in path.iterdir())


def _choose_slot(records: StoreRecords, key: str, fp: str, resume: bool, n_slots: int) -> tuple[int, str]:
    """The slot to write ``key`` into and the action: resume an interrupted run of the same inputs,
    reuse an abandoned, retired or unrecorded slot, or append a new one."""
    writing = [i for i, s in records.slots.items() if s.get("status") == "writing" and s.get("time") == key]
    same = [i for i in writing if records.slots[i].get("fingerprint") == fp]
    action = "replace" if key in records.provenance or writing else "append"
    if resume and same:
        return min(same), "resume"
    if writing:
        return min(writing), action
    # retired slots, and slots a crash left without a record (between growing and recording)
    free = sorted(
        {i for i, s in records.slots.items() if s.get("status") == "retired"}
        | {i for i in range(n_slots) if i not in records.slots}
    )
    return (free[0] if free else n_slots), action


class _ChunkCounter(Callback):
    """Reports written chunks: as each write task finishes on a local scheduler (a Dask callback),
    and for whatever a block wrote unseen (a distributed cluster runs no local callbacks)."""

    def __init__(self, report: Callable[[int, int], None], done: int, total: int) -> None:
        super().__init__()
        self.report, self.done, self.total = report, done, total
        self.seen: set[Hashable] = set()
        self.lock = threading.Lock()
        report(done, total)

    def _posttask(self, key: Hashable, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(key, tuple) and len(key) == 4 and str(key[0]).startswith("cloudlulc-block-"):
            self._count([key])

    def block_done(self, keys: list[Hashable]) -> None:
        self._count(keys)

    def _count(self, keys: list[Hashable]) -> None:
        with self.lock:
            new = [k for k in keys if k not in self.seen]
            self.seen.update(new)
            self.done += len(new)
            done = self.done
        if new:
            self.report(done, self.total)


def _grow(root: zarr.Group, n: int) -> None:
    """Make room for slot ``n`` (the next one): ``time`` grows first, so a crash in between leaves
    the other arrays the shorter ones, which :func:`repair_lengths` grows."""
    time_arr = array(root, "time")
    time_arr.resize((n + 1,))
    time_arr[n] = NAT
    repair_lengths(root)


def _write_block(
    block: np.ndarray, store: Any, slot: int, bi: int, bj: int, chunk_size: int, names: Sequence[str]
) -> int:
    """Write one chunk of all products ``names`` (their layers stacked in ``block``), then its
    completion marker (the marker only after the data).

    ``write_empty_chunks``: the chunk is stored even when it is all fill (255); Zarr's default would
    compare every chunk with the fill value first, much CPU for a saving only all-nodata chunks see.
    """
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    y0, x0 = bi * chunk_size, bj * chunk_size
    ny, nx = block.shape[1:]
    k = 0
    for name in names:
        arr = array(root, name).with_config({"write_empty_chunks": True})
        if name == PROBABILITIES:
            arr[slot, :, y0 : y0 + ny, x0 : x0 + nx] = block[k : k + len(CLASSES)]
            k += len(CLASSES)
        else:
            arr[slot, y0 : y0 + ny, x0 : x0 + nx] = block[k]
            k += 1
    array(root, f"{STATE_GROUP}/{DONE}")[slot, bi, bj] = 1
    return 1


def write_mosaic(
    result: xr.Dataset,
    store: str | Path | Any,
    *,
    time: Any,
    attrs: Mapping[str, Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resume: bool = True,
    skip_complete: bool = True,
    block_chunks: int | Literal["auto"] | None = "auto",
    shared_work: Callable[[Hashable], bool] | None = None,
    lease_wait_s: float = 300.0,
    lease_stale_s: float = 120.0,
    progress: Callable[[int, int], None] | None = None,
) -> WriteSummary:
    """Write one acquisition's products into the mosaic ``store`` as the slice at ``time``.

    ``result`` is the Dataset of :func:`cloudlulc.inference.predict_cube` (lazy is best: chunks are
    computed and written in parallel by Dask, each followed by its completion marker). ``attrs`` is
    the slice's provenance (pairing with item ids and hrefs, model and weights sha256, parameters);
    URLs lose their credentials and query strings before they are stored.
    ``result.attrs["pairing"]`` and ``["inference"]`` are added when not in ``attrs``.
    ``chunk_size`` applies when the store is created (an existing store keeps its chunking).

    With ``resume`` (default), an interrupted write of the same time and attrs continues where it
    stopped; with ``skip_complete`` (default), a slice already published from the same attrs is
    left as it is. Otherwise the slice is written anew and replaces the published one only once
    complete (the module docstring says how). Another writer of the same store is waited for
    ``lease_wait_s`` seconds, then :class:`~cloudlulc.store.lease.StoreBusyError`.

    ``block_chunks``: the slice is computed and written in square blocks of ``block_chunks`` x
    ``block_chunks`` store chunks (``"auto"``: :func:`auto_block_chunks` of the store's chunk size),
    one block at a time, so peak memory is bounded by the block whatever the AOI size (``None``: one
    compute). ``shared_work``: a predicate naming the keys worth computing once for all blocks
    (:func:`cloudlulc.inference.is_shared_work`); on local schedulers they are carried between
    blocks on disk instead of recomputed. Same output either way.

    ``progress(done, total)`` is called (in this thread or Dask's) as the slice's chunks are
    written: per chunk on local schedulers, per block on a distributed cluster.
    """
    _check_result(result)
    if block_chunks is not None and block_chunks != "auto" and (not isinstance(block_chunks, int) or block_chunks < 1):
        raise MosaicError(f"block_chunks must be >= 1, 'auto' or None, got {block_chunks!r}")
    t = to_datetime64(time, "ms")
    key = iso_utc(t, "ms")
    entry: dict[str, Any] = jsonable(redact_values(dict(attrs or {})))
    for extra in ("pairing", "inference"):
        if extra in result.attrs and extra not in entry:
            entry[extra] = jsonable(redact_values(result.attrs[extra]))
    fp = fingerprint(entry)
    store_arg = str(store) if isinstance(store, Path) else store

    _refuse_foreign(store_arg)  # before the lease: a foreign store is left untouched
    with writer_lease(store_arg, wait_s=lease_wait_s, stale_s=lease_stale_s) as lease:
        root = _open_or_create(store_arg, result, chunk_size)
        _check_grid(root, result)
        chunk_size = chunk_size_of(root)
        n_slots = repair_lengths(root)
        names = ensure_variables(root, PROBABILITIES in result)
        records = read_records(root)
        published = records.provenance.get(key)
        if skip_complete and published is not None and published.get("fingerprint") == fp:
            slot = int(published["slot"])
            return WriteSummary(t, slot, "skip", 0, 0, 0)
        slot, action = _choose_slot(records, key, fp, resume, n_slots)
        if slot == n_slots:
            _grow(root, slot)
        done = array(root, f"{STATE_GROUP}/{DONE}")
        if action != "resume":
            array(root, "time")[slot] = NAT
            done[slot] = 0
        entry.update(
            {
                "fingerprint": fp,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "software_version": software_version(),
                "time": key,
                "slot": slot,
            }
        )
        records.slots[slot] = {"time": key, "status": "writing", "fingerprint": fp}
        write_records(root, records)

        chunks = (chunk_size, chunk_size)
        layers = [_layers(result, name, chunks) for name in names]
        stacked = da.concatenate(layers, axis=0).rechunk((sum(a.shape[0] for a in layers), *chunks))
        finished = np.asarray(done[slot]).astype(bool)
        nby, nbx = stacked.numblocks[1], stacked.numblocks[2]
        if finished.shape != (nby, nbx):
            raise MosaicError(f"store chunk grid {finished.shape} does not match the result's {(nby, nbx)}")
        todo = [(bi, bj) for bi in range(nby) for bj in range(nbx) if not finished[bi, bj]]
        side = auto_block_chunks(chunk_size) if block_chunks == "auto" else block_chunks
        counter = _ChunkCounter(progress, nby * nbx - len(todo), nby * nbx) if progress is not None else None
        with counter or contextlib.nullcontext():
            compute_blocks(
                stacked,
                _blocks(todo, side, (nby, nbx)),
                lambda chunk, k: (_write_block, k, store_arg, slot, chunk[0], chunk[1], chunk_size, names),
                shared=shared_work,
                after_block=counter.block_done if counter is not None else None,
            )
        if not np.asarray(done[slot]).astype(bool).all():
            raise MosaicError(f"slice {key}: some chunks have no completion marker after the write; re-run to resume")
        _publish(root, lease, key, slot, entry)
    consolidate(store_arg)
    return WriteSummary(t, slot, action, nby * nbx, len(todo), nby * nbx - len(todo))


def _publish(root: zarr.Group, lease: StoreLease, key: str, slot: int, entry: dict[str, Any]) -> None:
    """Make ``slot`` the published slice at ``key``: its time first (it is still unpublished), then
    one attribute write that publishes it and retires the slot it replaces, then the old slot's
    time is cleared. A crash between any two steps leaves one published slice at ``key``."""
    lease.check()
    time_arr = array(root, "time")
    time_arr[slot] = np.datetime64(key.rstrip("Z"), "ms").astype(np.int64)
    records = read_records(root)
    previous = records.provenance.get(key)
    old = int(previous["slot"]) if previous is not None and "slot" in previous else None
    entry = {**entry, "status": "complete", "completed": datetime.now(UTC).isoformat(timespec="seconds")}
    records.provenance[key] = entry
    records.slots[slot] = {"time": key, "status": "complete", "fingerprint": entry["fingerprint"]}
    if old is not None and old != slot:
        records.slots[old] = {**records.slots.get(old, {}), "status": "retired"}
    lease.check()
    write_records(root, records)
    if old is not None and old != slot:
        time_arr[old] = NAT


def consolidate(store: Any) -> None:
    """Refresh the store's consolidated metadata (after any attribute write), so that plain
    ``xr.open_zarr(store)`` opens it in one read and without a warning.

    An object store is listed afresh: a filesystem's listing cache may predate the arrays this
    process created (adlfs refreshes only the parent of a written key), and the consolidated
    metadata would then leave them out.
    """
    from cloudlulc.store.lease import is_local

    if isinstance(store, str) and not is_local(store):
        store = zarr.storage.FsspecStore.from_url(store, read_only=False)  # the filesystem zarr uses
        store.fs.invalidate_cache()
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec": known, wanted
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)


def annotate_slice(
    store: str | Path | Any, time: Any, extra: Mapping[str, Any], *, lease_wait_s: float = 300.0
) -> None:
    """Add ``extra`` (what was measured once the slice was written: input shares, cloud from SCL)
    to the provenance of the published slice at ``time``; its fingerprint is unchanged."""
    store_arg = str(store) if isinstance(store, Path) else store
    with writer_lease(store_arg, wait_s=lease_wait_s) as lease:
        root = open_group(store_arg, mode="r+")
        if root is None:
            raise MosaicError(f"no mosaic at {store_arg}")
        records = read_records(root)
        keys = [k for k in records.provenance if same_time(k, time)]
        if not keys:
            raise MosaicError(f"{store_arg}: no published slice at {time}; mapped: {sorted(records.provenance)}")
        entry = records.provenance[keys[0]]
        entry.update(jsonable(redact_values(dict(extra))))
        lease.check()
        write_records(root, records)
        consolidate(store_arg)


def record_unpaired(
    store: str | Path | Any, entries: Mapping[str, Mapping[str, Any]], *, lease_wait_s: float = 300.0
) -> bool:
    """Remember acquisitions a near-real-time run could not map yet (ISO time -> reason, status,
    retry_until) in the store's ``unpaired`` attribute, so that later runs retry them; entries of
    slices since published are dropped. Returns False (nothing written) when there is no store yet:
    then the next run searches its whole look-back window anyway."""
    import json

    from cloudlulc.store.provenance import read_json_attr

    store_arg = str(store) if isinstance(store, Path) else store
    existing = open_group(store_arg)
    if existing is None or (not entries and not read_json_attr(existing, "unpaired", {})):
        return False
    with writer_lease(store_arg, wait_s=lease_wait_s):
        root = open_group(store_arg, mode="r+")
        assert root is not None
        current = dict(read_json_attr(root, "unpaired", {}))
        current.update({k: jsonable(redact_values(dict(v))) for k, v in entries.items()})
        published = list(read_records(root).provenance)
        current = {k: v for k, v in current.items() if not any(same_time(k, p) for p in published)}
        root.attrs["unpaired"] = json.dumps(current, sort_keys=True)
        consolidate(store_arg)
    return True
