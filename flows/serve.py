"""Serve every CloudLULC deployment from one long-running process: ``python -m flows.serve``.

``prefect.serve`` registers the deployments with the Prefect API (``PREFECT_API_URL``) and executes
their runs in subprocesses of this process, so no work pool or worker is needed locally. Production
uses the same flows through ``deploy/prefect.yaml`` (process or Kubernetes work pools).

Deployments (defaults from ``CLOUDLULC_*`` settings, see :class:`cloudlulc.config.Settings`):

* ``map-aoi/default``  — every parameter given per run;
* ``map-aoi/demo``     — AOI, time, catalog and output of the demo (``CLOUDLULC_DEMO_AOI``,
  ``CLOUDLULC_DEMO_TIME``, ``CLOUDLULC_CATALOG_URL``, ``CLOUDLULC_DEMO_OUTPUT``); only when set;
* ``map-aoi-nrt/<CLOUDLULC_NRT_NAME>`` — on the cron ``CLOUDLULC_NRT_CRON`` (or every
  ``CLOUDLULC_NRT_INTERVAL_MINUTES``) for ``CLOUDLULC_NRT_AOI``
  (default: the demo AOI), appending to ``CLOUDLULC_NRT_OUTPUT``;
* ``build-dataset/default``, ``train/default``, ``evaluate/default``.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.deployments.runner import EntrypointType

from cloudlulc.config import Settings, get_settings
from cloudlulc.runtime.worker import export_to_child_processes
from flows.build_dataset import build_dataset_flow
from flows.evaluate import evaluate_flow
from flows.map_aoi import map_aoi_flow
from flows.nrt import map_aoi_nrt_flow
from flows.train import train_flow

_MODULE = EntrypointType.MODULE_PATH  # entrypoints like flows.map_aoi.map_aoi_flow: independent of the cwd


def build_deployments(settings: Settings | None = None) -> list[Any]:
    """The ``RunnerDeployment`` objects ``flows.serve`` serves, from the given (or environment) settings."""
    s = settings or get_settings()
    deps = [
        map_aoi_flow.to_deployment(
            "default",
            entrypoint_type=_MODULE,
            tags=["cloudlulc", "map"],
            description="Map an AOI for a date or range into a Zarr mosaic (all parameters per run).",
            parameters={"catalog_url": s.catalog_url},
        )
    ]
    if s.demo_aoi and s.demo_time:
        deps.append(
            map_aoi_flow.to_deployment(
                "demo",
                entrypoint_type=_MODULE,
                tags=["cloudlulc", "map", "demo"],
                description="Map the SIMULATED demo catalog (see cloudlulc.simulate).",
                parameters={
                    "aoi": s.demo_aoi,
                    "time": s.demo_time,
                    "output": s.demo_output,
                    "catalog_url": s.catalog_url,
                    "allow_optical_only": True,
                },
            )
        )
    nrt_aoi = s.nrt_aoi or s.demo_aoi
    if nrt_aoi:
        deps.append(
            map_aoi_nrt_flow.to_deployment(
                s.nrt_name,
                entrypoint_type=_MODULE,
                paused=s.nrt_paused,
                **(
                    {"interval": timedelta(minutes=s.nrt_interval_minutes)}
                    if s.nrt_interval_minutes
                    else {"cron": s.nrt_cron}
                ),
                tags=["cloudlulc", "nrt"],
                concurrency_limit=1,
                description="Near-real-time: map acquisitions newer than the store's last mapped time.",
                parameters={
                    "aoi": nrt_aoi,
                    "output": s.nrt_output,
                    "lookback_days": s.nrt_lookback_days,
                    "catalog_url": s.catalog_url,
                },
            )
        )
    deps += [
        build_dataset_flow.to_deployment("default", entrypoint_type=_MODULE, tags=["cloudlulc", "dataset"]),
        train_flow.to_deployment("default", entrypoint_type=_MODULE, tags=["cloudlulc", "train"]),
        evaluate_flow.to_deployment("default", entrypoint_type=_MODULE, tags=["cloudlulc", "evaluate"]),
    ]
    return deps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="concurrent flow runs (default CLOUDLULC_SERVE_LIMIT)")
    a = ap.parse_args(argv)
    s = get_settings()
    # flow runs are subprocesses: glibc and GDAL read the limits when they start
    export_to_child_processes(s.malloc_arena_max, s.gdal_cachemax_mb)
    deps = build_deployments(s)
    serve(*deps, limit=a.limit or s.serve_limit)


if __name__ == "__main__":
    main()
