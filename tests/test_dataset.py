"""cloudlulc.dataset: CloudLULC-Set style training dataset builder, readers and curation.

Everything runs on the SIMULATED catalog (cloudlulc.simulate, served by a real ``rustac serve``
through the ``stac_url`` fixture), with 32 px patches so a build takes seconds. The checks compare
the builder's output with independently rebuilt cubes, with its own GeoTIFF layout, and with a
fresh build after an injected crash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import rasterio
import shapely
import torch
import zarr

from cloudlulc import stac as cat
from cloudlulc.classes import NODATA, S2_BANDS
from cloudlulc.cube import build_cube, build_label_cube, grid_for_aoi
from cloudlulc.dataset import (
    DatasetParams,
    GeoTiffLayoutDataset,
    NoLabelCoverageError,
    NoPatchesError,
    StoreMismatchError,
    ZarrPatchDataset,
    build_dataset,
    write_geotiff_layout,
)
from cloudlulc.dataset.regions import SPLITS, Region, assign_splits, make_regions, patch_windows

pytestmark = [
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
    pytest.mark.timeout(600),
]

PATCH, STRIDE, REGION = 32, 24, 64  # stride < patch: patches overlap inside a region


def make_params(sim_catalog, stac_url: str, out: Path, **kw) -> DatasetParams:
    dates = sorted(sim_catalog.s2_dates)
    base = dict(
        aoi=list(sim_catalog.aoi_bbox_lonlat),
        start=dates[0].date().isoformat(),
        end=dates[-1].date().isoformat(),
        out=out,
        catalog_url=stac_url,
        sign=False,
        patch_size=PATCH,
        stride=STRIDE,
        region_size=REGION,
        split_fractions=(0.5, 0.25, 0.25),
        max_patches_per_level=4,
        seed=3,
    )
    base.update(kw)
    return DatasetParams(**base)


@pytest.fixture(scope="module")
def built(sim_catalog, stac_url, tmp_path_factory):
    """One full build (with the GeoTIFF layout), shared by the read-only tests of this module."""
    out = tmp_path_factory.mktemp("dataset") / "main"
    params = make_params(sim_catalog, stac_url, out, write_geotiff_layout=True)
    summary = build_dataset(params, progress=False)
    index = pd.read_parquet(out / "index.parquet")
    return params, summary, index


# ------------------------------------------------------------------------------- pure helpers
def test_regions_tile_grid_and_patches_stay_inside():
    regions = make_regions((150, 180), region_size=64, patch_size=32, stride=24)
    # 150 rows -> blocks of 64, 64, 22 (too small for a patch); 180 cols -> 64, 64, 52
    assert [r.id for r in regions] == [f"r{i:03d}c{j:03d}" for i in range(2) for j in range(3)]
    for r in regions:
        wins = patch_windows(r, 32, 24)
        assert wins
        for w in wins:
            assert r.row0 <= w.row and w.row + 32 <= r.row0 + r.nrows
            assert r.col0 <= w.col and w.col + 32 <= r.col0 + r.ncols
    buffered = patch_windows(Region("x", 0, 0, 64, 64), 32, 8, buffer=4)
    assert min(w.row for w in buffered) == 4 and max(w.row + 32 for w in buffered) <= 60


def test_split_assignment_is_seeded_complete_and_gives_every_split_a_region():
    ids = [f"r{i:03d}" for i in range(7)]
    a = assign_splits(ids, (0.7, 0.15, 0.15), seed=1)
    assert a == assign_splits(list(reversed(ids)), (0.7, 0.15, 0.15), seed=1)  # order-independent
    assert set(a) == set(ids) and set(a.values()) == set(SPLITS)
    assert sum(v == "train" for v in a.values()) == 5
    assert assign_splits(ids[:3], (0.8, 0.1, 0.1), seed=0).values() and set(
        assign_splits(ids[:3], (0.8, 0.1, 0.1), seed=0).values()
    ) == set(SPLITS)
    assert set(assign_splits(ids, (1.0, 0.0, 0.0), seed=5).values()) == {"train"}


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(stride=64), "stride"),
        (dict(region_size=16), "no patch fits"),
        (dict(cloud_levels=(0, 30, 10, 100)), "increasing"),
        (dict(split_fractions=(0.5, 0.5, 0.5)), "sum to 1"),
        (dict(start="2022-03-01", end="2022-01-01"), "after end"),
        (dict(max_nodata_fraction=1.5), "less than or equal"),
    ],
)
def test_invalid_params_are_refused_with_the_reason(bad, words, tmp_path):
    kw = dict(
        aoi=[17.6, 48.2, 17.7, 48.3], start="2022-01-01", end="2022-02-28", out=tmp_path, patch_size=32, stride=32
    )
    kw.update(bad)
    with pytest.raises(pydantic.ValidationError, match=words):
        DatasetParams(**kw)


# ------------------------------------------------------------------------------- the build
def test_build_writes_store_index_report_and_balances(built):
    params, summary, index = built
    out = Path(params.out)
    assert summary.n_patches == len(index) > 0
    assert sum(summary.patches_per_split.values()) == len(index)
    assert all(summary.patches_per_split[s] > 0 for s in SPLITS)
    assert index["patch_id"].is_unique
    assert list(index["zarr_index"]) == list(range(len(index)))
    g = zarr.open_group(str(out / "dataset.zarr"), mode="r")
    n = len(index)
    assert g["optical_cloudy"].shape == (n, 12, PATCH, PATCH) and g["optical_cloudy"].chunks == (1, 12, PATCH, PATCH)
    assert g["sar"].shape == (n, 2, PATCH, PATCH) and g["label"].dtype == np.uint8 and g["cloud"].dtype == np.uint8
    assert g.attrs["n_committed"] == n and len(g.attrs["regions_done"]) == summary.n_regions
    assert (out / "index.csv").exists() and len(pd.read_csv(out / "index.csv")) == n
    # records: cloud level matches cloud fraction, gaps within limits, provenance present
    edges = params.cloud_levels
    for rec in index.itertuples():
        lo, hi = (float(v) for v in rec.cloud_level.split("-"))
        assert lo <= rec.cloud_fraction * 100 <= hi and lo in edges and hi in edges
        assert rec.s1_s2_gap_days <= params.max_gap_days
        assert rec.s2_cloudy_ids and rec.s2_clear_ids and rec.s1_ids and rec.label_ids
        assert rec.s2_clear_ids != rec.s2_cloudy_ids
        assert rec.clear_cloud_fraction * 100 <= params.clear_max_cloud
        assert sum(getattr(rec, f"class_{k}") for k in (0, 1, 2, 3, 4, 5, 255)) == PATCH * PATCH
    # several cloud levels are present (the simulated dates range from 2 % to 85 % cloud)
    assert sum(v > 0 for v in summary.patches_per_level.values()) >= 2
    # the report
    js = json.loads((out / "summary.json").read_text())
    assert js["n_patches"] == n and js["patches_per_split"] == summary.patches_per_split
    md = (out / "report.md").read_text()
    assert "Class balance" in md and "| train |" in md
    assert (out / "cloud_levels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the dropped counts are real: the clearest date has no other clear date as its reference, and
    # the per-level cap (4 per region) removed some
    assert summary.dropped.get("no_clear_reference", 0) > 0 and summary.dropped.get("level_cap", 0) > 0
    per_region_level = index.groupby(["region_id", "cloud_level"]).size()
    assert per_region_level.max() <= params.max_patches_per_level


def test_patches_equal_the_cube_at_the_same_bounds(built, stac_url):
    """Alignment: an independently built cube, selected by the patch's *bounds*, has the same pixels."""
    params, _, index = built
    client = cat.open_catalog(stac_url, sign=False)
    aoi = cat.parse_aoi(params.aoi)
    pairs = cat.find_pairs(
        client,
        aoi,
        params.start,
        params.end,
        max_gap_days=params.max_gap_days,
        min_coverage=params.min_s1_coverage,
        allow_optical_only=True,
    )
    by_time = {p.s2.time.isoformat(): p for p in pairs}
    grid = grid_for_aoi(aoi)
    labels = build_label_cube(client, grid, collection=params.label_collection).compute()
    g = zarr.open_group(str(Path(params.out) / "dataset.zarr"), mode="r")
    # one patch per split and cloud level (plus the first row), not all, to stay fast
    picks = index.groupby(["split", "cloud_level"]).head(1).index.union([0])
    cubes: dict[str, object] = {}
    for i in picks:
        rec = index.loc[i]
        assert rec["crs"] == f"EPSG:{grid.epsg}"
        sel = dict(x=slice(rec["minx"], rec["maxx"]), y=slice(rec["maxy"], rec["miny"]))
        for key in (rec["s2_datetime"], rec["clear_datetime"]):
            if key not in cubes:
                cubes[key] = build_cube(by_time[key], grid, chunksize=256)
        target = cubes[rec["s2_datetime"]].sel(**sel)
        clear = cubes[rec["clear_datetime"]].sel(**sel)
        assert target.sizes["x"] == target.sizes["y"] == PATCH
        assert target.x.values[0] == rec["minx"] + 5 and target.y.values[0] == rec["maxy"] - 5
        j = int(rec["zarr_index"])
        np.testing.assert_array_equal(g["optical_cloudy"][j], target["optical"].values)
        np.testing.assert_array_equal(g["sar"][j], target["sar"].values)
        np.testing.assert_array_equal(g["cloud"][j], target["cloud"].values)
        np.testing.assert_array_equal(g["optical_clear"][j], clear["optical"].values)
        np.testing.assert_array_equal(g["label"][j], labels.sel(**sel).values)
        assert rec["s2_cloudy_ids"] == ";".join(by_time[rec["s2_datetime"]].s2.item_ids)
        assert rec["s1_ids"] == ";".join(it["id"] for it in by_time[rec["s2_datetime"]].s1.s1_items)


