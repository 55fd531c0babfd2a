"""Product comparison over the SIMULATED catalog served by a real STAC API (rustac serve, ``stac_url``):
the simulated ESA WorldCover product and a real Zarr mosaic slice against the simulated truth."""

from __future__ import annotations

import json
from datetime import UTC

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.warp import Resampling, reproject

from cloudlulc.classes import LABEL_PRODUCTS, NODATA, NUM_CLASSES, remap_labels
from cloudlulc.evaluation import EvaluationParams, ProductComparisonSpec, run_evaluation
from cloudlulc.evaluation.products import ProductComparisonError, compare_products, open_reference, select_release
from cloudlulc.store import write_mosaic

MOSAIC_TIME = "2024-04-19T10:00:00"


def _confusion(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    k = NUM_CLASSES
    return np.bincount(target[valid].astype(int) * k + pred[valid].astype(int), minlength=k * k).reshape(k, k)


@pytest.fixture(scope="module")
def reference(sim_catalog) -> xr.DataArray:
    """The simulated truth, cut to the demo AOI."""
    ref = open_reference(sim_catalog.truth_path)
    return ref.rio.clip_box(*sim_catalog.aoi_bbox_lonlat, crs="EPSG:4326")


@pytest.fixture(scope="module")
def mosaic_store(tmp_path_factory, reference) -> tuple[str, np.ndarray, np.ndarray]:
    """A real Zarr mosaic holding the truth with the top 10 rows shifted by one class, and a cloud layer
    covering the left half of the grid (so the per-window cloud bins have clear and cloudy windows)."""
    truth = reference.values
    lulc = truth.copy()
    top = lulc[:10] != NODATA
    lulc[:10][top] = (lulc[:10][top] + 1) % NUM_CLASSES
    cloud = np.zeros_like(truth, dtype=np.uint8)
    cloud[:, : truth.shape[1] // 2] = 1
    ds = xr.Dataset(
        {
            "lulc": (("y", "x"), lulc.astype(np.uint8)),
            "confidence": (("y", "x"), np.full(truth.shape, 90, np.uint8)),
            "optical_reliability": (("y", "x"), (100 * (1 - cloud)).astype(np.uint8)),
            "cloud": (("y", "x"), cloud),
        },
        coords={"x": reference["x"].values, "y": reference["y"].values},
    ).rio.write_crs(reference.rio.crs)
    store = str(tmp_path_factory.mktemp("mosaic") / "aoi.zarr")
    write_mosaic(ds, store, time=MOSAIC_TIME, attrs={"model": "test: truth with a perturbed stripe (simulated)"})
    return store, lulc, cloud


def _worldcover_on_grid(sim_catalog, reference: xr.DataArray) -> np.ndarray:
    """Independent path: the product COG read with rasterio, warped (nearest) onto the grid, remapped."""
    item = next(it for it in sim_catalog.items if it["collection"] == "esa-worldcover")
    asset, mapping = LABEL_PRODUCTS["esa-worldcover"]
    codes = np.zeros(reference.shape, np.uint8)
    with rasterio.open(item["assets"][asset]["href"]) as src:
        reproject(
            rasterio.band(src, 1),
            codes,
            dst_transform=reference.rio.transform(),
            dst_crs=reference.rio.crs,
            resampling=Resampling.nearest,
            dst_nodata=0,
        )
    return remap_labels(codes, mapping)


def test_worldcover_and_mosaic_vs_truth_on_common_mask(sim_catalog, stac_url, reference, mosaic_store) -> None:
    store, lulc, cloud = mosaic_store
    spec = ProductComparisonSpec(
        reference=sim_catalog.truth_path,
        aoi=list(sim_catalog.aoi_bbox_lonlat),
        collections=["esa-worldcover"],
        stac_url=stac_url,
        sign=False,
        mosaic=store,
        mosaic_name="CloudLULC mosaic",
        window=16,
    )
    res = compare_products(spec)
    assert list(res) == ["CloudLULC mosaic", "esa-worldcover"]

    truth = reference.values
    wc = _worldcover_on_grid(sim_catalog, reference)
    valid = (truth != NODATA) & (wc != NODATA) & (lulc != NODATA)
    assert valid.mean() > 0.9  # the AOI lies inside the product
    for name, pred in (("esa-worldcover", wc), ("CloudLULC mosaic", lulc)):
        total = res[name]["total"]
        assert total["n_pixels"] == int(valid.sum()), name  # one mask for every method
        assert np.array_equal(np.asarray(total["confusion"]), _confusion(pred, truth, valid)), name
    # the mosaic is wrong exactly on the valid pixels of its shifted stripe
    wrong = int(valid[:10].sum())
    assert res["CloudLULC mosaic"]["total"]["oa"] == pytest.approx(1 - wrong / valid.sum())
    # the simulated WorldCover is the truth in WorldCover codes (shrubland/wetland folded back to grassland)
    assert res["esa-worldcover"]["total"]["oa"] > 0.99
    # cloud bins from 16 x 16 windows of the mosaic's cloud layer: left-half windows cloudy, right clear
    per_bin = res["CloudLULC mosaic"]["per_bin"]
    assert res["CloudLULC mosaic"]["cloud_known"] is True
    assert per_bin["0-10"]["n_pixels"] > 0 and per_bin["60-100"]["n_pixels"] > 0
    assert (
        per_bin["0-10"]["n_pixels"]
        + per_bin["10-30"]["n_pixels"]
        + per_bin["30-60"]["n_pixels"]
        + per_bin["60-100"]["n_pixels"]
        == valid.sum()
    )
    item_id = next(it["id"] for it in sim_catalog.items if it["collection"] == "esa-worldcover")
    assert item_id in res["esa-worldcover"]["source"] and store in res["CloudLULC mosaic"]["source"]


def test_product_comparison_in_the_report(sim_catalog, stac_url, mosaic_store, tmp_path) -> None:
    store, _, _ = mosaic_store
    params = EvaluationParams(
        products=ProductComparisonSpec(
            reference=sim_catalog.truth_path,
            aoi=list(sim_catalog.aoi_bbox_lonlat),
            collections=["esa-worldcover"],
            stac_url=stac_url,
            sign=False,
            mosaic=store,
            mosaic_time=MOSAIC_TIME,
        ),
        out_dir=tmp_path / "report",
    )
    result = run_evaluation(params)
    md = result.markdown_path.read_text()
    assert "## Global LULC products vs our map" in md
    assert "| product | OA % | macro F1 % | mIoU % | scored pixels | patches |" in md
    for name, metrics in result.products.items():
        assert f"| {name} | {100 * metrics['total']['oa']:.1f} |" in md
    assert "figures/products.png" in md and "confusion_product_esa-worldcover.png" in md
    html = result.html_path.read_text()
    assert "Global LULC products vs our map" in html and html.count("data:image/png;base64,") >= 3
    doc = json.loads(result.json_path.read_text())
    assert set(doc["products"]) == {"CloudLULC mosaic", "esa-worldcover"}


def test_missing_product_is_named(sim_catalog, stac_url) -> None:
    spec = ProductComparisonSpec(
        reference=sim_catalog.truth_path, collections=["io-lulc-annual-v02"], stac_url=stac_url, sign=False
    )
    with pytest.raises(ProductComparisonError, match="io-lulc-annual-v02"):
        compare_products(spec)
    with pytest.raises(ProductComparisonError, match="no class mapping"):
        compare_products(spec.model_copy(update={"collections": ["not-a-product"]}))


def test_release_selection_by_date() -> None:
    from datetime import datetime

    def item(year: int) -> dict:
        return {
            "id": str(year),
            "properties": {
                "datetime": None,
                "start_datetime": f"{year}-01-01T00:00:00Z",
                "end_datetime": f"{year}-12-31T23:59:59Z",
            },
        }

    items = [item(2020), item(2021), item(2023)]
    at = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
    assert [i["id"] for i in select_release(items, at(2021, 6, 1))] == ["2021"]
    assert [i["id"] for i in select_release(items, at(2022, 6, 1))] == ["2021"]  # latest release before
    assert [i["id"] for i in select_release(items, at(2019, 6, 1))] == ["2020"]  # earliest after
    assert len(select_release(items, None)) == 3
