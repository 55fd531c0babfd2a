"""Inputs at the edges: AOIs across the antimeridian, grids too large for one run, label products
with several releases, and weights files that are damaged or of the wrong kind.

Label searches run against a real STAC API (rustac on loopback) serving the real Planetary
Computer items of ``../shared/fixtures/pc-items``; no pixels are read.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import shapely
import shapely.geometry
from pc_fixtures import PC_FIXTURES

from cloudlulc import stac as cat
from cloudlulc.cube import ReaderTable, grid_for_aoi
from cloudlulc.cube.grid import GridTooLargeError
from cloudlulc.cube.labels import build_label_cube, select_label_version
from cloudlulc.model import demo_weights_path, from_pretrained
from cloudlulc.model.io import WeightsError, check_weights_path, load_model, read_metadata, sha256_file
from cloudlulc.stac import CatalogError, parse_aoi
from cloudlulc.stac.aoi import aoi_centre, crosses_antimeridian, fix_footprint
from cloudlulc.testing.stac_server import serve_stac

#: an AOI across ±180° written as RFC 7946 recommends: two polygons, one each side
SPLIT_AOI = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[179.9, 65.0], [180.0, 65.0], [180.0, 65.05], [179.9, 65.05], [179.9, 65.0]]],
        [[[-180.0, 65.0], [-179.9, 65.0], [-179.9, 65.05], [-180.0, 65.05], [-180.0, 65.0]]],
    ],
}


def _features(name: str) -> list[dict]:
    return json.loads((PC_FIXTURES / name).read_text())["features"]


# ------------------------------------------------------------------------------------ antimeridian
def test_an_aoi_split_at_the_antimeridian_gets_one_small_grid_on_the_antimeridian():
    aoi = parse_aoi(SPLIT_AOI)
    assert crosses_antimeridian(aoi)
    lon, lat = aoi_centre(aoi)
    assert abs(abs(lon) - 180.0) < 1e-6 and abs(lat - 65.025) < 1e-6  # not lon 0, the parts' centroid
    grid = grid_for_aoi(aoi)
    assert grid.epsg in (32601, 32660)  # the zones on either side of 180°, never zone 31
    h, w = grid.shape
    # 0.2° of longitude at 65° N is about 9.4 km; 0.05° of latitude about 5.6 km (plus UTM skew far
    # from the central meridian): some thousand pixels, not the ~7.7e11 of a globe-wide box
    assert 800 < w < 1400 and 500 < h < 900
    assert grid.footprint_lonlat().intersects(shapely.box(179.95, 65.01, 180, 65.04))
    assert grid.footprint_lonlat().intersects(shapely.box(-180, 65.01, -179.95, 65.04))
    for part in shapely.get_parts(grid.footprint_lonlat()):  # what label search sends: two strips at 180°
        minx, _, maxx, _ = part.bounds
        assert minx > 179.5 or maxx < -179.5


def test_a_grid_over_the_limit_is_refused_naming_its_size_and_the_setting():
    aoi = parse_aoi((10.0, 45.0, 10.5, 45.5))
    with pytest.raises(GridTooLargeError) as err:
        grid_for_aoi(aoi, max_pixels=1_000_000)
    msg = str(err.value)
    assert "max_grid_pixels" in msg and "1,000,000" in msg and "pixels" in msg
    assert isinstance(err.value, CatalogError)
    assert grid_for_aoi(aoi).shape[0] > 1000  # the default limit lets it through


def test_a_footprint_drawn_the_long_way_round_covers_only_its_two_strips():
    (tile,) = [f for f in _features("io-lulc-annual-v02.json") if f["id"] == "60W-2023"]
    raw = shapely.geometry.shape(tile["geometry"])
    assert raw.bounds[0] == -180 and raw.bounds[2] == 180  # as published: the whole latitude band
    fixed = fix_footprint(raw)
    assert not fixed.intersects(shapely.box(15.0, 66.0, 16.0, 67.0))  # northern Sweden is not in 60W
    assert fixed.intersects(shapely.box(179.4, 65.9, 179.6, 66.1))
    assert fixed.geom_type in ("Polygon", "MultiPolygon")
    for part in shapely.get_parts(fixed):  # each part hugs its side of 180°
        minx, _, maxx, _ = part.bounds
        assert minx > 170 or maxx < -170


@pytest.fixture(scope="module")
def io_lulc_stac(tmp_path_factory) -> str:
    """A STAC API serving the real Impact Observatory tiles 60W/60V (bbox -180..180)."""
    root = tmp_path_factory.mktemp("io-lulc")
    api = root / "api"
    api.mkdir()
    collection = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": "io-lulc-annual-v02",
        "description": "Impact Observatory annual LULC (real Planetary Computer items, no pixels)",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2017-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }
    (api / "io-lulc-annual-v02.collection.json").write_text(json.dumps(collection))
    items = {"type": "FeatureCollection", "features": _features("io-lulc-annual-v02.json")}
    (api / "io-lulc-annual-v02.items.json").write_text(json.dumps(items))
    with serve_stac(root) as url:
        yield url


def test_label_search_far_from_the_antimeridian_is_a_clear_error_not_an_index_error(io_lulc_stac):
    """The server matches the globe-spanning tiles for an AOI in Africa; the client must not."""
    client = cat.open_catalog(io_lulc_stac)
    with pytest.raises(CatalogError, match="io-lulc-annual-v02"):
        build_label_cube(client, parse_aoi((20.0, 0.0, 20.1, 0.1)), "io-lulc-annual-v02")


def test_label_search_near_the_antimeridian_picks_the_tile_that_covers_the_aoi(io_lulc_stac):
    client = cat.open_catalog(io_lulc_stac)
    aoi = parse_aoi((179.5, 66.0, 179.6, 66.05))
    labels = build_label_cube(client, aoi, "io-lulc-annual-v02", chunksize=256)  # lazy: no pixel read
    grid = grid_for_aoi(aoi)
    assert labels.shape == grid.shape and grid.epsg == 32660
    assert labels.attrs["version"] == "2023"
    (table,) = [v for v in dict(labels.__dask_graph__()).values() if isinstance(v, ReaderTable)]
    hrefs = [r.url for row in table.readers for r in row if r is not None]
    assert len(hrefs) == 1 and "60W" in hrefs[0]


# ---------------------------------------------------------------------------------- label versions
def _worldcover_releases() -> list[dict]:
    """The real v200 (2021) WorldCover tile and a v100 (2020) twin of it."""
    v200 = json.loads((PC_FIXTURES / "esa-worldcover.json").read_text())
    v100 = copy.deepcopy(v200)
    v100["id"] = v200["id"].replace("2021_v200", "2020_v100")
    v100["properties"].update(
        {
            "esa_worldcover:product_version": "1.0.0",
            "start_datetime": "2020-01-01T00:00:00Z",
            "end_datetime": "2020-12-31T23:59:59Z",
        }
    )
    for asset in v100["assets"].values():
        asset["href"] = asset["href"].replace("v200", "v100").replace("2021", "2020")
    return [v100, v200]


def test_label_releases_are_never_mixed():
    items = _worldcover_releases()
    grid = grid_for_aoi(parse_aoi((7.0, 1.0, 7.05, 1.05)))
    version, chosen = select_label_version(items, grid)
    assert version == "2.0.0" and [it["id"] for it in chosen] == [items[1]["id"]]
    version, chosen = select_label_version(items, grid, "1.0.0")
    assert version == "1.0.0" and [it["id"] for it in chosen] == [items[0]["id"]]
    with pytest.raises(CatalogError, match="3.0.0"):
        select_label_version(items, grid, "3.0.0")


def test_a_newer_release_that_leaves_the_grid_partly_uncovered_yields_to_a_complete_older_one():
    v100, v200 = _worldcover_releases()
    # the 2021 tile shrunk to its western half: the grid lies in the eastern half
    v200["geometry"] = shapely.geometry.mapping(shapely.box(6.0, 0.0, 6.5, 3.0))
    grid = grid_for_aoi(parse_aoi((6.9, 1.0, 6.95, 1.05)))
    version, chosen = select_label_version([v100, v200], grid)
    assert version == "1.0.0" and [it["id"] for it in chosen] == [v100["id"]]


# ----------------------------------------------------------------------------------------- weights
@pytest.fixture()
def demo_copy(tmp_path) -> Path:
    """A copy of the committed demo weights and their sidecar, to damage."""
    src = demo_weights_path()
    dst = tmp_path / "weights" / src.name
    dst.parent.mkdir()
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_a_damaged_safetensors_file_is_named_in_the_error(demo_copy):
    demo_copy.write_bytes(b"\x00" * 64 + demo_copy.read_bytes()[64:4096])
    sidecar = demo_copy.with_suffix(".json")
    doc = json.loads(sidecar.read_text())
    doc["sha256"] = sha256_file(demo_copy)  # as if the damage happened before the export recorded it
    sidecar.write_text(json.dumps(doc))
    with pytest.raises(WeightsError) as err:
        from_pretrained(demo_copy)
    assert str(demo_copy) in str(err.value) and "safetensors" in str(err.value)


def test_a_changed_weights_file_fails_its_checksum(demo_copy):
    data = bytearray(demo_copy.read_bytes())
    data[-1] ^= 0xFF
    demo_copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        from_pretrained(demo_copy)


def test_a_pickled_checkpoint_is_refused_as_a_pickle_not_as_missing(tmp_path):
    import torch

    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(WeightsError) as err:
        check_weights_path(pt)
    assert "pickle" in str(err.value) and str(pt) in str(err.value) and "does not exist" not in str(err.value)
    with pytest.raises(WeightsError, match="pickle"):
        load_model(pt)


def test_missing_weights_and_a_broken_sidecar_name_the_file(demo_copy, tmp_path):
    with pytest.raises(WeightsError) as err:
        load_model(tmp_path / "nowhere.safetensors")
    assert "nowhere.safetensors" in str(err.value) and "do not exist" in str(err.value)
    sidecar = demo_copy.with_suffix(".json")
    sidecar.write_text("{not json")
    with pytest.raises(WeightsError) as err:
        read_metadata(demo_copy)
    assert str(sidecar) in str(err.value) and "JSON" in str(err.value)
    sidecar.unlink()
    with pytest.raises(WeightsError) as err:
        load_model(demo_copy)
    assert str(sidecar) in str(err.value)