def test_no_spatial_leakage_between_splits(built):
    params, summary, index = built
    # a region belongs to exactly one split, and the summary's region lists are disjoint
    assert (index.groupby("region_id")["split"].nunique() == 1).all()
    sets = [set(summary.regions_per_split[s]) for s in SPLITS]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    boxes = {
        s: shapely.union_all(
            [shapely.box(r.minx, r.miny, r.maxx, r.maxy) for r in index[index.split == s].itertuples()]
        )
        for s in SPLITS
    }
    for a in range(3):
        for b in range(a + 1, 3):
            assert boxes[SPLITS[a]].intersection(boxes[SPLITS[b]]).area == 0.0
    # the check is meaningful: within a split, patches do overlap (stride < patch size)
    train = index[index.split == "train"].drop_duplicates(["row", "col"])
    overlaps = sum(
        shapely.box(a.minx, a.miny, a.maxx, a.maxy).intersection(shapely.box(b.minx, b.miny, b.maxx, b.maxy)).area > 0
        for a in train.itertuples()
        for b in train.itertuples()
        if a.Index < b.Index
    )
    assert overlaps > 0


def test_zarr_reader_yields_the_training_sample_dict(built):
    params, summary, index = built
    for split in SPLITS:
        ds = ZarrPatchDataset(params.out, split, return_meta=True)
        assert len(ds) == summary.patches_per_split[split]
        s = ds[0]
        assert s["optical"].shape == (12, PATCH, PATCH) and s["optical"].dtype == torch.float32
        assert s["optical_clear"].shape == (12, PATCH, PATCH) and s["sar"].shape == (2, PATCH, PATCH)
        assert s["label"].dtype == torch.int64 and s["cloud"].dtype == torch.uint8
        rec = index.set_index("patch_id").loc[s["patch_id"]]
        assert rec["split"] == split
        assert float(s["cloud_fraction"]) == pytest.approx(rec["cloud_fraction"], abs=1e-6)
        assert set(np.unique(s["label"].numpy())) <= {0, 1, 2, 3, 4, 5, NODATA}
    loader = torch.utils.data.DataLoader(ZarrPatchDataset(params.out, "train"), batch_size=4)
    batch = next(iter(loader))
    assert batch["optical"].shape[1:] == (12, PATCH, PATCH) and batch["label"].shape[1:] == (PATCH, PATCH)


