"""The ``cloudlulc`` command and the outputs other tools read: a map through the CLI against a real
STAC API (rustac over the SIMULATED catalog), a COG with class names, STAC items that validate,
a store that opens with its CRS in plain xarray and converts to netCDF. No mocks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
import xarray as xr

from cloudlulc.classes import CLASSES
from cloudlulc.schemas import SCHEMA_DIR, validate_stac
from flows.demo import demo_aoi_and_time

FAST_ENV = {
    "CLOUDLULC_DEVICE": "cpu",
    "CLOUDLULC_TILE": "64",
    "CLOUDLULC_OVERLAP": "16",
    "CLOUDLULC_CHUNK_SIZE": "64",
}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The installed console script (what ``pip install`` puts on PATH), else ``python -m cloudlulc.cli``."""
    script = Path(sys.executable).with_name("cloudlulc")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "cloudlulc.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **FAST_ENV, **(env or {})}
    )


def test_help_lists_every_command_and_each_has_help():
    out = cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("map", "search", "export", "settings", "demo", "dataset", "train", "evaluate"):
        assert command in out.stdout
    for command in ("map", "search", "export", "settings", "dataset"):
        sub = cli(command, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, (command, sub.stderr)
    assert "--epochs" in cli("train", "--help").stdout  # passed on to python -m cloudlulc.training


def test_settings_lists_every_variable_with_its_default_and_meaning():
    out = cli("settings", "--json", env={"CLOUDLULC_MAX_S1_GAP_DAYS": "7"})
    rows = {r["variable"]: r for r in json.loads(out.stdout)}
    assert rows["CLOUDLULC_MAX_S1_GAP_DAYS"]["value"] == 7 and rows["CLOUDLULC_MAX_S1_GAP_DAYS"]["default"] == 12
    assert rows["CLOUDLULC_MAX_CLOUD_COVER"]["default"] == 100
    assert all(r["meaning"] for r in rows.values())
    secret = cli("settings", "--json", env={"CLOUDLULC_CATALOG_URL": "https://user:pw@stac.example.org/api"})
    assert "pw" not in secret.stdout and "stac.example.org" in secret.stdout


def test_user_errors_are_one_line_without_a_traceback(tmp_path):
    bad = cli("map", "--aoi", "1,2,3", "--time", "2022-01-16", "--output", str(tmp_path / "x.zarr"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "4 numbers" in bad.stderr
    missing = cli("export", str(tmp_path / "none.zarr"), "--time", "2022-01-16", "--out", str(tmp_path / "x.tif"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "none.zarr" in missing.stderr
    debug = cli(
        "--debug", "export", str(tmp_path / "none.zarr"), "--time", "2022-01-16", "--out", str(tmp_path / "x.tif")
    )
    assert "Traceback" in debug.stderr


@pytest.fixture(scope="module")
def mapped(sim_catalog, stac_url, tmp_path_factory):
    """``cloudlulc map`` over the demo AOI for 2022-01-16, with a COG, through the CLI."""
    out_dir = tmp_path_factory.mktemp("cli")
    aoi, _ = demo_aoi_and_time(sim_catalog, half_side_m=200)
    store = out_dir / "demo.zarr"
    run = cli("map", "--aoi", aoi, "--time", "2022-01-16", "--output", str(store), "--catalog-url", stac_url, "--cog")
    assert run.returncode == 0, run.stderr
    return store, aoi, run


def test_map_prints_a_short_table_and_writes_store_quicklook_cog_and_stac(mapped):
    store, _, run = mapped
    assert "2022-01-16" in run.stdout and "fused" in run.stdout and len(run.stdout.splitlines()) < 20
    assert store.is_dir()
    assert list((store.parent / "quicklooks").glob("*.png"))
    (cog,) = list((store.parent / "cog").glob("*.tif"))
    with rasterio.open(cog) as src:
        assert src.colormap(1)[CLASSES[0].value][:3] != (0, 0, 0) and src.nodata == 255
    assert (store.parent / "demo.stac" / "collection.json").exists()


def test_search_is_a_dry_run_listing_acquisitions_and_pairs(sim_catalog, stac_url, tmp_path):
    aoi, _ = demo_aoi_and_time(sim_catalog, half_side_m=200)
    out = cli("search", "--aoi", aoi, "--time", "2022-01-01/2022-02-28", "--catalog-url", stac_url, "--json")
    rows = json.loads(out.stdout)
    assert [r["time"][:10] for r in rows] == [f"{d:%Y-%m-%d}" for d in sorted(sim_catalog.s2_dates)]
    assert all(r["s1"] is not None and r["gap_days"] <= 12 for r in rows)
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_export_a_day_as_a_cog_with_class_names(mapped, tmp_path):
    store, _, _ = mapped
    out = cli("export", str(store), "--time", "2022-01-16", "--format", "cog", "--out", str(tmp_path / "x.tif"))
    assert out.returncode == 0, out.stderr
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(tmp_path / "x.tif", quiet=True)[0]
    aux = ElementTree.parse(tmp_path / "x.tif.aux.xml").getroot()
    names = [c.text or "" for c in aux.iter("Category")]
    assert names[: len(CLASSES)] == [c.name for c in CLASSES] and len(names) == 256
    rows = [[f.text for f in row] for row in aux.iter("Row")]
    assert [r[1] for r in rows] == [c.name for c in CLASSES]
    png = cli("export", str(store), "--time", "2022-01-16", "--format", "png", "--out", str(tmp_path / "q.png"))
    assert png.returncode == 0 and (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    none = cli("export", str(store), "--time", "2022-01-17", "--format", "cog", "--out", str(tmp_path / "y.tif"))
    assert none.returncode == 2 and "2022-01-16" in none.stderr  # names the slices there are


def test_the_store_opens_with_its_crs_and_converts_to_netcdf(mapped, tmp_path):
    store, _, _ = mapped
    import rioxarray  # noqa: F401  (the .rio accessor)

    ds = xr.open_zarr(store)  # plain: no decode_coords, no consolidated flag
    assert "spatial_ref" in ds.coords
    assert ds.rio.crs is not None and ds.rio.crs.to_epsg() == 32633
    assert {"lulc", "confidence", "optical_reliability", "cloud", "input_quality"} <= set(ds.data_vars)
    raw = xr.open_zarr(store, mask_and_scale=False)
    assert raw["lulc"].dtype == np.uint8  # class codes as stored (255: nodata)
    ds.to_netcdf(tmp_path / "x.nc")
    back = xr.open_dataset(tmp_path / "x.nc", decode_coords="all")
    assert back.rio.crs.to_epsg() == 32633 and json.loads(back.attrs["provenance"])


def test_stac_items_validate_and_link_their_sources(mapped, stac_url):
    store, _, _ = mapped
    stac_dir = store.parent / "demo.stac"
    collection = json.loads((stac_dir / "collection.json").read_text())
    (item_path,) = list((stac_dir / "items").glob("*.json"))
    item = json.loads(item_path.read_text())
    validate_stac(collection)
    validate_stac(item)
    from stac_validator.validate import StacValidate

    schema_map = {
        f"https://stac-extensions.github.io/{p.relative_to(SCHEMA_DIR).as_posix()}": str(p)
        for p in SCHEMA_DIR.rglob("schema.json")
        if not p.relative_to(SCHEMA_DIR).as_posix().startswith("stac-spec/")
    }
    for p in (SCHEMA_DIR / "stac-spec" / "v1.0.0").rglob("*.json"):
        schema_map[
            f"https://schemas.stacspec.org/v1.0.0/{p.relative_to(SCHEMA_DIR / 'stac-spec' / 'v1.0.0').as_posix()}"
        ] = str(p)
    for path in (stac_dir / "collection.json", item_path):
        validator = StacValidate(str(path), extensions=True, schema_map=schema_map)
        assert validator.run(), validator.message
    assert item["properties"]["datetime"].startswith("2022-01-16")
    assert [c["name"] for c in item["properties"]["classification:classes"]] == [c.name for c in CLASSES]
    sources = [ln["href"] for ln in item["links"] if ln["rel"] == "derived_from"]
    assert any("/collections/sentinel-2-l2a/items/" in h for h in sources)
    assert any("/collections/sentinel-1-rtc/items/" in h for h in sources)
    for key in ("data", "lulc", "thumbnail"):
        href = (item_path.parent / item["assets"][key]["href"]).resolve()
        assert href.exists(), key
    assert item["assets"]["lulc"]["file:checksum"].startswith("1220")


def test_dataset_refuses_an_output_named_like_a_store(tmp_path):
    out = cli(
        "dataset",
        "--aoi",
        "16.9,48.1,17.0,48.2",
        "--start",
        "2022-01-01",
        "--end",
        "2022-02-01",
        "--out",
        str(tmp_path / "set.zarr"),
    )
    assert out.returncode == 2 and "directory" in out.stderr and not (tmp_path / "set.zarr").exists()


def test_console_script_is_installed():
    assert shutil.which("cloudlulc", path=str(Path(sys.executable).parent)) is not None


def test_the_readme_settings_table_is_the_generated_one():
    """The README's settings table is `cloudlulc settings --markdown`: regenerate it when a setting changes."""
    import re

    from cloudlulc.cli.info import settings_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert table is not None and table.group(1) == settings_markdown()
