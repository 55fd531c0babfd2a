"""Prefect flow ``map-aoi``: map one AOI for a date or date range into a Zarr mosaic.

The flow is thin on purpose: every task calls one stage of :mod:`cloudlulc.pipeline` (which runs
without Prefect too). Tasks are coarse — search, pair, cube, infer+write (one per acquisition),
publish — and the pixel-level parallelism is Dask's (:mod:`cloudlulc.runtime`).

Network-facing tasks retry with a delay, but only on transient errors
(:func:`cloudlulc.pipeline.is_transient_error`): a missing Sentinel-1 pass or a bad AOI fails at once.
Parameters are validated (:class:`cloudlulc.params.MapParams`) before any task runs.

Run it directly::

    python -m flows.map_aoi --aoi 13.40,52.50,13.42,52.51 --time 2024-04-19 --output out/berlin.zarr
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from cloudlulc import pipeline
from cloudlulc.config import Settings, get_settings
from cloudlulc.cube import grid_for_aoi
from cloudlulc.model.io import ModelInfo, load_model
from cloudlulc.params import MapParams, MapRun
from cloudlulc.runtime import dask_client
from cloudlulc.stac import Acquisition, Pair
from cloudlulc.times import iso_utc
from flows.params import validate

_log = logging.getLogger(__name__)
#: quicklooks up to this size are embedded in the markdown artifact (file:// images do not render in a browser)
_EMBED_MAX_BYTES = 400_000


def retry_on_transient(task_: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only what :func:`is_transient_error` calls transient."""
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # the task's exception
        transient = pipeline.is_transient_error(exc)
        if not transient:
            _log.info("not retrying %s: %s is not a transient error", getattr(task_, "name", task_), type(exc).__name__)
        return transient
    return False


_TASK_OPTS: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_condition_fn": retry_on_transient}


@task(name="search", **_TASK_OPTS)
def search_task(params: MapRun) -> tuple[list[Acquisition], list[str]]:
    acqs, skipped = pipeline.search_stage(params)
    logger = get_run_logger()
    logger.info(
        "found %d Sentinel-2 acquisition(s) to map%s",
        len(acqs),
        f"; {len(skipped)} already mapped: {', '.join(skipped)}" if skipped else "",
    )
    for a in acqs:
        logger.info(
            "  %s  %s  cloud %.1f%%  items %s",
            iso_utc(a.time),
            a.platform,
            a.cloud_cover or float("nan"),
            ", ".join(a.item_ids),
        )
    return acqs, skipped


@task(name="pair", **_TASK_OPTS)
def pair_task(params: MapRun, acquisitions: list[Acquisition]) -> tuple[list[Pair], list[pipeline.Unpaired]]:
    pairs, unpaired = pipeline.pair_stage(params, acquisitions)
    logger = get_run_logger()
    for p in pairs:
        d = pipeline.describe_pair(p)
        if d["optical_only"]:
            logger.warning("%s: optical-only (%s)", iso_utc(p.s2.time), p.s1_missing_reason)
        else:
            logger.info("%s: Sentinel-1 %s, gap %.2f days", iso_utc(p.s2.time), ", ".join(d["s1_items"]), d["gap_days"])
    for u in unpaired:
        logger.warning("%s: not mapped (%s; retried until %s)", u.time, u.status, u.retry_until)
    return pairs, unpaired


@task(name="cube", **_TASK_OPTS)
def cube_task(params: MapRun, pairs: list[Pair], settings: Settings) -> list[Any]:
    cubes = pipeline.cube_stage(params, pairs, settings)
    for c in cubes:
        get_run_logger().info(
            "cube %s: %s",
            iso_utc(c["time"].values.astype("datetime64[ms]").item()) if "time" in c.coords else "?",
            dict(c.sizes),
        )
    return cubes


@task(name="infer-write", task_run_name="infer-write-{label}", **_TASK_OPTS)
def infer_write_task(
    label: str, params: MapRun, pair: Pair, cube: Any, model: Any, model_info: ModelInfo, settings: Settings
) -> str:
    t = pipeline.infer_write_stage(params, pair, cube, model, model_info, settings)
    get_run_logger().info("wrote %s to %s", t, params.output)
    return t


@task(name="publish", **_TASK_OPTS)
def publish_task(params: MapRun, times: list[str], pairs: list[Pair]) -> list[pipeline.AcquisitionResult]:
    return pipeline.publish_stage(params, times, pairs)


def task_timeouts(run: MapRun, settings: Settings, n_acquisitions: int) -> dict[str, float]:
    """Prefect task timeouts sized from the work, so a run that hangs fails (and is retried) instead
    of waiting forever: STAC tasks from the client's own timeouts and retries, inference from the
    AOI's pixels (``infer_seconds_per_megapixel`` + ``task_base_timeout_s``)."""
    one_request = (settings.stac_retries + 1) * (settings.stac_timeout_s + settings.stac_connect_timeout_s)
    grid = grid_for_aoi(run.geometry, max_pixels=run.max_grid_pixels)
    megapixels = grid.shape[0] * grid.shape[1] / 1e6
    base = settings.task_base_timeout_s
    return {
        "search": base + 4 * one_request,
        "pair": base + 4 * one_request * max(1, n_acquisitions),
        "cube": base,
        "infer-write": base + settings.infer_seconds_per_megapixel * megapixels,
        "publish": base + 10 * megapixels,
    }


