"""Prefect flow ``build-dataset``: a thin wrapper over :func:`cloudlulc.dataset.build_dataset`.

The library owns the parameters (:class:`cloudlulc.dataset.DatasetParams`) and the work; this flow
validates the parameters before anything starts, gives the builder a Dask client from
:mod:`cloudlulc.runtime` (so the same configuration selects local, Kubernetes or Coiled workers)
and publishes the summary as an artifact.

CLI (runs the flow locally, against ``PREFECT_API_URL`` or an ephemeral server)::

    python -m flows.build_dataset --aoi 13.40,52.50,13.45,52.53 --start 2024-04-01 --end 2024-06-30 \
        --out datasets/berlin --set patch_size=256 --set stride=256
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from cloudlulc.config import get_settings
from cloudlulc.dataset import DatasetParams
from cloudlulc.runtime import dask_client
from flows.params import print_result, validate


@flow(name="build-dataset", log_prints=True, validate_parameters=False)
def build_dataset_flow(params: DatasetParams | dict[str, Any]) -> dict[str, Any]:
    """Build (or resume) a CloudLULC-Set style training dataset; returns its summary."""
    from cloudlulc.dataset import build_dataset  # the builder is heavy; import when a run starts

    p = params if isinstance(params, DatasetParams) else validate(DatasetParams, "build-dataset", params)
    logger = get_run_logger()
    logger.info("building dataset in %s (fingerprint %s)", p.out, p.fingerprint()[:12])
    with dask_client(get_settings(), address=p.dask_address) as client:
        summary = build_dataset(p, client=client, progress=False)
    out = summary.model_dump(mode="json")
    create_markdown_artifact(
        markdown=_summary_markdown(out), key="build-dataset-summary", description="CloudLULC training dataset build"
    )
    print(f"dataset: {out.get('n_patches')} patches in {out.get('zarr_path')}")
    return out


def _summary_markdown(s: dict[str, Any]) -> str:
    lines = [
        "# CloudLULC dataset build",
        "",
        f"**Store:** `{s.get('zarr_path')}`  ",
        f"**Index:** `{s.get('index_path')}`  ",
        f"**Report:** `{s.get('report_path')}`",
        "",
        f"Patches: **{s.get('n_patches')}** in {s.get('n_regions')} regions",
        "",
        "| split | patches |",
        "| --- | ---: |",
    ]
    for split, n in (s.get("patches_per_split") or {}).items():
        lines.append(f"| {split} | {n} |")
    lines += ["", "| cloud level | patches |", "| --- | ---: |"]
    for level, n in (s.get("patches_per_level") or {}).items():
        lines.append(f"| {level} % | {n} |")
    dropped = s.get("dropped") or {}
    if dropped:
        lines += ["", "Dropped: " + ", ".join(f"{k}: {v}" for k, v in dropped.items())]
    return "\n".join(lines) + "\n"


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["patch_size=256", "split_fractions=[0.8,0.1,0.1]"]`` -> values (JSON where it parses, else text)."""
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m flows.build_dataset", description="Build a CloudLULC training dataset."
    )
    ap.add_argument("--aoi", required=True, help="bbox minx,miny,maxx,maxy (lon/lat), GeoJSON or vector file")
    ap.add_argument("--start", required=True, help="first date YYYY-MM-DD")
    ap.add_argument("--end", required=True, help="last date YYYY-MM-DD")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--catalog-url", help="STAC API root (default: Planetary Computer)")
    ap.add_argument("--dask-address", help="Dask scheduler address (default: local cluster)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other DatasetParams field, JSON values (repeatable)",
    )
    ap.add_argument("--json", action="store_true", help="print the full summary as JSON")
    a = ap.parse_args(argv)
    values = {
        "aoi": a.aoi,
        "start": a.start,
        "end": a.end,
        "out": a.out,
        "catalog_url": a.catalog_url,
        "dask_address": a.dask_address,
        **parse_sets(a.set),
    }
    params = validate(DatasetParams, "build-dataset", {k: v for k, v in values.items() if v is not None})
    out = build_dataset_flow(params)
    print_result(out, a.json)
    return out


if __name__ == "__main__":
    main()
