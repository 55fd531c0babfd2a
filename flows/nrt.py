"""Prefect flow ``map-aoi-nrt``: keep an AOI's mosaic up to date, one scheduled run at a time.

Each run reads the times already in the store (:func:`cloudlulc.store.mapped_times`), searches
Sentinel-2 acquisitions from the day of the last mapped time (or ``lookback_days`` back for an empty
store) up to now, drops those already mapped and maps the rest, appending one time slice each.
So re-running maps nothing twice, and a run after missed ones catches up on everything since.

Deploy it with a schedule (see ``flows/serve.py`` and ``deploy/prefect.yaml``)::

    map_aoi_nrt_flow.to_deployment("berlin", cron="0 */6 * * *",
                                   parameters={"aoi": "13.40,52.50,13.42,52.51", "output": "s3://.../berlin.zarr"})
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger

from cloudlulc import pipeline
from cloudlulc.store import read_unpaired
from cloudlulc.times import iso_utc
from flows.map_aoi import publish_artifacts, run_mapping
from flows.params import NrtParams, print_result, validate


def last_mapped_time(store: str) -> datetime | None:
    """The newest time already in ``store`` (aware UTC), or None for an empty / missing store."""
    times = pipeline.existing_times(store)
    if not times:
        return None
    newest = max(times).astype("datetime64[us]").astype(datetime)
    return newest.replace(tzinfo=UTC)


@flow(name="map-aoi-nrt", log_prints=True, validate_parameters=True)
def map_aoi_nrt_flow(
    aoi: str | list[float] | dict[str, Any],
    output: str,
    lookback_days: float = 30.0,
    now: str | None = None,
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
    quicklook_dir: str | None = None,
    probabilities: bool | None = None,
    quicklook: bool | None = None,
    export_cog: bool | None = None,
) -> dict[str, Any]:
    """Map every acquisition over ``aoi`` newer than what ``output`` already holds (up to ``now``)."""
    values = dict(locals().items())
    params = validate(NrtParams, "map-aoi-nrt", values)
    params.map_params(None)  # the AOI, output, weights... are checked now, before the store is read

    logger = get_run_logger()
    last = last_mapped_time(params.output)
    waiting = params.oldest_waiting(read_unpaired(params.output))
    if waiting is not None:  # an acquisition still waiting for Sentinel-1: search back to it
        last = waiting if last is None else min(last, waiting)
    map_params = params.map_params(last)
    logger.info(
        "store %s: %s; searching %s",
        params.output,
        f"last mapped {last:%Y-%m-%dT%H:%M:%SZ}" if last else "empty (first run)",
        map_params.time,
    )
    result = run_mapping(map_params)
    publish_artifacts(result, "map-aoi-nrt")
    newly = [a.time for a in result.acquisitions]
    print(
        f"mapped {len(newly)} new acquisition(s): {', '.join(newly) or 'none'}; "
        f"{len(result.skipped_times)} already in the store"
    )
    out = result.as_dict()
    out["window"] = map_params.time
    out["mapped_times"] = [iso_utc(t) for t in sorted(pipeline.existing_times(params.output))]
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.nrt --aoi ... --output ...``: one near-real-time run, locally."""
    ap = argparse.ArgumentParser(
        prog="python -m flows.nrt",
        description="Map every acquisition over the AOI newer than what the store holds (one NRT run).",
    )
    ap.add_argument("--aoi", required=True, help="bbox minx,miny,maxx,maxy (lon/lat), GeoJSON or vector file")
    ap.add_argument("--output", required=True, help="the Zarr store the NRT runs append to")
    ap.add_argument("--lookback-days", type=float, help="how far back the first run searches (default 30)")
    ap.add_argument("--now", help="the end of the window (default: now, UTC)")
    ap.add_argument("--catalog-url", help="STAC API root (default: the Planetary Computer)")
    ap.add_argument("--max-cloud-cover", type=float)
    ap.add_argument("--max-s1-gap-days", type=float)
    ap.add_argument("--weights")
    ap.add_argument("--device")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    a = vars(ap.parse_args(argv))
    as_json = a.pop("json")
    out = map_aoi_nrt_flow(**{k: v for k, v in a.items() if v is not None})
    print_result(out, as_json)


__all__ = ["last_mapped_time", "main", "map_aoi_nrt_flow"]


if __name__ == "__main__":
    main()
