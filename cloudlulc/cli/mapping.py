"""``cloudlulc map``, ``search`` and ``export``: map an AOI, dry-run its search, export a slice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cloudlulc.cli.app import app

AOI = Annotated[str, typer.Option(help="bbox 'minx,miny,maxx,maxy' (lon/lat), GeoJSON text, or a vector file")]
TIME = Annotated[str, typer.Option(help="date 'YYYY-MM-DD' or range 'start/end' (UTC)")]
CATALOG = Annotated[str | None, typer.Option(help="STAC API root (default: the Planetary Computer)")]
CLOUD = Annotated[float | None, typer.Option(help="drop acquisitions with more cloud over the AOI (percent)")]
GAP = Annotated[float | None, typer.Option(help="largest Sentinel-1 gap in days")]
JSON_OUT = Annotated[bool, typer.Option("--json", help="print the full result as JSON")]


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("map")
def map_command(
    aoi: AOI,
    time: TIME,
    output: Annotated[str, typer.Option(help="Zarr store to write (local path or s3://, gs://, az:// URL)")],
    catalog_url: CATALOG = None,
    max_cloud_cover: CLOUD = None,
    max_s1_gap_days: GAP = None,
    allow_optical_only: Annotated[
        bool | None, typer.Option("--allow-optical-only", help="map without Sentinel-1 when no pass is in range")
    ] = None,
    latest_only: Annotated[bool, typer.Option("--latest-only", help="map only the newest acquisition")] = False,
    weights: Annotated[str | None, typer.Option(help=".safetensors weights (default: the demo weights)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = None,
    dask_address: Annotated[str | None, typer.Option(help="scheduler address of a running Dask cluster")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="store chunk side in pixels (new stores)")] = None,
    probabilities: Annotated[
        bool | None, typer.Option("--probabilities", help="also store each class's probability")
    ] = None,
    quicklook: Annotated[bool | None, typer.Option("--quicklook/--no-quicklook", help="draw PNG quicklooks")] = None,
    cog: Annotated[bool | None, typer.Option("--cog", help="also export each slice as a COG")] = None,
    quicklook_dir: Annotated[str | None, typer.Option(help="where quicklooks go")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars")] = None,
    json_out: JSON_OUT = False,
) -> None:
    """Map an AOI for a date or a window into a Zarr LULC mosaic."""
    from cloudlulc.pipeline import map_aoi

    params = _given(
        aoi=aoi,
        time=time,
        output=output,
        catalog_url=catalog_url,
        max_cloud_cover=max_cloud_cover,
        max_s1_gap_days=max_s1_gap_days,
        allow_optical_only=allow_optical_only,
        latest_only=latest_only,
        weights=weights,
        device=device,
        dask_address=dask_address,
        chunk_size=chunk_size,
        probabilities=probabilities,
        quicklook=quicklook,
        export_cog=cog,
        quicklook_dir=quicklook_dir,
    )
    result = map_aoi(params, progress=progress)
    if json_out:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    console = Console()
    if not result.acquisitions:
        console.print(
            "nothing mapped" + (f" ({len(result.skipped_times)} already in the store)" if result.skipped_times else "")
        )
    else:
        table = Table(title=f"mapped into {result.output}")
        for col in ("time (UTC)", "mode", "S1 gap (d)", "cloud %", "no optical %", "km²"):
            table.add_column(col, no_wrap=True)
        for a in result.acquisitions:
            table.add_row(
                a.time[:16].replace("T", " "),
                a.mode,
                "-" if a.s1_gap_days is None else f"{a.s1_gap_days:.1f}",
                "-" if a.cloud_cover_aoi is None else f"{a.cloud_cover_aoi:.0f}",
                f"{100 * a.inputs.get('optical_missing', 0):.0f}",
                f"{a.mapped_km2:.2f}",
            )
        console.print(table)
        for a in result.acquisitions:
            for label, path in (("quicklook", a.quicklook), ("COG", a.cog)):
                if path:
                    console.print(f"{label} {a.time[:16]}: {path}", soft_wrap=True)
        if result.acquisitions[0].stac:
            console.print(f"STAC: {result.acquisitions[0].stac}", soft_wrap=True)
    for u in result.unpaired:
        console.print(f"not mapped ({u['status']}, no Sentinel-1 pass): {u['time']}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


@app.command("search")
def search_command(
    aoi: AOI,
    time: TIME,
    catalog_url: CATALOG = None,
    max_cloud_cover: CLOUD = None,
    max_s1_gap_days: GAP = None,
    json_out: JSON_OUT = False,
) -> None:
    """Dry run: the Sentinel-2 acquisitions a map would use, their cloud, and their Sentinel-1 pairs."""
    from cloudlulc.params import MapParams
    from cloudlulc.pipeline.stages import open_client, search_stage
    from cloudlulc.stac import MissingCollectionError, NoSentinel1Error, pair_s1

    params = _given(aoi=aoi, time=time, output="search-dry-run.zarr", catalog_url=catalog_url)
    params |= _given(max_cloud_cover=max_cloud_cover, max_s1_gap_days=max_s1_gap_days)
    run = MapParams.model_validate(params).resolved()
    acquisitions, _ = search_stage(run)
    client = open_client(run)
    rows = []
    for acq in acquisitions:
        row: dict[str, Any] = {
            "time": acq.time.isoformat(),
            "platform": acq.platform,
            "tiles": acq.item_ids,
            "cloud_over_aoi": None if acq.cloud_cover is None else round(acq.cloud_cover, 1),
            "aoi_coverage": round(acq.coverage, 3),
        }
        try:
            pairing = pair_s1(client, acq, run.geometry, max_gap_days=run.max_s1_gap_days, collection=run.s1_collection)
            row |= {"s1": pairing.s1_time.isoformat(), "gap_days": round(pairing.gap_days, 2)}
            row |= {"orbit": pairing.orbit_state, "s1_items": [it["id"] for it in pairing.s1_items]}
        except (NoSentinel1Error, MissingCollectionError) as exc:
            row |= {"s1": None, "no_s1_reason": str(exc)}
        rows.append(row)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} Sentinel-2 acquisition(s) over the AOI in {time}")
    for col in ("time (UTC)", "tiles", "cloud over AOI %", "Sentinel-1", "gap (d)", "orbit"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        cloud = "-" if r["cloud_over_aoi"] is None else f"{r['cloud_over_aoi']:.0f}"
        s1 = r["s1"] or "none in range"
        gap = "-" if r.get("gap_days") is None else f"{r['gap_days']:.1f}"
        s1_time = s1[:16].replace("T", " ")
        table.add_row(
            r["time"][:16].replace("T", " "), str(len(r["tiles"])), cloud, s1_time, gap, r.get("orbit") or "-"
        )
    Console().print(table)


@app.command("export")
def export_command(
    store: Annotated[str, typer.Argument(help="the Zarr mosaic")],
    time: Annotated[str, typer.Option(help="the slice: a date 'YYYY-MM-DD' or its time")],
    out: Annotated[Path, typer.Option(help="file to write")],
    format: Annotated[str, typer.Option("--format", help="cog or png")] = "cog",
    variable: Annotated[str, typer.Option(help="variable to export (COG)")] = "lulc",
) -> None:
    """Export one slice of a mosaic as a Cloud Optimized GeoTIFF (with class names) or a PNG quicklook."""
    from cloudlulc.store import export_cog, quicklook_png

    if format not in ("cog", "png"):
        raise typer.BadParameter(f"--format {format!r}: use cog or png")
    path = export_cog(store, time, out, variable=variable) if format == "cog" else quicklook_png(store, time, out)
    typer.echo(str(path))
