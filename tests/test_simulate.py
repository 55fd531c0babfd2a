"""cloudlulc.simulate: in-memory scenes and the Planetary-Computer-shaped catalog (SIMULATED DATA).

The catalog tests compare against the real Planetary Computer item JSON in
../shared/fixtures/pc-items (conftest ``pc_fixtures_dir``), read the written COGs back with
rasterio, and validate every STAC document offline against vendored schemas.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Polygon, box, shape

from cloudlulc.classes import NUM_CLASSES, S2_BANDS, SCL_CLOUD_CLASSES, WORLDCOVER_TO_LULC, remap_labels
from cloudlulc.schemas import validate_stac
from cloudlulc.simulate import DEFAULT_S1, DEFAULT_S2, SimCatalog, simulate_scene, write_demo_catalog
from cloudlulc.simulate.catalog import SIMULATOR_VERSION
from cloudlulc.simulate.scene import apply_clouds, make_clouds, make_landscape, render_optical

S2_DATA_ASSETS = {*S2_BANDS, "SCL"}


def _fixture_items(pc_fixtures_dir: Path, name: str) -> list[dict]:
    doc = json.loads((pc_fixtures_dir / name).read_text())
    return doc["features"] if doc.get("type") == "FeatureCollection" else [doc]


def _harmonise(dn: np.ndarray, baseline: str) -> np.ndarray:
    """DESIGN.md rule: reflectance = (DN - 1000) / 10000 from baseline 04.00, else DN / 10000."""
    offset = 1000.0 if float(baseline) >= 4.0 else 0.0
    return (dn.astype(np.float64) - offset) / 10000.0


# ----------------------------------------------------------------------------- in-memory scenes


def test_simulate_scene_is_deterministic_per_seed():
    a = simulate_scene(7, shape=(96, 128), cloud_cover=0.4)
    b = simulate_scene(7, shape=(96, 128), cloud_cover=0.4)
    c = simulate_scene(8, shape=(96, 128), cloud_cover=0.4)
    for name in ("labels", "optical", "optical_clear", "sar", "scl", "cloud"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.labels, c.labels)
    assert not np.array_equal(a.sar, c.sar)


def test_scene_arrays_follow_the_interface_contract():
    s = simulate_scene(0, shape=(128, 160), cloud_cover=0.3)
    assert s.labels.shape == (128, 160) and s.labels.dtype == np.uint8
    assert s.optical.shape == s.optical_clear.shape == (len(S2_BANDS), 128, 160)
    assert s.optical.dtype == s.optical_clear.dtype == np.float32
    assert s.sar.shape == (2, 128, 160) and s.sar.dtype == np.float32
    assert s.scl.dtype == np.uint8 and s.cloud.dtype == bool
    assert s.labels.max() < NUM_CLASSES
    assert np.isfinite(s.optical).all() and np.isfinite(s.sar).all()
    assert 0 < s.optical_clear.min() and s.optical.max() <= 1.0
    assert s.sar.min() >= -50 and s.sar.max() <= 10
    assert set(np.unique(s.scl)) <= {3, 4, 5, 6, 8, 9, 10}
    assert np.array_equal(s.cloud, np.isin(s.scl, SCL_CLOUD_CLASSES))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_land_cover_has_every_class_with_spatial_structure(seed):
    s = simulate_scene(seed, shape=(256, 256), cloud_cover=0.0)
    frac = np.bincount(s.labels.ravel(), minlength=NUM_CLASSES) / s.labels.size
    assert (frac > 0.005).all(), frac
    # Spatially structured, not salt-and-pepper: most pixels share their right neighbour's class.
    same = (s.labels[:, 1:] == s.labels[:, :-1]).mean()
    assert same > 0.9


@pytest.mark.parametrize("cover", [0.0, 0.05, 0.3, 0.7, 1.0])
def test_cloud_cover_is_as_requested(cover):
    s = simulate_scene(3, shape=(160, 160), cloud_cover=cover)
    assert abs(s.cloud_true.mean() - cover) <= 0.01  # the truth; the SCL mask has Sen2Cor-like errors
    ideal = simulate_scene(3, shape=(160, 160), cloud_cover=cover, realistic=False)
    assert abs(ideal.cloud.mean() - cover) <= 0.01  # an ideal SCL flags exactly the cloudy pixels
    if cover == 0.0:
        assert np.array_equal(ideal.optical, ideal.optical_clear)


def test_cloud_cover_only_moves_the_threshold():
    """Same seed, different covers: same land, clear reflectance and SAR; nested cloud masks."""
    covers = (0.1, 0.4, 0.8)
    scenes = [simulate_scene(11, shape=(128, 128), cloud_cover=c, season=0.6) for c in covers]
    for s in scenes[1:]:
        assert np.array_equal(s.labels, scenes[0].labels)
        assert np.array_equal(s.optical_clear, scenes[0].optical_clear)
        assert np.array_equal(s.sar, scenes[0].sar)
    for thin, thick in zip(scenes, scenes[1:]):
        assert not (thin.cloud_true & ~thick.cloud_true).any()  # SCL errors may break nesting of s.cloud
        assert (thick.cloud_opacity >= thin.cloud_opacity).all()


def test_clouds_are_bright_shadows_dark_and_clear_pixels_untouched():
    s = simulate_scene(5, shape=(192, 192), cloud_cover=0.5, realistic=False)
    blue = S2_BANDS.index("B02")
    opaque = s.scl == 9
    assert opaque.sum() > 100 and (s.optical[blue][opaque] > 0.3).mean() > 0.95
    shadow = s.scl == 3
    assert shadow.sum() > 50
    assert (s.optical[:, shadow] < s.optical_clear[:, shadow]).all()
    clear = ~s.cloud
    rel = np.abs(s.optical[:, clear] - s.optical_clear[:, clear]) / s.optical_clear[:, clear]
    assert rel.max() < 0.11  # only the faint halo of a shadow (< 15 % strength, unflagged) touches them


def test_clouds_composited_in_place_equal_a_new_cube():
    """The catalog writer composites over the clear cube in place (half the memory of a large scene)."""
    land = make_landscape(4, (96, 120))
    clear = render_optical(land, 0.5, np.random.default_rng(1))
    clouds = make_clouds(np.random.default_rng(2), land.shape, 0.4)
    fresh = apply_clouds(clear, clouds, np.random.default_rng(3))
    assert fresh is not clear and not np.array_equal(fresh, clear)
    reused = apply_clouds(clear, clouds, np.random.default_rng(3), in_place=True)
    assert reused is clear and reused.dtype == np.float32
    assert np.array_equal(reused, fresh)


def test_scl_agrees_with_surface_classes_on_clear_pixels():
    s = simulate_scene(2, shape=(192, 192), cloud_cover=0.2, realistic=False)
    clear = ~s.cloud
    assert np.array_equal(s.scl[clear] == 6, s.labels[clear] == 0)  # water <-> SCL 6
    forest_clear = clear & (s.labels == 1)
    assert (s.scl[forest_clear] == 4).mean() > 0.95  # forest is vegetation


def test_task_is_learnable_but_not_trivial():
    """Per-pixel nearest-centroid classifiers: spectra help, SAR helps less; neither solves it."""
    s = simulate_scene(0, shape=(192, 192), cloud_cover=0.0)
    y = s.labels.ravel()
    rng = np.random.default_rng(0)
    idx = rng.permutation(y.size)
    train, test = idx[: y.size // 2], idx[y.size // 2 :]

    def nearest_centroid_accuracy(x: np.ndarray) -> tuple[float, np.ndarray]:
        cent = np.stack([x[train][y[train] == c].mean(0) for c in range(NUM_CLASSES)])
        pred = np.argmin(((x[test][:, None] - cent[None]) ** 2).sum(-1), axis=1)
        return float((pred == y[test]).mean()), pred

    opt_acc, _ = nearest_centroid_accuracy(s.optical_clear.reshape(12, -1).T)
    sar_acc, sar_pred = nearest_centroid_accuracy(s.sar.reshape(2, -1).T)
    assert 0.45 < opt_acc < 0.9
    assert 0.3 < sar_acc < opt_acc
    water_recall = (sar_pred[y[test] == 0] == 0).mean()
    assert water_recall > 0.5  # SAR alone finds most water (wind and steep incidence slope blur it)
    vv = s.sar[0]
    means = {c: vv[s.labels == c].mean() for c in range(NUM_CLASSES)}
    assert means[4] > means[1] > means[2] > means[0] and means[1] > means[3] > means[0]


def test_haze_brightens_the_visible_more_than_the_swir():
    """Across acquisitions the atmosphere spans clean L2A to top-of-atmosphere-like path radiance."""
    blue, swir = S2_BANDS.index("B02"), S2_BANDS.index("B12")
    excess = []
    for seed in range(12):
        s = simulate_scene(seed, shape=(64, 64), cloud_cover=0.0)
        d = (s.optical - s.optical_clear).mean(axis=(1, 2))
        excess.append((d[blue], d[swir]))
    ex = np.array(excess)
    assert (ex[:, 0] >= ex[:, 1] - 1e-3).all()
    assert ex[:, 0].min() < 0.02 and ex[:, 0].max() > 0.05  # some clean, some very hazy


def test_scl_errs_like_sen2cor():
    """Thin clouds are missed somewhere and bright surfaces are flagged as cloud somewhere."""
    missed, false_alarm = 0, 0
    for seed in range(8):
        s = simulate_scene(seed, shape=(160, 160), cloud_cover=0.4)
        missed += int((s.cloud_true & ~s.cloud).sum())
        false_alarm += int((~s.cloud_true & s.cloud).sum())
        assert (s.cloud == s.cloud_true).mean() > 0.75  # errors, not noise
    assert missed > 0 and false_alarm > 0


def test_radar_comes_from_another_date_and_either_orbit():
    scenes = [simulate_scene(seed, shape=(96, 96), cloud_cover=0.0) for seed in range(10)]
    gaps = [s.sar_gap_days for s in scenes]
    assert min(gaps) >= 0 and max(gaps) <= 12 and len(set(np.round(gaps, 3))) == len(gaps)
    assert {s.orbit_state for s in scenes} == {"ascending", "descending"}
    same_date = simulate_scene(0, shape=(96, 96), cloud_cover=0.0, sar_gap_days=0.0)
    assert same_date.sar_gap_days == 0.0 and not same_date.changed.any()


def test_harvest_between_the_dates_changes_what_one_sensor_sees():
    """A parcel harvested between the S2 and S1 dates stays cropland but its radar looks bare."""
    s = simulate_scene(4, shape=(256, 256), cloud_cover=0.0, season=0.55, sar_season=0.9)
    assert s.changed.any() and (s.labels[s.changed] == 5).all()
    late = simulate_scene(4, shape=(256, 256), cloud_cover=0.0, season=0.55, sar_season=0.56)
    vh = S1_VH = 1
    assert s.sar[S1_VH][s.changed].mean() < late.sar[vh][s.changed].mean() - 1.0


def test_speckle_is_multiplicative_gamma_with_pc_enl():
    """Linear power of a homogeneous area has coefficient of variation ~ 1/sqrt(ENL) (ENL 4.4)."""
    s = simulate_scene(1, shape=(256, 256), cloud_cover=0.0, parcel_size=200)
    lin = 10 ** (s.sar[1] / 10)
    water = s.labels == 0
    vals = lin[water]
    cv = vals.std() / vals.mean()
    assert 0.4 < cv < 0.75, cv  # 0.48 from speckle, a little more from wind roughening


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cloud_cover"):
        simulate_scene(0, shape=(32, 32), cloud_cover=1.5)
    with pytest.raises(ValueError, match="8 x 8"):
        simulate_scene(0, shape=(4, 32))


# ----------------------------------------------------------------------------- written catalog


def test_catalog_layout_and_roundtrip(sim_catalog: SimCatalog):
    cat = sim_catalog
    assert [c["id"] for c in cat.collections] == ["sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"]
    assert len(cat.items_of("sentinel-2-l2a")) == 2 * len(cat.s2_dates) == 8
    assert len(cat.items_of("esa-worldcover")) == 1
    assert all(p.is_file() for p in cat.item_collection_paths + cat.collection_paths)
    for path in cat.item_collection_paths:
        doc = json.loads(path.read_text())
        assert doc["type"] == "FeatureCollection" and doc["features"]
    loaded = SimCatalog.load(cat.root)
    assert loaded.items == cat.items and loaded.collections == cat.collections
    assert loaded.aoi_bbox_lonlat == pytest.approx(cat.aoi_bbox_lonlat)
    assert loaded.s2_dates == cat.s2_dates and loaded.tiles == cat.tiles and loaded.epsg == cat.epsg == 32633
    with pytest.raises(FileNotFoundError, match="not a catalog written by cloudlulc.simulate"):
        SimCatalog.load(cat.root / "data")


def test_everything_is_labelled_simulated(sim_catalog: SimCatalog):
    assert all(it["properties"]["cloudlulc:simulated"] is True for it in sim_catalog.items)
    assert all("SIMULATED" in c["description"] and "SIMULATED" in c["title"] for c in sim_catalog.collections)
    assert "SIMULATED" in json.loads((sim_catalog.root / "catalog.json").read_text())["description"]


@pytest.mark.parametrize(
    ("collection", "fixture", "data_assets"),
    [
        ("sentinel-2-l2a", "sentinel-2-l2a.json", S2_DATA_ASSETS),
        ("sentinel-1-rtc", "sentinel-1-rtc.json", {"vv", "vh"}),
        ("esa-worldcover", "esa-worldcover.json", {"map"}),
    ],
)
def test_items_have_the_planetary_computer_shape(sim_catalog, pc_fixtures_dir, collection, fixture, data_assets):
    real = _fixture_items(pc_fixtures_dir, fixture)
    real_props = set.intersection(*(set(it["properties"]) for it in real))
    real_assets = set.intersection(*(set(it["assets"]) for it in real))
    for it in sim_catalog.items_of(collection):
        assert it["collection"] == collection
        missing = real_props - set(it["properties"])
        assert not missing, f"{it['id']} lacks PC properties {sorted(missing)}"
        assert data_assets <= set(it["assets"]) <= real_assets
        assert set(it["stac_extensions"]) <= set().union(*(r["stac_extensions"] for r in real))
        for key in data_assets:
            ref = real[0]["assets"][key]
            assert set(it["assets"][key]) == set(ref), (key, set(it["assets"][key]) ^ set(ref))
            for field in ("type", "roles", "gsd", "raster:bands", "classification:classes"):
                if field in ref:
                    assert it["assets"][key][field] == ref[field], (key, field)
        assert Path(next(iter(it["assets"].values()))["href"]).is_absolute()


def test_s2_items_proj_fields_per_band_resolution(sim_catalog):
    n = None
    for it in sim_catalog.items_of("sentinel-2-l2a"):
        props = it["properties"]
        assert props["proj:epsg"] == sim_catalog.epsg and "proj:code" not in props
        b02, b05, b01 = (it["assets"][k] for k in ("B02", "B05", "B01"))
        n = b02["proj:shape"][0]
        assert b05["proj:shape"] == [n // 2, n // 2] and b01["proj:shape"] == [n // 6, n // 6]
        assert [a["proj:transform"][0] for a in (b02, b05, b01)] == [10.0, 20.0, 60.0]
        assert b02["proj:bbox"] == b05["proj:bbox"] == b01["proj:bbox"]
        for key in (*S2_BANDS, "SCL"):
            asset = it["assets"][key]
            with rasterio.open(asset["href"]) as ds:
                assert ds.crs.to_epsg() == sim_catalog.epsg
                assert [ds.height, ds.width] == asset["proj:shape"]
                assert list(ds.transform)[:6] == pytest.approx(asset["proj:transform"])
                assert ds.dtypes[0] == ("uint8" if key == "SCL" else "uint16") and ds.nodata == 0
    assert n is not None


def test_processing_baselines_and_dn_offset(sim_catalog):
    """Both sides of the 04.00 switch; after the DESIGN.md harmonisation stable targets agree."""
    items = sim_catalog.items_of("sentinel-2-l2a")
    baselines = {it["properties"]["s2:processing_baseline"] for it in items}
    assert any(float(b) < 4 for b in baselines) and any(float(b) >= 4 for b in baselines)
    tile = "33UYP"
    water_nir: dict[str, list[float]] = {"old": [], "new": []}
    raw_nir: dict[str, list[float]] = {"old": [], "new": []}
    for it in (i for i in items if i["properties"]["s2:mgrs_tile"] == tile):
        base = it["properties"]["s2:processing_baseline"]
        with rasterio.open(it["assets"]["B8A"]["href"]) as ds:
            nir = ds.read(1)
        with rasterio.open(it["assets"]["SCL"]["href"]) as ds:
            scl = ds.read(1)
        water = scl == 6
        if water.sum() < 20:
            continue  # a date too cloudy to see the river
        valid = nir[nir > 0]
        if float(base) >= 4:
            assert valid.min() >= 1000
        key = "new" if float(base) >= 4 else "old"
        water_nir[key].append(float(np.median(_harmonise(nir[water], base))))
        raw_nir[key].append(float(np.median(nir[water])))
    assert water_nir["old"] and water_nir["new"]
    assert abs(np.mean(water_nir["old"]) - np.mean(water_nir["new"])) < 0.03  # haze differs per date; 0.1 would not
    assert np.mean(raw_nir["new"]) - np.mean(raw_nir["old"]) > 700  # the +1000 offset, less the haze difference


def test_cloud_metadata_matches_scl_and_dates_range_from_clear_to_heavy(sim_catalog):
    by_date: dict[str, list[float]] = {}
    for it in sim_catalog.items_of("sentinel-2-l2a"):
        with rasterio.open(it["assets"]["SCL"]["href"]) as ds:
            scl = ds.read(1)
        valid = scl != 0
        expected = 100 * np.isin(scl[valid], (8, 9, 10)).mean()
        assert it["properties"]["eo:cloud_cover"] == pytest.approx(expected, abs=1e-3)
        assert it["properties"]["s2:cloud_shadow_percentage"] == pytest.approx(100 * (scl[valid] == 3).mean(), abs=1e-3)
        by_date.setdefault(it["properties"]["datetime"][:10], []).append(it["properties"]["eo:cloud_cover"])
    means = sorted(np.mean(v) for v in by_date.values())
    assert means[0] < 5 and means[-1] > 60


def test_tiles_overlap_and_the_aoi_crosses_both(sim_catalog):
    a, b = sim_catalog.tiles["33UXP"], sim_catalog.tiles["33UYP"]
    assert a[1] == b[1] and a[3] == b[3] and b[0] < a[2]  # same rows, overlapping columns
    to_utm = Transformer.from_crs(4326, sim_catalog.epsg, always_xy=True)
    aoi = Polygon(zip(*to_utm.transform(*box(*sim_catalog.aoi_bbox_lonlat).exterior.coords.xy), strict=True))
    assert aoi.intersects(box(*a)) and aoi.intersects(box(*b))
    assert not box(*a).contains(aoi) and not box(*b).contains(aoi)
    aoi_ll = box(*sim_catalog.aoi_bbox_lonlat)
    for d in sim_catalog.s2_dates:
        covering = [
            it
            for it in sim_catalog.items_of("sentinel-2-l2a")
            if it["properties"]["datetime"].startswith(d.strftime("%Y-%m-%dT%H:%M:%S"))
            and shape(it["geometry"]).intersects(aoi_ll)
        ]
        assert len(covering) == 2


def test_nodata_wedge_lies_inside_the_overlap_and_geometry_excludes_it(sim_catalog):
    first = min(sim_catalog.s2_dates).strftime("%Y%m%d")
    items = [it for it in sim_catalog.items_of("sentinel-2-l2a") if first in it["id"]]
    west = next(it for it in items if it["properties"]["s2:mgrs_tile"] == "33UXP")
    east = next(it for it in items if it["properties"]["s2:mgrs_tile"] == "33UYP")
    with rasterio.open(west["assets"]["B04"]["href"]) as ds:
        b04 = ds.read(1)
        nodata_cols = np.nonzero((b04 == 0).any(axis=0))[0]
        x_first_nodata = ds.transform.c + nodata_cols.min() * 10
    assert 0 < west["properties"]["s2:nodata_pixel_percentage"] < 20
    assert x_first_nodata >= sim_catalog.tiles["33UYP"][0]  # all nodata is covered by the east tile
    with rasterio.open(west["assets"]["SCL"]["href"]) as ds:
        assert (ds.read(1) == 0).any()
    assert shape(west["geometry"]).area < shape(east["geometry"]).area * 0.99


def test_s1_items_pair_with_every_s2_date_in_both_orbit_states(sim_catalog):
    s1 = sim_catalog.items_of("sentinel-1-rtc")
    assert {it["properties"]["sat:orbit_state"] for it in s1} == {"ascending", "descending"}
    for it in s1:
        p = it["properties"]
        assert " " in p["start_datetime"] and " " in p["end_datetime"]  # as on the PC
        assert len(p["proj:transform"]) == 9 and p["sar:polarizations"] == ["VV", "VH"]
        assert it["assets"]["vv"]["raster:bands"][0]["nodata"] == -32768
        for asset in it["assets"].values():
            data = Path(asset["href"]).read_bytes()
            assert asset["file:size"] == len(data)
            assert asset["file:checksum"] == "d50110" + hashlib.md5(data).hexdigest()  # multihash md5
        with rasterio.open(it["assets"]["vh"]["href"]) as ds:
            assert ds.dtypes[0] == "float32" and ds.nodata == -32768
            assert [ds.height, ds.width] == p["proj:shape"]
            vh = ds.read(1)
            assert (vh > 0).all() and np.median(10 * np.log10(vh)) < -10
    s1_times = list(sim_catalog.s1_dates)
    for d in sim_catalog.s2_dates:
        assert min(abs(t - d) for t in s1_times) <= timedelta(days=5)
    frames = [it for it in s1 if it["properties"]["s1:total_slices"] == "2"]
    assert len(frames) == 2 and shape(frames[0]["geometry"]).intersects(shape(frames[1]["geometry"]))


def test_worldcover_label_matches_truth(sim_catalog):
    (wc,) = sim_catalog.items_of("esa-worldcover")
    assert wc["properties"]["datetime"] is None
    assert wc["properties"]["start_datetime"] and wc["properties"]["end_datetime"]
    asset = wc["assets"]["map"]
    with rasterio.open(asset["href"]) as ds:
        assert ds.crs.to_epsg() == 4326 and ds.dtypes[0] == "uint8"
        codes = ds.read(1)
        assert set(np.unique(codes)) <= set(WORLDCOVER_TO_LULC)
        with rasterio.open(sim_catalog.truth_path) as truth_ds:
            truth = truth_ds.read(1)
            rows, cols = np.mgrid[5 : truth.shape[0] - 5 : 7, 5 : truth.shape[1] - 5 : 7]
            xs, ys = rasterio.transform.xy(truth_ds.transform, rows.ravel(), cols.ravel())
        lon, lat = Transformer.from_crs(sim_catalog.epsg, 4326, always_xy=True).transform(xs, ys)
        sampled = np.array([v[0] for v in ds.sample(zip(lon, lat))])
    inside = sampled != 0  # the EPSG:4326 raster is the lon/lat rectangle inside the UTM extent
    assert inside.mean() > 0.9
    mapped = remap_labels(sampled[inside], WORLDCOVER_TO_LULC)
    agree = (mapped == truth[rows.ravel(), cols.ravel()][inside]).mean()
    assert agree > 0.97  # nearest-neighbour reprojection moves a few boundary pixels


def test_every_cog_is_valid(sim_catalog):
    paths = [Path(a["href"]) for it in sim_catalog.items for a in it["assets"].values()] + [sim_catalog.truth_path]
    assert len(paths) > 100
    for p in paths:
        valid, errors, _ = cog_validate(str(p), quiet=True)
        assert valid, (p, errors)


def test_stac_documents_validate_offline(sim_catalog, pc_fixtures_dir):
    docs = list(sim_catalog.items) + list(sim_catalog.collections)
    docs += [json.loads(p.read_text()) for p in sim_catalog.root.glob("collections/*/items/*.json")]
    docs += [json.loads(p.read_text()) for p in sim_catalog.root.glob("collections/*/collection.json")]
    docs.append(json.loads((sim_catalog.root / "catalog.json").read_text()))
    for d in docs:
        validated = validate_stac(d)
        assert validated[0].startswith("https://schemas.stacspec.org/v1.0.0/")
        assert len(validated) == 1 + len(d.get("stac_extensions", []))
    # The vendored schemas also accept the real PC documents (so they are the right ones).
    for name in ("sentinel-2-l2a.json", "sentinel-1-rtc.json", "esa-worldcover.json"):
        for it in _fixture_items(pc_fixtures_dir, name):
            validate_stac(it)
    bad = json.loads(json.dumps(sim_catalog.items_of("sentinel-1-rtc")[0]))
    bad["properties"]["sat:orbit_state"] = "sideways"
    from cloudlulc.schemas import STACValidationError

    with pytest.raises(STACValidationError):
        validate_stac(bad)


def test_href_base_rewrites_asset_hrefs(sim_catalog, tmp_path):
    items = sim_catalog.with_href_base("http://127.0.0.1:8123/")
    for orig, new in zip(sim_catalog.items, items, strict=True):
        for key, asset in new["assets"].items():
            rel = Path(orig["assets"][key]["href"]).relative_to(sim_catalog.root).as_posix()
            assert asset["href"] == f"http://127.0.0.1:8123/{rel}"
    small = write_demo_catalog(tmp_path / "c", seed=0, tile_size=60, overlap=6, margin=6, href_base="http://h:1/cat")
    for it in json.loads(small.item_collection_paths[0].read_text())["features"]:
        for asset in it["assets"].values():
            assert asset["href"].startswith("http://h:1/cat/data/")
            assert (small.root / asset["href"].removeprefix("http://h:1/cat/")).is_file()


def test_same_seed_gives_identical_bytes(tmp_path):
    kw = dict(tile_size=60, overlap=6, margin=6, s2_acquisitions=DEFAULT_S2[:2], s1_passes=DEFAULT_S1[2:3])
    a = write_demo_catalog(tmp_path / "a", seed=3, **kw)
    b = write_demo_catalog(tmp_path / "b", seed=3, **kw)
    c = write_demo_catalog(tmp_path / "c", seed=4, **kw)
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for rel in files_a:
        da, db = (a.root / rel).read_bytes(), (b.root / rel).read_bytes()
        if rel.suffix == ".json":
            da = da.replace(str(a.root).encode(), b"ROOT")
            db = db.replace(str(b.root).encode(), b"ROOT")
        assert da == db, rel
    tif = next(r for r in files_a if r.name == "B04_10m.tif")
    assert (a.root / tif).read_bytes() != (c.root / tif).read_bytes()


def test_rewrite_removes_stale_outputs_and_foreign_dirs_are_refused(tmp_path):
    kw = dict(tile_size=60, overlap=6, margin=6, s1_passes=DEFAULT_S1[:1])
    first = write_demo_catalog(tmp_path / "cat", seed=0, s2_acquisitions=DEFAULT_S2[:2], **kw)
    dropped = first.items_of("sentinel-2-l2a")[-1]
    dropped_file = Path(dropped["assets"]["B04"]["href"])
    assert dropped_file.is_file()
    second = write_demo_catalog(tmp_path / "cat", seed=0, s2_acquisitions=DEFAULT_S2[:1], **kw)
    assert len(second.items_of("sentinel-2-l2a")) == 2
    assert not dropped_file.exists()
    assert not list(second.root.glob(f"collections/*/items/{dropped['id']}.json"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_catalog(foreign, seed=0, **kw)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_ensure_demo_catalog_reuses_a_matching_catalog(tmp_path):
    from cloudlulc.simulate import ensure_demo_catalog

    kw = dict(tile_size=60, overlap=6, margin=6)
    a = ensure_demo_catalog(tmp_path / "demo", seed=1, **kw)
    stamp = a.truth_path.stat().st_mtime_ns
    b = ensure_demo_catalog(tmp_path / "demo", seed=1, **kw)
    assert b.truth_path.stat().st_mtime_ns == stamp and b.items == a.items
    c = ensure_demo_catalog(tmp_path / "demo", seed=2, **kw)
    assert c.seed == 2 and SimCatalog.load(tmp_path / "demo").seed == 2
    # a catalog an older simulator wrote is rendered again, not reused
    manifest = tmp_path / "demo" / "simcatalog.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "simulator_version": 1}))
    stamp = c.truth_path.stat().st_mtime_ns
    d = ensure_demo_catalog(tmp_path / "demo", seed=2, **kw)
    assert d.truth_path.stat().st_mtime_ns != stamp
    assert json.loads(manifest.read_text())["simulator_version"] == SIMULATOR_VERSION


def test_cli_writes_a_catalog(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudlulc.simulate",
            str(out),
            "--seed",
            "2",
            "--tile-size",
            "60",
            "--overlap",
            "6",
            "--margin",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATED catalog written" in proc.stdout
    assert SimCatalog.load(out).seed == 2
    bad = subprocess.run(
        [sys.executable, "-m", "cloudlulc.simulate", str(tmp_path / "bad"), "--tile-size", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "multiple of 6" in bad.stderr