def _assert_samples_equal(a: dict, b: dict, atol: float = 0.0) -> None:
    for k in ("optical", "optical_clear", "sar"):
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=atol, rtol=0, equal_nan=True, err_msg=k)
    assert torch.equal(a["label"], b["label"])


def test_geotiff_layout_round_trips_through_its_reader(built, tmp_path):
    params, summary, index = built
    root = Path(summary.geotiff_root)
    for folder in ("SAR_S1/VV", "SAR_S1/VH", "Opt_S2_cloudy", "Opt_S2_clear", "Label", "Cloud"):
        assert len(list((root / folder).glob("*.tif"))) == len(index)
    rec = index.iloc[0]
    with rasterio.open(root / "Opt_S2_cloudy" / f"{rec.patch_id}.tif") as src:
        assert src.count == 12 and src.dtypes[0] == "float32" and src.descriptions == tuple(S2_BANDS)
        assert src.crs.to_epsg() == int(rec.crs.split(":")[1])
        assert tuple(src.bounds) == pytest.approx((rec.minx, rec.miny, rec.maxx, rec.maxy))
    for split in SPLITS:
        zd = ZarrPatchDataset(params.out, split, return_meta=True)
        gd = GeoTiffLayoutDataset(root, split, return_meta=True)
        assert len(gd) == len(zd) == summary.patches_per_split[split]
        for i in range(len(zd)):
            a, b = zd[i], gd[i]
            assert a["patch_id"] == b["patch_id"]
            _assert_samples_equal(a, b)
            assert torch.equal(a["cloud"], b["cloud"]) and float(a["cloud_fraction"]) == float(b["cloud_fraction"])

    # paper-style copy: uint16 DN 0-10000, no layout.json, no Cloud/ folder, headerless CSV of file names
    dn_root = write_geotiff_layout(Path(params.out) / "dataset.zarr", index, tmp_path / "dn", optical="dn")
    (dn_root / "layout.json").unlink()
    shutil.rmtree(dn_root / "Cloud")
    test_ids = index.loc[index.split == "test", "patch_id"]
    (dn_root / "test.csv").write_text("".join(f"{pid}.tif\n" for pid in test_ids))
    with rasterio.open(dn_root / "Opt_S2_cloudy" / f"{test_ids.iloc[0]}.tif") as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 0
    gd = GeoTiffLayoutDataset(dn_root, "test")
    zd = ZarrPatchDataset(params.out, "test")
    assert len(gd) == len(zd)
    for i in range(len(zd)):
        a, b = zd[i], gd[i]
        _assert_samples_equal(a, b, atol=0.5e-4 + 1e-7)
        assert (b["cloud"] == NODATA).all()  # the published set has no cloud mask: unknown

    # other releases: 13-band L1C-ordered optical (B10 at index 10) and SAR in linear power
    for pid in test_ids:
        for folder in ("Opt_S2_cloudy", "SAR_S1/VV", "SAR_S1/VH"):
            f = dn_root / folder / f"{pid}.tif"
            with rasterio.open(f) as src:
                data, profile = src.read(), src.profile
            if folder == "Opt_S2_cloudy":
                data = np.insert(data, 10, 777, axis=0)
            else:
                data = np.where(np.isnan(data), np.nan, 10 ** (data / 10)).astype(np.float32)
            profile.update(count=data.shape[0])
            with rasterio.open(f, "w", **profile) as dst:
                dst.write(data)
    gd = GeoTiffLayoutDataset(dn_root, "test", sar_units="linear")
    for i in range(len(zd)):
        a, b = zd[i], gd[i]
        np.testing.assert_allclose(a["optical"].numpy(), b["optical"].numpy(), atol=0.5e-4 + 1e-7, equal_nan=True)
        np.testing.assert_allclose(a["sar"].numpy(), b["sar"].numpy(), atol=1e-3, equal_nan=True)


