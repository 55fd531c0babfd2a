"""The stages of mapping one AOI, each a function of a resolved run (:class:`~cloudlulc.params.MapRun`).

1. :func:`search_stage`  Sentinel-2 acquisitions of the AOI in the time window (optionally minus the
   times already in the store, for near-real-time runs);
2. :func:`pair_stage`    the nearest Sentinel-1 pass of each (or optical-only, if allowed);
3. :func:`cube_stage`    lazy Dask cubes of every pair on one UTM 10 m grid;
4. :func:`infer_write_stage` CloudLULC-Net inference through Dask, written to the Zarr mosaic
   (one ``time`` slice per acquisition; rewriting a time replaces it, so a retry is safe);
5. :func:`publish_stage` class areas in km² and PNG quicklooks read back from the store.

:func:`cloudlulc.pipeline.map_aoi` runs them in turn; the ``map-aoi`` Prefect flow calls the same
functions one task each, so the flow holds no logic of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import xarray as xr

from cloudlulc.classes import NODATA
from cloudlulc.config import Settings, get_settings
from cloudlulc.cube import HttpOptions, ReadOptions, ReadRetry, build_cube, grid_for_aoi
from cloudlulc.cube.quality import input_fractions
from cloudlulc.errors import CloudLULCError
from cloudlulc.inference import is_shared_work, predict_cube
from cloudlulc.model.io import ModelInfo
from cloudlulc.params import MapRun, is_local_store, local_store_path
from cloudlulc.pipeline.results import AcquisitionResult, class_areas_km2
from cloudlulc.stac import (
    Acquisition,
    MissingCollectionError,
    NoSentinel1Error,
    NoSentinel2Error,
    Pair,
    items_need_resign,
    open_catalog,
    pair_s1,
    resign_pair,
    search_s2,
)
from cloudlulc.store import (
    annotate_slice,
    export_cog,
    mapped_times,
    open_mosaic,
    quicklook_png,
    record_unpaired,
    store_chunk_size,
    write_mosaic,
)
from cloudlulc.store.stac_items import write_stac
from cloudlulc.times import SAME_TIME_TOLERANCE, iso_utc, to_datetime64

if TYPE_CHECKING:
    from pystac_client import Client
    from torch import nn

log = logging.getLogger(__name__)


class PipelineError(CloudLULCError):
    """A mapping run cannot go on; the message says what to change."""


def open_client(run: MapRun) -> Client:
    """The STAC API of the run."""
    return open_catalog(
        run.catalog_url,
        sign=run.sign,
        max_retries=run.stac_retries,
        timeout=run.stac_timeout_s,
        connect_timeout=run.stac_connect_timeout_s,
    )


def existing_times(store: str) -> list[np.datetime64]:
    """Times of the completed slices in ``store``; none when the store does not exist yet."""
    if is_local_store(store) and not local_store_path(store).exists():
        return []
    try:
        return [t.astype("datetime64[ns]") for t in mapped_times(store)]
    except FileNotFoundError:
        return []


def _is_mapped(t: np.datetime64, done: Sequence[np.datetime64]) -> bool:
    return any(abs(to_datetime64(t) - d) <= SAME_TIME_TOLERANCE for d in done)


def search_stage(run: MapRun) -> tuple[list[Acquisition], list[str]]:
    """Sentinel-2 acquisitions to map, and the ISO times skipped because they are already mapped.

    With ``skip_mapped`` (near-real-time runs) an empty window is normal and gives ``[]``; otherwise
    :class:`~cloudlulc.stac.NoSentinel2Error` propagates with its explanation.
    """
    grid_for_aoi(run.geometry, max_pixels=run.max_grid_pixels)  # too large an AOI fails before any search
    start, end = run.window
    try:
        acqs = search_s2(open_client(run), run.geometry, start, end, run.max_cloud_cover, collection=run.s2_collection)
    except NoSentinel2Error:
        if not run.skip_mapped:
            raise
        acqs = []
    skipped: list[str] = []
    if run.skip_mapped and acqs:
        done = existing_times(run.output)
        skipped = [iso_utc(a.time) for a in acqs if _is_mapped(to_datetime64(a.time), done)]
        acqs = [a for a in acqs if not _is_mapped(to_datetime64(a.time), done)]
    if run.latest_only and acqs:
        acqs = acqs[-1:]
    return acqs, skipped


@dataclass(frozen=True)
class Unpaired:
    """An acquisition an NRT run did not map for want of a Sentinel-1 pass, and why."""

    time: str
    reason: str
    #: "waiting": a pass may still be published, a later run retries; "given up": it is too late
    status: str
    retry_until: str


def pair_stage(run: MapRun, acquisitions: Sequence[Acquisition]) -> tuple[list[Pair], list[Unpaired]]:
    """Pair each acquisition with its nearest Sentinel-1 pass.

    Without a pass in range, a one-off run fails (or maps optical-only with ``allow_optical_only``).
    A near-real-time run (``skip_mapped``) never fails for it: while a pass may still be published
    (``max_s1_gap_days + s1_latency_days`` after the acquisition) the acquisition waits, returned as
    :class:`Unpaired` for a later run; after that it is mapped optical-only or given up
    (``nrt_without_s1``). Later acquisitions are mapped either way.
    """
    client = open_client(run)
    aoi = run.geometry
    pairs: list[Pair] = []
    unpaired: list[Unpaired] = []
    for acq in acquisitions:
        try:
            pairing = pair_s1(client, acq, aoi, max_gap_days=run.max_s1_gap_days, collection=run.s1_collection)
        except (NoSentinel1Error, MissingCollectionError) as exc:
            when = iso_utc(acq.time)
            deadline = acq.time + timedelta(days=run.max_s1_gap_days + run.s1_latency_days)
            if run.skip_mapped and not run.allow_optical_only:
                if run.now < deadline:
                    log.warning("%s: no Sentinel-1 pass yet; retried until %s: %s", when, iso_utc(deadline), exc)
                    unpaired.append(Unpaired(when, str(exc), "waiting", iso_utc(deadline)))
                    continue
                if run.nrt_without_s1 == "skip":
                    log.warning("%s: no Sentinel-1 pass came; given up: %s", when, exc)
                    unpaired.append(Unpaired(when, str(exc), "given up", iso_utc(deadline)))
                    continue
            elif not run.allow_optical_only:
                raise PipelineError(
                    f"{exc} [map-aoi: set allow_optical_only=true to map {when} with "
                    f"optical data only, or raise max_s1_gap_days (now {run.max_s1_gap_days:g})]"
                ) from exc
            log.warning("mapping %s optical-only: %s", when, exc)
            pairs.append(Pair(s2=acq, s1=None, aoi=aoi, s1_missing_reason=str(exc)))
            continue
        pairs.append(Pair(s2=acq, s1=pairing, aoi=aoi))
    return pairs, unpaired


def remember_unpaired(run: MapRun, unpaired: Sequence[Unpaired], settings: Settings | None = None) -> None:
    """Record the acquisitions an NRT run could not map in the store, so later runs retry them, and
    forget those mapped since."""
    if not run.skip_mapped:
        return
    s = settings or get_settings()
    entries = {u.time: {"reason": u.reason, "status": u.status, "retry_until": u.retry_until} for u in unpaired}
    record_unpaired(run.output, entries, lease_wait_s=s.store_lock_wait_s)


def read_options(settings: Settings) -> ReadOptions:
    """How the cube reads pixels, from the settings (travels with the read tasks)."""
    return ReadOptions(
        http=HttpOptions(timeout_s=settings.read_timeout_s, connect_timeout_s=settings.read_connect_timeout_s),
        retry=ReadRetry(attempts=settings.read_retries, delay_s=settings.read_retry_delay_s),
        remote_read_threads=settings.remote_read_threads,
    )


def cube_stage(run: MapRun, pairs: Sequence[Pair], settings: Settings | None = None) -> list[xr.Dataset]:
    """Lazy (Dask) input cubes, one per pair, all on the AOI's UTM 10 m grid, chunked by
    :func:`read_chunk_size` of the mosaic's chunks (an existing store keeps its own).

    Planetary Computer SAS tokens expire within about an hour and are baked into the graph, so a pair
    whose tokens are close to expiry (a long queue, a retry) is re-signed before its cube is built.
    """
    s = settings or get_settings()
    grid = grid_for_aoi(run.geometry, max_pixels=run.max_grid_pixels)
    store_chunk = store_chunk_size(run.output) or run.chunk_size
    chunk = read_chunk_size(store_chunk, s.read_chunk_size)
    read = read_options(s)
    cubes = []
    for p in pairs:
        items = list(p.s2.items) + (list(p.s1.s1_items) if p.s1 is not None else [])
        if items_need_resign(items):
            p = resign_pair(p)
        cubes.append(build_cube(p, grid, chunksize=chunk, read=read))
    return cubes


#: the run parameters that decide a slice's pixels: recorded with it, and part of its fingerprint
#: (a slice mapped again with only other options changed, a timeout say, is not recomputed)
PIXEL_PARAMETERS = {
    "aoi",
    "catalog_url",
    "s2_collection",
    "s1_collection",
    "max_cloud_cover",
    "max_s1_gap_days",
    "allow_optical_only",
    "weights",
    "chunk_size",
    "probabilities",
}

#: largest read chunk chosen by default (see :func:`read_chunk_size`)
MAX_DEFAULT_READ_CHUNK = 512


def read_chunk_size(store_chunk: int, requested: int | None = None) -> int:
    """Chunk side of the input cube for a mosaic with ``store_chunk`` px chunks.

    Reads and inference run on chunks smaller than the store's so that even a small AOI has enough
    of them to keep every worker busy while others read or write; the store keeps DESIGN's 1024 px
    chunks. A read chunk must divide the store chunk, so no read chunk straddles two store chunks
    (and so two blocks of the write).
    """
    if requested is not None:
        if requested < 1 or store_chunk % requested:
            raise ValueError(
                f"read_chunk_size={requested} must divide the mosaic's chunk_size={store_chunk} (e.g. "
                f"{store_chunk // 2} or {store_chunk // 4}); unset it to pick one automatically"
            )
        return requested
    return max(d for d in range(1, min(store_chunk, MAX_DEFAULT_READ_CHUNK) + 1) if store_chunk % d == 0)


def infer_write_stage(
    run: MapRun,
    pair: Pair,
    cube: xr.Dataset,
    model: nn.Module,
    model_info: ModelInfo,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Run the network over ``cube`` and write the result as one time slice; returns its ISO time.

    The Dask graph is computed by the Zarr write (so it runs on whatever client is current).
    Rewriting the same time replaces the slice, so retrying after a failure is safe.
    ``progress(done, total)`` follows the slice's written chunks.
    """
    s = settings or get_settings()
    resources = s.dask_task_resources
    annotate = dask.annotate(resources=dict(resources)) if resources else contextlib.nullcontext()
    with annotate:
        result = predict_cube(
            cube,
            model,
            tile=s.tile,
            overlap=min(s.overlap, s.tile // 4),
            batch_size=s.batch_size,
            device=run.device,
            probabilities=run.probabilities,
        )
    if "cloud" not in result and "cloud" in cube:
        result["cloud"] = cube["cloud"]
    t = to_datetime64(pair.s2.time)
    write_mosaic(
        result,
        run.output,
        time=t,
        attrs=run_attrs(run, pair, model_info),
        chunk_size=run.chunk_size,
        block_chunks=max(1, round(s.block_pixels / (store_chunk_size(run.output) or run.chunk_size))),
        shared_work=is_shared_work if s.carry_border_tiles else None,
        lease_wait_s=s.store_lock_wait_s,
        lease_stale_s=s.store_lock_stale_s,
        progress=progress,
    )
    return iso_utc(t)


def publish_stage(run: MapRun, times: Sequence[str], pairs: Sequence[Pair]) -> list[AcquisitionResult]:
    """Read each written slice back: class areas in km², what its pixels rest on (input shares,
    recorded with the slice's provenance), a PNG quicklook and a COG when asked; one result each."""
    ds = open_mosaic(run.output)
    stem = Path(run.output.rstrip("/")).stem or "mosaic"
    by_time = {iso_utc(p.s2.time): p for p in pairs}
    out = []
    for t in times:
        # the exact stored time (ISO strings here are rounded to seconds)
        sl = ds.sel(time=to_datetime64(t), method="nearest", tolerance=SAME_TIME_TOLERANCE)  # type: ignore[arg-type]
        lulc = sl["lulc"].load()
        areas = class_areas_km2(lulc)
        mapped = np.asarray(lulc.values) != NODATA
        inputs = input_fractions(sl["input_quality"].values, mapped) if "input_quality" in sl else {}
        pair = by_time.get(t)
        info = describe_pair(pair) if pair is not None else {}
        mode = acquisition_mode(info.get("optical_only", False), inputs)
        annotate_slice(run.output, sl["time"].values, {"inputs": inputs, "mode": mode})
        name = f"{stem}_{t.replace(':', '').replace('-', '')}"
        png = None
        if run.quicklook:
            png = run.quicklook_path() / f"{name}.png"
            quicklook_png(run.output, sl["time"].values, png)
        cog = None
        if run.export_cog:
            cog = run.quicklook_path().parent / "cog" / f"{name}_lulc.tif"
            export_cog(run.output, sl["time"].values, cog)
        exports = {k: str(v.resolve()) for k, v in (("quicklook", png), ("cog", cog)) if v is not None}
        if exports:
            annotate_slice(run.output, sl["time"].values, {"exports": exports})
        out.append(
            AcquisitionResult(
                time=t,
                s2_items=info.get("s2_items", []),
                s1_items=info.get("s1_items", []),
                s1_gap_days=info.get("gap_days"),
                optical_only=info.get("optical_only", False),
                mode=mode,
                cloud_cover_aoi=info.get("cloud_cover_aoi"),
                s1_orbit_state=info.get("s1_orbit_state"),
                inputs=inputs,
                class_areas_km2=areas,
                mapped_km2=round(sum(areas.values()), 6),
                quicklook=None if png is None else str(png),
                cog=None if cog is None else str(cog),
            )
        )
    stac = write_stac(run.output, catalog_url=run.catalog_url)
    for a in out:
        a.stac = str(stac)
    return out


def acquisition_mode(optical_only: bool, inputs: dict[str, float]) -> str:
    """``fused``, ``optical-only`` (no Sentinel-1 paired) or ``sar-only`` (no optical value in any
    mapped pixel: the map is the radar's alone)."""
    if optical_only:
        return "optical-only"
    if inputs and inputs.get("optical_missing", 0.0) >= 1.0:
        return "sar-only"
    return "fused"


def describe_pair(pair: Pair) -> dict[str, Any]:
    """Item ids and S1 gap of a pair, from ``Pair.as_dict()`` (ids and unsigned hrefs only)."""
    d = pair.as_dict()
    s2 = d.get("s2") or {}
    s1 = d.get("s1") or {}
    return {
        "s2_items": list(s2.get("item_ids", [])),
        "s1_items": list(s1.get("s1_item_ids", [])),
        "gap_days": None if not s1 or s1.get("gap_days") is None else float(s1["gap_days"]),
        "s1_orbit_state": s1.get("orbit_state"),
        "cloud_cover_aoi": s2.get("cloud_cover"),
        "optical_only": pair.s1 is None,
        "pairing": d,
    }


def cloud_check_stage(
    run: MapRun, pairs: Sequence[Pair], cubes: Sequence[xr.Dataset]
) -> tuple[list[Pair], list[xr.Dataset], list[str]]:
    """Drop, whole, the acquisitions whose cloud over the AOI measured from SCL exceeds
    ``max_cloud_cover`` (the search judged them by the tiles' metadata). Reads only SCL, and only
    when a limit below 100 is set. Returns the kept pairs and cubes, and a warning per dropped one."""
    if run.max_cloud_cover >= 100:
        return list(pairs), list(cubes), []
    kept_pairs, kept_cubes, notes = [], [], []
    for pair, cube in zip(pairs, cubes):
        cloud = cube["cloud"].data
        known = (cloud != NODATA).sum()
        cloudy = (cloud == 1).sum()
        n_known, n_cloudy = (int(v) for v in dask.compute(known, cloudy))
        share = 100.0 * n_cloudy / n_known if n_known else 100.0
        if share > run.max_cloud_cover:
            notes.append(
                f"{iso_utc(pair.s2.time)}: dropped, {share:.0f} % cloud over the AOI in SCL > max_cloud_cover "
                f"{run.max_cloud_cover:g} (the tiles' metadata said {pair.s2.cloud_cover or 0:.0f} %)"
            )
            continue
        kept_pairs.append(pair)
        kept_cubes.append(cube)
    for note in notes:
        log.warning(note)
    return kept_pairs, kept_cubes, notes


def input_warnings(results: Sequence[AcquisitionResult]) -> list[str]:
    """One line per mapped acquisition with pixels that rest on radar alone, or no radar at all."""
    out = []
    for a in results:
        if a.mode == "sar-only":
            out.append(f"{a.time}: no optical data in the AOI: the map rests on radar alone")
        elif a.inputs.get("optical_missing", 0.0) >= 0.01:
            out.append(
                f"{a.time}: {100 * a.inputs['optical_missing']:.0f} % of the mapped pixels have no optical data "
                "and rest on radar alone (input_quality flag optical_missing)"
            )
    return out


def optical_only_warnings(pairs: Sequence[Pair]) -> list[str]:
    """One line per pair mapped without Sentinel-1."""
    return [
        f"{iso_utc(p.s2.time)}: no Sentinel-1 pass within the gap, mapped optical-only" for p in pairs if p.s1 is None
    ]


def run_attrs(run: MapRun, pair: Pair, model_info: ModelInfo) -> dict[str, Any]:
    """Provenance stored with each slice: items, gap, model, parameters.

    The mosaic writer adds the software version and creation time itself; nothing time-varying goes
    in here, so an interrupted write of the same slice is recognised and resumed.
    """
    info = describe_pair(pair)
    return {
        "pairing": info["pairing"],
        "s2_items": info["s2_items"],
        "s1_items": info["s1_items"],
        "s1_gap_days": info["gap_days"],
        "s1_orbit_state": info["s1_orbit_state"],
        "cloud_cover_aoi": info["cloud_cover_aoi"],
        "optical_only": info["optical_only"],
        "model": model_info.name,
        "weights_sha256": model_info.sha256 or "untrained",
        "weights_simulated": model_info.simulated,
        "calibration": model_info.calibration,
        "parameters": run.model_dump(mode="json", include=PIXEL_PARAMETERS),
    }
