"""Accuracy of a weights file through the whole mapping pipeline on the simulated demo catalog.

The comparison table in docs/model.md scores models on in-memory simulated patches; this scores what
users actually get: STAC search -> S1 pairing -> stackstac cube (COG reads, 20/60 m resampling,
harmonisation) -> chunked inference -> Zarr, over the demo catalog's full AOI (both S2 tiles), against
the simulated truth raster the catalog was rendered from. One row per acquisition, with its cloud cover
and the expected calibration error (ECE, 10 bins) of the ``confidence`` layer.

    .venv/bin/python benchmarks/demo_catalog_accuracy.py [--weights W] [--catalog .demo/catalog] [--optical-only]

``--optical-only`` pairs no Sentinel-1 pass (``max_s1_gap_days=0``, ``allow_optical_only``): what users
get when S1 is unavailable.

SIMULATED data: the figures show the pipeline is faithful end to end, not real-world accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rioxarray

from cloudlulc.pipeline import map_aoi
from cloudlulc.simulate import ensure_demo_catalog
from cloudlulc.store import open_mosaic
from cloudlulc.testing.stac_server import serve_stac
from cloudlulc.training.metrics import ConfusionMatrix, expected_calibration_error


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="default: the committed demo weights")
    ap.add_argument("--catalog", type=Path, default=Path(".demo/catalog"))
    ap.add_argument("--optical-only", action="store_true", help="map without Sentinel-1")
    args = ap.parse_args(argv)
    without_s1 = {"max_s1_gap_days": 0} if args.optical_only else {}

    catalog = ensure_demo_catalog(args.catalog)
    with tempfile.TemporaryDirectory() as tmp, serve_stac(catalog) as url:
        start, end = min(catalog.s2_dates), max(catalog.s2_dates)
        store = str(Path(tmp) / "accuracy.zarr")
        map_aoi(
            {
                "aoi": list(catalog.aoi_bbox_lonlat),
                "time": f"{start.isoformat()}/{end.isoformat()}",
                "output": store,
                "catalog_url": url,
                "weights": args.weights,
                "allow_optical_only": True,
                "max_cloud_cover": 100,
                "quicklook_dir": tmp,
                **without_s1,
            }
        )
        ds = open_mosaic(store).load()
    truth = rioxarray.open_rasterio(catalog.truth_path).squeeze(drop=True)
    truth = truth.sel(x=ds.x, y=ds.y, method="nearest").values.astype(np.int64)
    print("| acquisition | cloud % | OA | macro F1 | mIoU | ECE |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in ds.time.values:
        pred = ds.lulc.sel(time=t).values
        cloud = ds.cloud.sel(time=t).values
        valid = pred != 255
        target = np.where(valid & (truth < 6), truth, 255)
        cm = ConfusionMatrix()
        cm.update(pred.astype(np.int64), target, float((cloud[valid] == 1).mean()))
        total = cm.compute()["total"]
        scored = target != 255
        conf = ds.confidence.sel(time=t).values[scored] / 100.0
        ece = expected_calibration_error(conf, pred[scored] == target[scored])
        print(
            f"| {str(t)[:19]} | {100 * (cloud[valid] == 1).mean():.0f} | {total['oa']:.3f} | "
            f"{total['macro_f1']:.3f} | {total['miou']:.3f} | {ece:.3f} |"
        )


if __name__ == "__main__":
    main()