def test_resume_after_a_crash_gives_the_same_dataset(built, sim_catalog, stac_url, tmp_path):
    """Crash inside the second region (patches written, not committed), rerun: equal to the clean build."""
    params, summary, index = built
    out = tmp_path / "resumed"
    p = make_params(sim_catalog, stac_url, out)
    events: list[tuple[str, str]] = []

    class SimulatedCrash(RuntimeError):
        pass

    def crash_in_second_region(event: str, region_id: str) -> None:
        events.append((event, region_id))
        if event == "region_written" and any(e == "region_done" for e, _ in events[:-1]):
            raise SimulatedCrash(f"injected crash in {region_id}")

    with pytest.raises(SimulatedCrash):
        build_dataset(p, progress=False, hook=crash_in_second_region)
    g = zarr.open_group(str(out / "dataset.zarr"), mode="r")
    first, second = events[1][1], events[2][1]
    assert g.attrs["regions_done"] == [first]
    n_first = int((index.region_id == first).sum())
    assert g.attrs["n_committed"] == n_first
    assert g["label"].shape[0] == n_first + int((index.region_id == second).sum()) > n_first  # torn region present
    assert len(ZarrPatchDataset(out, None)) == n_first  # readers never see uncommitted rows

    resumed = build_dataset(p, progress=False)
    assert resumed.regions_skipped_on_resume == 1
    assert resumed.n_patches == summary.n_patches and resumed.dropped == summary.dropped
    again = pd.read_parquet(out / "index.parquet")
    pd.testing.assert_frame_equal(again, index)
    g = zarr.open_group(str(out / "dataset.zarr"), mode="r")
    ref = zarr.open_group(str(Path(params.out) / "dataset.zarr"), mode="r")
    for name in ("optical_cloudy", "optical_clear", "sar", "label", "cloud", "split"):
        assert g[name].shape == ref[name].shape
        np.testing.assert_array_equal(g[name][:], ref[name][:], err_msg=name)
    chunk_rows = sorted(int(c.name) for c in (out / "dataset.zarr" / "label" / "c").iterdir())
    assert chunk_rows == list(range(len(index)))  # one chunk per patch, no stale duplicates
    # a third run has nothing left to do and changes nothing
    third = build_dataset(p, progress=False)
    assert third.regions_skipped_on_resume == third.n_regions and third.n_patches == len(index)