def run_mapping(params: MapParams, settings: Settings | None = None) -> pipeline.MapResult:
    """The task sequence shared by ``map-aoi`` and ``map-aoi-nrt`` (call inside a flow)."""
    logger = get_run_logger()
    s = settings or get_settings()
    p = params.resolved(s)
    retry: dict[str, Any] = {"retries": s.retries, "retry_delay_seconds": s.retry_delay_seconds}
    timeouts = task_timeouts(p, s, 1)

    acqs, skipped = search_task.with_options(**retry, timeout_seconds=timeouts["search"])(p)
    result = pipeline.MapResult(output=p.output, model=None, skipped_times=skipped)
    if not acqs:
        logger.info("nothing new to map in %s", p.time)
        return result
    timeouts = task_timeouts(p, s, len(acqs))
    pairs, unpaired = pair_task.with_options(**retry, timeout_seconds=timeouts["pair"])(p, acqs)
    result.warnings += pipeline.optical_only_warnings(pairs)
    result.unpaired = [asdict(u) for u in unpaired]

    def note(msg: str) -> None:
        logger.warning(msg)
        result.warnings.append(msg)

    if pairs:
        model, info = load_model(p.weights, log_fn=note)
        result.model = info
        logger.info("model: %s%s", info.name, f" (sha256 {info.sha256[:12]})" if info.sha256 else "")
        with dask_client(s, address=p.dask_address) as client:
            if client is not None:
                logger.info("Dask dashboard: %s", client.dashboard_link)
            cubes = cube_task.with_options(**retry, timeout_seconds=timeouts["cube"])(p, pairs, s)
            pairs, cubes, dropped = pipeline.cloud_check_stage(p, pairs, cubes)
            for msg in dropped:
                note(msg)
            infer = infer_write_task.with_options(**retry, timeout_seconds=timeouts["infer-write"])
            times = [
                infer(iso_utc(pair.s2.time), p, quote(pair), quote(cube), quote(model), info, s)  # type: ignore[call-overload]
                for pair, cube in zip(pairs, cubes)
            ]
        result.acquisitions = publish_task.with_options(timeout_seconds=timeouts["publish"])(p, times, pairs)
        for msg in pipeline.input_warnings(result.acquisitions):
            note(msg)
    pipeline.remember_unpaired(p, unpaired, s)
    return result


def publish_artifacts(result: pipeline.MapResult, key_prefix: str = "map-aoi") -> None:
    """Markdown summary (with embedded quicklooks), image and link artifacts for the Prefect UI."""
    md = result.to_markdown()
    for a in result.acquisitions:
        if a.quicklook and Path(a.quicklook).exists() and Path(a.quicklook).stat().st_size <= _EMBED_MAX_BYTES:
            b64 = base64.b64encode(Path(a.quicklook).read_bytes()).decode()
            md += f"\n### Quicklook {a.time}\n\n![quicklook {a.time}](data:image/png;base64,{b64})\n"
    create_markdown_artifact(markdown=md, key=f"{key_prefix}-summary", description="CloudLULC mapping run summary")
    for a in result.acquisitions:
        if a.quicklook:
            uri = Path(a.quicklook).resolve().as_uri()
            create_image_artifact(
                image_url=uri, key=f"{key_prefix}-quicklook", description=f"LULC quicklook {a.time}: {a.quicklook}"
            )
    out = result.output
    link = Path(out).resolve().as_uri() if "://" not in out else out
    create_link_artifact(link=link, link_text=out, key=f"{key_prefix}-output", description="Zarr mosaic store")


@flow(name="map-aoi", log_prints=True, validate_parameters=True)
def map_aoi_flow(
    aoi: str | list[float] | dict[str, Any],
    time: str,
    output: str,
    catalog_url: str | None = None,
    s2_collection: str | None = None,
    s1_collection: str | None = None,
    max_cloud_cover: float | None = None,
    max_s1_gap_days: float | None = None,
    allow_optical_only: bool | None = None,
    weights: str | None = None,
    device: str | None = None,
    dask_address: str | None = None,
    chunk_size: int | None = None,
    latest_only: bool = False,
    quicklook_dir: str | None = None,
    probabilities: bool | None = None,
    quicklook: bool | None = None,
    export_cog: bool | None = None,
) -> dict[str, Any]:
    """Map ``aoi`` for ``time`` (a date or 'start/end') into the Zarr store ``output``.

    Unset options come from ``CLOUDLULC_*`` settings (catalog: the Planetary Computer; weights: the
    committed demo weights). Returns the run summary (also published as artifacts).
    """
    values = dict(locals().items())
    params = validate(MapParams, "map-aoi", values)
    result = run_mapping(params)
    publish_artifacts(result, "map-aoi")
    for a in result.acquisitions:
        print(f"mapped {a.time}: {a.mapped_km2:.3f} km², quicklook {a.quicklook}")
    print(f"output: {result.output}")
    return result.as_dict()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m flows.map_aoi")
    ap.add_argument("--aoi", required=True, help="bbox minx,miny,maxx,maxy (lon/lat), GeoJSON or vector file")
    ap.add_argument("--time", required=True, help="date YYYY-MM-DD or range start/end")
    ap.add_argument("--output", required=True, help="output Zarr store")
    ap.add_argument("--catalog-url")
    ap.add_argument("--max-cloud-cover", type=float)
    ap.add_argument("--max-s1-gap-days", type=float)
    ap.add_argument("--allow-optical-only", action="store_true", default=None)
    ap.add_argument("--weights")
    ap.add_argument("--device")
    ap.add_argument("--dask-address")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    a = ap.parse_args(argv)
    as_json = vars(a).pop("json")
    out = map_aoi_flow(**{k: v for k, v in vars(a).items() if v is not None})
    if as_json:
        print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
