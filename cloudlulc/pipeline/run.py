"""Map an AOI end to end, without Prefect: :func:`map_aoi`."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict
from typing import Any

from cloudlulc.config import Settings, get_settings
from cloudlulc.console import configure_logging, slice_progress
from cloudlulc.model.io import load_model
from cloudlulc.params import MapParams
from cloudlulc.pipeline.results import MapResult
from cloudlulc.pipeline.stages import (
    cloud_check_stage,
    cube_stage,
    infer_write_stage,
    input_warnings,
    optical_only_warnings,
    pair_stage,
    publish_stage,
    remember_unpaired,
    search_stage,
)
from cloudlulc.runtime import dask_client
from cloudlulc.times import iso_utc

log = logging.getLogger(__name__)


def map_aoi(
    params: MapParams | dict[str, Any],
    *,
    settings: Settings | None = None,
    client: Any = None,
    progress: bool | None = None,
) -> MapResult:
    """Map an area of interest into a Zarr LULC mosaic, end to end, without Prefect.

    Searches Sentinel-2 L2A over ``params.aoi`` in ``params.time``, pairs each acquisition with
    the nearest Sentinel-1 RTC pass, reads both onto one 10 m UTM grid, runs CloudLULC-Net chunk by
    chunk and writes one time slice per acquisition into ``params.output``; then reads each slice
    back for class areas and a PNG quicklook.

    Args:
        params: a :class:`~cloudlulc.params.MapParams` or a dict of its fields, e.g.
            ``{"aoi": "16.9,48.1,17.0,48.2", "time": "2024-04-01/2024-04-30", "output": "out/x.zarr"}``.
            Unset options come from ``settings``.
        settings: site defaults (catalog, device, chunking...); default: ``CLOUDLULC_*`` variables.
        client: a ``distributed.Client`` to compute on; default: the configured scheduler
            (:func:`cloudlulc.runtime.dask_client`, Dask's threaded scheduler unless a cluster is set).
        progress: a progress bar per written slice; None: only on an interactive terminal. The
            run's steps are logged at INFO (:func:`cloudlulc.console.configure_logging` unless the
            application configured logging itself).

    Returns:
        A :class:`~cloudlulc.pipeline.MapResult`: the store, one result per mapped acquisition,
        the model used, times skipped as already mapped, and warnings.

    Raises:
        pydantic.ValidationError: bad parameters, before any work starts.
        cloudlulc.errors.CloudLULCError: a run that cannot go on (no Sentinel-2, no Sentinel-1 pass
            in range, an unreadable asset...), with a message saying what to change.
    """
    configure_logging()
    s = settings or get_settings()
    run = (params if isinstance(params, MapParams) else MapParams.model_validate(params)).resolved(s)
    acqs, skipped = search_stage(run)
    result = MapResult(output=run.output, model=None, skipped_times=skipped)
    if not acqs:
        return result
    pairs, unpaired = pair_stage(run, acqs)
    result.warnings += optical_only_warnings(pairs)
    result.unpaired = [asdict(u) for u in unpaired]
    if pairs:

        def note(message: str) -> None:
            log.warning(message)
            result.warnings.append(message)

        model, info = load_model(run.weights, log_fn=note)
        result.model = info
        ctx = contextlib.nullcontext(client) if client is not None else dask_client(s, address=run.dask_address)
        with ctx as dask_cluster:
            if dask_cluster is not None and getattr(dask_cluster, "dashboard_link", None):
                log.info("Dask dashboard: %s", dask_cluster.dashboard_link)
            cubes = cube_stage(run, pairs, s)
            pairs, cubes, dropped = cloud_check_stage(run, pairs, cubes)
            result.warnings += dropped
            times = []
            for pair, cube in zip(pairs, cubes):
                label = f"{iso_utc(pair.s2.time)[:16]}Z"
                log.info("mapping %s into %s", label, run.output)
                with slice_progress(label, enabled=progress) as update:
                    times.append(infer_write_stage(run, pair, cube, model, info, s, progress=update))
        result.acquisitions = publish_stage(run, times, pairs)
        result.warnings += input_warnings(result.acquisitions)
    remember_unpaired(run, unpaired, s)
    return result