# ------------------------------------------------------------------------------- bad inputs
def test_no_label_coverage_is_a_clear_error(sim_catalog, stac_url, tmp_path):
    with pytest.raises(NoLabelCoverageError, match="io-lulc-annual-v02"):
        build_dataset(
            make_params(sim_catalog, stac_url, tmp_path / "a", label_collection="io-lulc-annual-v02"), progress=False
        )
    far = [10.0, 10.0, 10.02, 10.02]  # no label item there
    with pytest.raises(NoLabelCoverageError, match="No label coverage for the AOI"):
        build_dataset(make_params(sim_catalog, stac_url, tmp_path / "b", aoi=far), progress=False)


def test_zero_patches_names_the_filter_that_removed_them(sim_catalog, stac_url, tmp_path):
    """Also runs on a distributed client (the regions' cloud masks are computed there)."""
    from distributed import Client, LocalCluster

    # Sentinel-1 passes are 1-3 days off the Sentinel-2 dates: a 0.5-day window pairs none of them
    p = make_params(sim_catalog, stac_url, tmp_path / "z", max_gap_days=0.5)
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as lc,
        Client(lc) as client,
    ):
        with pytest.raises(NoPatchesError, match="missing_s1") as ei:
            build_dataset(p, client=client, progress=False)
    assert ei.value.dropped["missing_s1"] > 0
    assert "max_gap_days" in str(ei.value)


def test_resuming_a_store_built_with_other_parameters_is_refused(built, sim_catalog, stac_url):
    params, _, index = built
    before = (Path(params.out) / "index.parquet").read_bytes()
    with pytest.raises(StoreMismatchError, match="overwrite=True"):
        build_dataset(make_params(sim_catalog, stac_url, params.out, seed=99), progress=False)
    assert (Path(params.out) / "index.parquet").read_bytes() == before


