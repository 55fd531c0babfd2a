"""Cube read throughput: stackstac cube (cloudlulc.cube.build_cube) vs plain rasterio windowed reads.

Writes the SIMULATED demo catalog (cloudlulc.simulate.write_demo_catalog) into a temporary
directory, builds the cube of each acquisition over the AOI and times ``.compute()``; the baseline
reads the same COG windows (every S2 band, SCL, S1 vv/vh of the paired pass) with
``rasterio.open(...).read(window=...)`` at native resolution, no warping, no mosaicking. Both are
reported as MB/s of *decoded source pixels* (the same bytes for both), plus the cube's output MB/s.
``--http`` serves the COGs through cloudlulc.testing.assets and reads them via GDAL /vsicurl.

    python benchmarks/cube_read.py [--tile-size 720] [--chunksize 512] [--http] [--workers N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import dask
import numpy as np
import rasterio
from rasterio.windows import from_bounds

from cloudlulc.classes import S1_BANDS, S2_BANDS
from cloudlulc.cube import build_cube, grid_for_aoi
from cloudlulc.simulate import write_demo_catalog
from cloudlulc.stac import Pair, group_acquisitions, parse_aoi, select_s1
from cloudlulc.testing.assets import serve_assets

GDAL_ENV = dict(
    GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
    CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.tiff",
    GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES",
    GDAL_HTTP_MULTIPLEX="YES",
)


def plain_read(pair: Pair, bounds) -> int:
    """Read every asset window covering ``bounds`` with rasterio; returns decoded bytes."""
    total = 0
    assets = [(it, k) for it in pair.s2.items for k in (*S2_BANDS, "SCL")]
    if pair.s1 is not None:
        assets += [(it, k) for it in pair.s1.s1_items for k in S1_BANDS]
    for it, key in assets:
        with rasterio.open(it["assets"][key]["href"]) as src:
            win = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
            win = win.intersection(rasterio.windows.Window(0, 0, src.width, src.height))
            total += src.read(1, window=win).nbytes
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tile-size", type=int, default=720, help="S2 tile width in 10 m pixels (multiple of 6)")
    ap.add_argument("--chunksize", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2, help="Dask threads for the cube")
    ap.add_argument("--http", action="store_true", help="read the COGs over HTTP (GDAL /vsicurl, range requests)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cloudlulc-bench-") as tmp:
        t0 = time.perf_counter()
        sim = write_demo_catalog(Path(tmp) / "catalog", seed=0, tile_size=args.tile_size)
        print(f"SIMULATED catalog written in {time.perf_counter() - t0:.1f} s ({args.tile_size} px tiles)")
        ctx = serve_assets(sim.root) if args.http else nullcontext(None)
        with ctx as server:
            items = sim.with_href_base(server.url) if server else sim.items
            s2 = [it for it in items if it["collection"] == "sentinel-2-l2a"]
            s1 = [it for it in items if it["collection"] == "sentinel-1-rtc"]
            aoi = parse_aoi(sim.aoi_bbox_lonlat)
            grid = grid_for_aoi(aoi)
            print(
                f"grid EPSG:{grid.epsg} {grid.shape[0]}x{grid.shape[1]} px, chunks {args.chunksize}, "
                f"{args.workers} threads, source {'HTTP /vsicurl' if server else 'local files'}"
            )
            rows = []
            for acq in group_acquisitions(s2, aoi):
                pair = Pair(acq, select_s1(acq, s1, aoi, 12), aoi)
                t = time.perf_counter()
                with rasterio.Env(**GDAL_ENV):  # the settings stackstac uses too, for a fair baseline
                    src_bytes = plain_read(pair, grid.bounds)
                t_plain = time.perf_counter() - t
                cube = build_cube(pair, grid, chunksize=args.chunksize)
                t = time.perf_counter()
                with dask.config.set(scheduler="threads", num_workers=args.workers):
                    out = cube[["optical", "sar", "scl", "cloud"]].compute()
                t_cube = time.perf_counter() - t
                out_bytes = sum(v.nbytes for v in out.data_vars.values())
                rows.append((acq.date, src_bytes, t_plain, t_cube, out_bytes))
            print(
                f"{'date':<12}{'source MB':>10}{'rasterio MB/s':>15}{'cube MB/s':>11}{'cube out MB/s':>15}{'cube/rasterio':>15}"  # noqa: E501
            )
            for d, sb, tp, tc, ob in rows:
                print(
                    f"{d!s:<12}{sb / 1e6:>10.1f}{sb / 1e6 / tp:>15.1f}{sb / 1e6 / tc:>11.1f}{ob / 1e6 / tc:>15.1f}{tp / tc:>15.2f}"  # noqa: E501
                )
            sb, tp, tc, ob = (float(np.sum([r[i] for r in rows])) for i in (1, 2, 3, 4))
            print(
                f"{'total':<12}{sb / 1e6:>10.1f}{sb / 1e6 / tp:>15.1f}{sb / 1e6 / tc:>11.1f}{ob / 1e6 / tc:>15.1f}{tp / tc:>15.2f}"  # noqa: E501
            )
            print(
                "cube = onto one 10 m grid (aligned windowed reads + upsampling, the warper only for other grids) "
                "+ harmonise + mosaic + dB; rasterio = raw native-resolution windows"
            )


if __name__ == "__main__":
    main()
