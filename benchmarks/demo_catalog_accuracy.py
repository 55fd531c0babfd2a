"""Accuracy of a weights file through the whole mapping pipeline on the simulated demo catalog.

The comparison tables in docs/model.md score models on in-memory simulated windows; this scores what
users actually get, **with the defaults a user gets** (no cloud-cover override): STAC search and
acquisition selection -> S1 pairing -> cube (COG reads, 20/60 m resampling, harmonisation) -> chunked
inference -> Zarr, over the demo catalog's full AOI, against the simulated truth raster the catalog was
rendered from. One row per acquisition: its cloud cover over the AOI (SCL), overall accuracy (OA) of
all pixels and split by the ``input_quality`` layer (optical clear, optical under cloud or shadow,
optical missing), and the expected calibration error (ECE, 10 bins) of the ``confidence`` layer.

    .venv/bin/python benchmarks/demo_catalog_accuracy.py [--weights W] [--catalog .demo/catalog]
        [--optical-only] [--json out.json]

``--optical-only`` pairs no Sentinel-1 pass (``max_s1_gap_days=0``, ``allow_optical_only``): what users
get when S1 is unavailable.

SIMULATED data: the figures show the pipeline is faithful end to end, not real-world accuracy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rioxarray
import xarray as xr

from cloudlulc.cube.quality import OPTICAL_CLEAR, OPTICAL_CLOUDY, OPTICAL_MISSING, SAR_MISSING
from cloudlulc.pipeline import map_aoi
from cloudlulc.simulate import ensure_demo_catalog
from cloudlulc.store import open_mosaic
from cloudlulc.testing.stac_server import serve_stac
from cloudlulc.training.metrics import ConfusionMatrix, expected_calibration_error

#: pixel groups scored apart, by their input_quality bits
GROUPS = {
    "optical clear": OPTICAL_CLEAR,
    "optical cloudy": OPTICAL_CLOUDY,
    "optical missing": OPTICAL_MISSING,
}


def _oa(pred: np.ndarray, target: np.ndarray) -> float | None:
    return float((pred == target).mean()) if target.size else None


def score_acquisition(ds: xr.Dataset, truth: np.ndarray) -> dict[str, Any]:
    """Scores of one acquisition's layers (``ds`` without time) against the truth classes (y, x)."""
    pred = ds.lulc.values.astype(np.int64)
    flags = ds.input_quality.values
    scored = (pred != 255) & (truth < 6)
    cloud = ds.cloud.values
    cm = ConfusionMatrix()
    target = np.where(scored, truth, 255)
    cm.update(pred, target, float((cloud[scored] == 1).mean()))
    total = cm.compute()["total"]
    p, t, f = pred[scored], truth[scored], flags[scored]
    confidence = ds.confidence.values[scored] / 100.0
    row: dict[str, Any] = {
        "acquisition": str(ds.time.values)[:10],
        "cloud_percent": round(100 * float((cloud[scored] == 1).mean()), 1),
        "pixels": int(scored.sum()),
        "oa": total["oa"],
        "macro_f1": total["macro_f1"],
        "miou": total["miou"],
        "ece": expected_calibration_error(confidence, p == t),
        "sar_missing_share": float(((f & SAR_MISSING) > 0).mean()),
    }
    for name, bit in GROUPS.items():
        sel = (f & bit) > 0
        row[f"{name} share"] = float(sel.mean())
        row[f"{name} oa"] = _oa(p[sel], t[sel])
        row[f"{name} confidence"] = float(confidence[sel].mean()) if sel.any() else None
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as the table docs/model.md and the README show."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        "| acquisition | cloud % | OA | macro F1 | mIoU | ECE | OA, optical clear | OA, optical cloudy "
        "| OA, optical missing (share) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        missing = r["optical missing share"]
        lines.append(
            f"| {r['acquisition']} | {r['cloud_percent']:.0f} | {fmt(r['oa'])} | {fmt(r['macro_f1'])} | "
            f"{fmt(r['miou'])} | {fmt(r['ece'])} | {fmt(r['optical clear oa'])} | {fmt(r['optical cloudy oa'])} | "
            f"{fmt(r['optical missing oa'])} ({100 * missing:.0f} %) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="default: the committed demo weights")
    ap.add_argument("--catalog", type=Path, default=Path(".demo/catalog"))
    ap.add_argument("--optical-only", action="store_true", help="map without Sentinel-1")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    without_s1 = {"max_s1_gap_days": 0, "allow_optical_only": True} if args.optical_only else {}

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
                "quicklook_dir": tmp,
                **without_s1,
            }
        )
        ds = open_mosaic(store).load()
    truth_da = rioxarray.open_rasterio(catalog.truth_path).squeeze(drop=True)
    truth = truth_da.sel(x=ds.x, y=ds.y, method="nearest").values.astype(np.int64)
    rows = [score_acquisition(ds.sel(time=t), truth) for t in ds.time.values]
    print(markdown(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