def test_store_int16_encoding_rollback_and_commit(tmp_path):
    """The store on its own: int16 reflectance round trip, torn rows cut away with their chunk files."""
    from cloudlulc.dataset.store import OPTICAL_INT16_NODATA, PatchStore, decode_optical, encode_optical

    rng = np.random.default_rng(0)
    refl = rng.uniform(-0.05, 1.2, (3, 12, 8, 8)).astype(np.float32)
    refl[0, 2, 1, 1] = np.nan
    q = encode_optical(refl, "int16")
    assert q.dtype == np.int16 and q[0, 2, 1, 1] == OPTICAL_INT16_NODATA
    back = decode_optical(q)
    assert np.isnan(back[0, 2, 1, 1])
    np.testing.assert_allclose(back, refl, atol=0.5e-4 + 1e-7, equal_nan=True)

    def batch(k: int, seed: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng(seed)
        return {
            "optical_cloudy": r.uniform(0, 1, (k, 12, 8, 8)).astype(np.float32),
            "optical_clear": r.uniform(0, 1, (k, 12, 8, 8)).astype(np.float32),
            "sar": r.uniform(-25, 0, (k, 2, 8, 8)).astype(np.float32),
            "label": r.integers(0, 6, (k, 8, 8)).astype(np.uint8),
            "cloud": r.integers(0, 2, (k, 8, 8)).astype(np.uint8),
        }

    path = tmp_path / "s.zarr"
    store = PatchStore.open_or_create(path, patch_size=8, optical_dtype="int16", fingerprint="f1", attrs={})
    b1 = batch(2, 1)
    assert store.append(b1, split_code=0) == (0, 2)
    store.commit("r0", {"n_patches": 2})
    store.append(batch(3, 2), split_code=1)  # a region that crashes before its commit
    again = PatchStore.open_or_create(path, patch_size=8, optical_dtype="int16", fingerprint="f1", attrs={})
    assert again.n_rows == 5 and again.n_committed == 2
    assert again.rollback() == 3 and again.n_rows == 2
    assert sorted(int(c.name) for c in (path / "label" / "c").iterdir()) == [0, 1]
    ds = ZarrPatchDataset(path, "train")
    assert len(ds) == 2 and len(ZarrPatchDataset(path, "val")) == 0
    np.testing.assert_allclose(ds[1]["optical"].numpy(), b1["optical_cloudy"][1], atol=0.5e-4 + 1e-7)
    assert torch.equal(ds[0]["label"], torch.from_numpy(b1["label"][0].astype(np.int64)))
    with pytest.raises(StoreMismatchError):
        PatchStore.open_or_create(path, patch_size=8, optical_dtype="int16", fingerprint="other", attrs={})


def test_training_code_reads_the_built_dataset(built, tmp_path):
    """The contract with cloudlulc.train: a short real training run on ZarrPatchDataset splits."""
    from cloudlulc.training import TrainConfig, train

    params, summary, _ = built
    torch.set_num_threads(1)
    cfg = TrainConfig(
        model="cloudlulc-net-tiny",
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        device="cpu",
        threads=1,
        out_dir=tmp_path / "run",
        progress=False,
        warmup_steps=1,
    )
    result = train(
        cfg, train_dataset=ZarrPatchDataset(params.out, "train"), val_dataset=ZarrPatchDataset(params.out, "val")
    )
    rec = result.history[-1]
    assert rec["step"] == 2 and np.isfinite(rec["train"]["total"])
    assert "val" in rec and rec["val"]  # evaluated on the val split through the same reader


def test_official_split_tables_and_grd_sigma0_are_read(built, tmp_path):
    """The published layout: ``split/<split>.csv`` with columns id, VH, VV, optical, label naming the
    files (here in other folders than ours), GRD sigma0 converted to gamma0 like the pipeline's RTC."""
    from cloudlulc.dataset.sar import sigma0_to_gamma0_db

    params, summary, index = built
    src = Path(summary.geotiff_root)
    root = tmp_path / "official"
    test_ids = list(index.loc[index.split == "test", "patch_id"].astype(str))
    rows = []
    for pid in test_ids:
        for folder, sub in (("SAR_S1/VH", "s1"), ("SAR_S1/VV", "s1"), ("Opt_S2_cloudy", "s2"), ("Label", "lc")):
            dst = root / sub / f"{pid}_{folder.split('/')[-1]}.tif"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if folder.startswith("SAR"):  # the published set is GRD: sigma0 = gamma0 * cos(37 deg)
                with rasterio.open(src / folder / f"{pid}.tif") as s, rasterio.open(dst, "w", **s.profile) as d:
                    d.write(s.read() + np.float32(10 * np.log10(np.cos(np.deg2rad(37.0)))))
            else:
                shutil.copy(src / folder / f"{pid}.tif", dst)
        rows.append(
            {
                "id": pid,
                "VH": f"s1/{pid}_VH.tif",
                "VV": f"s1/{pid}_VV.tif",
                "optical": f"s2/{pid}_Opt_S2_cloudy.tif",
                "label": f"lc/{pid}_Label.tif",
            }
        )
    (root / "split").mkdir()
    pd.DataFrame(rows).to_csv(root / "split" / "test.csv", index=False)
    gd = GeoTiffLayoutDataset(root, "test", sar_backscatter="sigma0")
    zd = ZarrPatchDataset(params.out, "test")
    assert len(gd) == len(zd) == len(test_ids)
    for i in range(len(zd)):
        a, b = zd[i], gd[i]
        np.testing.assert_allclose(a["optical"].numpy(), b["optical"].numpy(), equal_nan=True)
        np.testing.assert_allclose(a["sar"].numpy(), b["sar"].numpy(), atol=1e-4, equal_nan=True)
        assert torch.equal(a["label"], b["label"])
        assert torch.isnan(b["optical_clear"]).all()  # no clear reference in the published layout
    assert sigma0_to_gamma0_db(np.array([-10.0]), 37.0)[0] == pytest.approx(
        -10.0 - 10 * np.log10(np.cos(np.deg2rad(37.0))), abs=1e-5
    )
    with pytest.raises(Exception, match="id, VH, VV, optical, label|lacks columns"):
        pd.DataFrame({"id": test_ids}).to_csv(root / "split" / "val.csv", index=False)
        GeoTiffLayoutDataset(root, "val")
