"""``cloudlulc demo``, ``dataset``, ``train`` and ``evaluate``: the other jobs, one entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Annotated

import typer

from cloudlulc.cli.app import app

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("demo")
def demo_command() -> None:
    """Run map-aoi end to end on the embedded SIMULATED demo catalog (starts STAC and Prefect servers)."""
    status = subprocess.call([sys.executable, "-m", "flows.demo"])
    if status:
        raise typer.Exit(status)


@app.command("dataset")
def dataset_command(
    aoi: Annotated[str, typer.Option(help="bbox 'minx,miny,maxx,maxy' (lon/lat), GeoJSON text, or a vector file")],
    start: Annotated[str, typer.Option(help="first date YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last date YYYY-MM-DD")],
    out: Annotated[str, typer.Option(help="output directory (holds dataset.zarr, the index and a report)")],
    catalog_url: Annotated[str | None, typer.Option(help="STAC API root (default: the Planetary Computer)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="scheduler of a running Dask cluster")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="any other DatasetParams field, key=value")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the full summary as JSON")] = False,
) -> None:
    """Build (or resume) a CloudLULC-Set style training dataset of S2/S1/label patch triplets."""
    from cloudlulc.config import get_settings
    from cloudlulc.dataset import DatasetParams, build_dataset
    from cloudlulc.runtime import dask_client

    values: dict[str, object] = {"aoi": aoi, "start": start, "end": end, "out": out}
    if catalog_url:
        values["catalog_url"] = catalog_url
    if dask_address:
        values["dask_address"] = dask_address
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set {item!r}: expected key=value")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    params = DatasetParams.model_validate(values)
    with dask_client(get_settings(), address=params.dask_address) as client:
        summary = build_dataset(params, client=client, progress=sys.stderr.isatty())
    out_doc = summary.model_dump(mode="json")
    if json_out:
        typer.echo(json.dumps(out_doc, indent=2))
        return
    splits = ", ".join(f"{k} {v}" for k, v in (out_doc.get("patches_per_split") or {}).items())
    typer.echo(f"{out_doc.get('n_patches')} patches ({splits}) in {out_doc.get('zarr_path')}")
    typer.echo(f"report: {out_doc.get('report_path')}")


@app.command("train", context_settings=_PASS_THROUGH, add_help_option=False)
def train_command(ctx: typer.Context) -> None:
    """Train a model (the options of python -m cloudlulc.training; cloudlulc train --help lists them)."""
    from cloudlulc.training.__main__ import main as train_main

    train_main(list(ctx.args))


@app.command("evaluate", context_settings=_PASS_THROUGH, add_help_option=False)
def evaluate_command(ctx: typer.Context) -> None:
    """Evaluate weights (the options of python -m cloudlulc.evaluation; cloudlulc evaluate --help)."""
    from cloudlulc.evaluation.__main__ import main as evaluate_main

    status = evaluate_main(list(ctx.args))
    if status:
        raise typer.Exit(status)
