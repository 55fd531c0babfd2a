"""cloudlulc.catalog on real Planetary Computer metadata (../shared/fixtures/pc-items) and real HTTP servers.

The fixture items are the JSON the PC STAC API publishes; their assets are not reachable here, so
these tests stay at the metadata level. Searches against a served catalog are in test_cube.py and
test_pgstac.py.
"""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import shapely
from pc_fixtures import PC_FIXTURES

from cloudlulc import stac as cat
from cloudlulc.stac import (
    Acquisition,
    AoiError,
    NoSentinel1Error,
    Pair,
    StacApiError,
    group_acquisitions,
    item_datetime,
    normalize_item,
    parse_aoi,
    select_s1,
    unsigned_href,
)
from cloudlulc.stac.items import EARTH_SEARCH_S2_KEYS
from cloudlulc.times import parse_datetime

FIXTURES = PC_FIXTURES

# An AOI inside S1 slice 29 of the fixture pass (Libya, EPSG:32633) and one across slices 29/30.
AOI_S1_ONE_FRAME = (15.0, 31.5, 15.1, 31.6)
AOI_S1_TWO_FRAMES = (15.0, 30.7, 15.1, 30.8)
FAKE_TOKEN = "st=2030-01-01T00%3A00%3A00Z&se=2030-01-01T01%3A00%3A00Z&sp=rl&sv=2021-06-08&sr=c&sig=SECRETSIGNATURE"


def load(name: str) -> list[dict]:
    data = json.loads((FIXTURES / name).read_text())
    return data["features"] if data.get("type") == "FeatureCollection" else [data]


def all_fixture_items() -> list[tuple[str, dict]]:
    return [
        (name, it)
        for name in ("sentinel-2-l2a.json", "sentinel-1-rtc.json", "esa-worldcover.json", "io-lulc-annual-v02.json")
        for it in load(name)
    ]


def fake_signer(href: str) -> str:
    return f"{href}?{FAKE_TOKEN}" if href.startswith("https://") and "blob.core.windows.net" in href else href


# ------------------------------------------------------------------------------------------- AOI
def test_parse_aoi_accepts_every_documented_form(tmp_path):
    box = (15.0, 31.5, 15.1, 31.6)
    expected = shapely.box(*box)
    geom = shapely.geometry.mapping(expected)
    forms = [
        box,
        list(box),
        "15.0,31.5,15.1,31.6",
        geom,
        {"type": "Feature", "properties": {}, "geometry": geom},
        {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": geom}]},
        json.dumps(geom),
        expected,
    ]
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": geom}]})
    )
    forms += [path, str(path)]
    for form in forms:
        got = parse_aoi(form)
        assert got.equals(expected), form


def test_parse_aoi_reprojects_vector_files(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = tr.transform(15.0, 31.5)
    x1, y1 = tr.transform(15.1, 31.6)
    path = tmp_path / "aoi.gpkg"
    pyogrio.raw.write(
        path,
        geometry=np.array([shapely.to_wkb(shapely.box(x0, y0, x1, y1))], dtype=object),
        field_data=[np.array([1])],
        fields=["id"],
        geometry_type="Polygon",
        crs="EPSG:3857",
        driver="GPKG",
    )
    got = parse_aoi(path)
    np.testing.assert_allclose(got.bounds, (15.0, 31.5, 15.1, 31.6), atol=1e-9)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"type": "Point", "coordinates": [15, 31]}, "no area"),
        ((15.1, 31.5, 15.0, 31.6), "minx < maxx"),
        ((0, 0, 10, 10), "km²"),  # ~1.2e6 km²
        ("not an aoi", "Cannot parse"),
        ((200, 0, 201, 1), "outside lon/lat"),
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ("/nonexistent/aoi.geojson", "does not exist"),
    ],
)
def test_parse_aoi_rejects_with_actionable_message(bad, fragment):
    with pytest.raises(AoiError, match=fragment):
        parse_aoi(bad)


# ----------------------------------------------------------------------------------------- items
@pytest.mark.parametrize("name,item", all_fixture_items(), ids=lambda v: v if isinstance(v, str) else v["id"])
def test_every_fixture_item_normalises(name, item):
    norm = normalize_item(item)
    props = norm["properties"]
    assert isinstance(props["proj:epsg"], int)
    tr = props.get("proj:transform")
    assert tr is None or len(tr) == 6  # the S1 RTC 9-number transform is cut to the affine terms
    for asset in norm["assets"].values():
        if "proj:transform" in asset:
            assert len(asset["proj:transform"]) == 6
    t = item_datetime(norm)
    assert t.tzinfo is not None
    assert item == json.loads(json.dumps(item)), "normalize_item must not mutate its input"


def test_s1_space_separated_datetimes_and_worldcover_null_datetime():
    s1 = load("sentinel-1-rtc.json")[0]
    assert " " in s1["properties"]["start_datetime"]
    start = parse_datetime(s1["properties"]["start_datetime"])
    assert start == datetime(2024, 4, 19, 4, 59, 4, 220006, tzinfo=UTC)
    wc = load("esa-worldcover.json")[0]
    assert wc["properties"]["datetime"] is None
    mid = item_datetime(wc)
    assert datetime(2021, 6, 1, tzinfo=UTC) < mid < datetime(2021, 8, 1, tzinfo=UTC)
    io = load("io-lulc-annual-v02.json")
    assert all(item_datetime(it).year == 2023 for it in io)


def test_pystac_proj_code_rewrite_is_undone():
    """pystac 1.15 migrates proj:epsg to proj:code; stackstac 0.5.1 needs proj:epsg back."""
    import pystac

    raw = load("sentinel-2-l2a.json")[0]
    migrated = pystac.Item.from_dict(copy.deepcopy(raw), migrate=True).to_dict(transform_hrefs=False)
    if "proj:epsg" not in migrated["properties"]:
        assert migrated["properties"]["proj:code"] == "EPSG:32647"
    assert normalize_item(migrated)["properties"]["proj:epsg"] == 32647


def test_earth_search_asset_keys_map_to_band_names():
    raw = load("sentinel-2-l2a.json")[0]
    inverse = {v: k for k, v in EARTH_SEARCH_S2_KEYS.items()}
    es = copy.deepcopy(raw)
    es["assets"] = {inverse.get(k, k.lower()): v for k, v in raw["assets"].items()}
    es["properties"].pop("proj:epsg")
    es["properties"]["proj:code"] = "EPSG:32647"
    norm = normalize_item(es)
    from cloudlulc.classes import S2_BANDS

    assert set(S2_BANDS) | {"SCL"} <= set(norm["assets"])
    assert norm["assets"]["B8A"]["href"] == raw["assets"]["B8A"]["href"]
    assert norm["properties"]["proj:epsg"] == 32647


def test_sentinel2_fixture_items_group_into_acquisitions():
    items = load("sentinel-2-l2a.json")
    acqs = group_acquisitions(items, (92.0, 80.0, 98.0, 83.0))
    assert [a.date.isoformat() for a in acqs] == ["2019-06-29", "2024-04-19"]
    old, new = acqs
    assert old.processing_baselines == ("02.12",) and new.processing_baselines == ("05.10",)
    assert len(new.items) == 3 and new.relative_orbit == 122 and new.platform == "Sentinel-2B"
    clouds = [it["properties"]["eo:cloud_cover"] for it in new.items]
    assert clouds == sorted(clouds), "least cloudy tile first (mosaic keeps the first valid pixel)"
    assert 0 < new.coverage < 1  # the three tiles cover part of that big box
    assert old.coverage == 0.0  # the Alaska tile does not touch the Arctic box
    d = new.as_dict()
    assert set(d["hrefs"][new.item_ids[0]]) >= {"B01", "B8A", "B12", "SCL"}
    json.dumps(d)


# --------------------------------------------------------------------------------------- pairing
def _acq_at(when: datetime) -> Acquisition:
    item = load("sentinel-2-l2a.json")[0]
    return Acquisition(
        time=when,
        platform="Sentinel-2B",
        relative_orbit=122,
        items=[item],
        cloud_cover=0.2,
        coverage=1.0,
        processing_baselines=("05.10",),
    )


S1_PASS_TIME = datetime(2024, 4, 19, 4, 59, tzinfo=UTC)


def test_select_s1_picks_the_pass_and_mosaics_its_frames(caplog):
    s1 = load("sentinel-1-rtc.json")
    acq = _acq_at(S1_PASS_TIME + timedelta(days=2, hours=5))
    with caplog.at_level("INFO", logger="cloudlulc.stac"):
        one = select_s1(acq, s1, AOI_S1_ONE_FRAME, 12)
    assert [it["properties"]["s1:slice_number"] for it in one.s1_items] == ["29"]
    assert one.orbit_state == "descending" and one.relative_orbit == 51
    assert one.coverage == pytest.approx(1.0)
    assert 2.0 < one.gap_days < 2.5
    assert "Paired Sentinel-2" in caplog.text and f"gap {one.gap_days:.1f} days" in caplog.text
    two = select_s1(acq, s1, AOI_S1_TWO_FRAMES, 12)
    assert sorted(it["properties"]["s1:slice_number"] for it in two.s1_items) == ["29", "30"]
    assert two.coverage == pytest.approx(1.0, abs=0.01)  # the real frames leave a sliver between them
    d = two.as_dict()
    assert d["orbit_state"] == "descending" and len(d["s1_item_ids"]) == 2
    json.dumps(d)


def test_select_s1_prefers_coverage_on_day_ties_and_nearer_otherwise():
    s1 = load("sentinel-1-rtc.json")
    t = S1_PASS_TIME + timedelta(days=2, hours=5)  # real pass: 2.2 days before
    aoi = AOI_S1_TWO_FRAMES

    def other_pass(offset_days: float) -> list[dict]:
        """A second (ascending) pass after t made of slice 30 only: it covers part of the AOI."""
        frame = copy.deepcopy(next(it for it in s1 if it["properties"]["s1:slice_number"] == "30"))
        when = t + timedelta(days=offset_days)
        frame["id"] += "-other"
        frame["properties"].update(
            {"datetime": when.isoformat(), "sat:orbit_state": "ascending", "sat:relative_orbit": 117}
        )
        frame["properties"].pop("start_datetime")
        frame["properties"].pop("end_datetime")
        return [frame]

    partial = other_pass(1.9)
    cov = cat.aoi_coverage(parse_aoi(aoi), [partial[0]["geometry"]])
    assert 0.2 < cov < 0.95
    tie = select_s1(_acq_at(t), s1 + partial, aoi, 12, min_coverage=0.2)
    assert tie.orbit_state == "descending", "same whole-day gap: the pass covering more wins"
    assert tie.candidates == 2
    nearer = select_s1(_acq_at(t), s1 + other_pass(0.3), aoi, 12, min_coverage=0.2)
    assert nearer.orbit_state == "ascending" and nearer.gap_days == pytest.approx(0.3)
    # With the default min_coverage the partial pass does not count as covering the AOI.
    strict = select_s1(_acq_at(t), s1 + other_pass(0.3), aoi, 12)
    assert strict.orbit_state == "descending"


def test_no_sentinel1_within_gap_names_the_nearest_pass():
    s1 = load("sentinel-1-rtc.json")
    acq = _acq_at(S1_PASS_TIME + timedelta(days=5))
    with pytest.raises(NoSentinel1Error) as err:
        select_s1(acq, [], AOI_S1_ONE_FRAME, 3, wider_items=s1)
    e = err.value
    assert e.nearest_date.isoformat() == "2024-04-19"
    assert e.nearest_gap_days == pytest.approx(5.0, abs=0.01)
    assert "2024-04-19" in str(e) and "gap 5.0 days" in str(e) and "allow_optical_only" in str(e)
    with pytest.raises(NoSentinel1Error, match="no Sentinel-1 pass intersecting"):
        select_s1(acq, [], AOI_S1_ONE_FRAME, 3)


# -------------------------------------------------------------------------------------- tokens
def test_unsigned_href_and_token_helpers():
    href = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/a/B02_10m.tif"
    signed = f"{href}?{FAKE_TOKEN}"
    assert unsigned_href(signed) == href
    assert unsigned_href(href) == href
    tilejson = "https://planetarycomputer.microsoft.com/api/data/v1/item/tilejson.json?collection=x&item=y"
    assert unsigned_href(tilejson) == tilejson  # not a token
    assert cat.token_expiry(signed) == datetime(2030, 1, 1, 1, tzinfo=UTC)
    assert cat.token_expiry(href) is None
    assert "SECRET" not in cat.redact(f"Error opening '{signed}': 404")


def test_resign_items_replaces_tokens_and_provenance_never_shows_them():
    s2 = load("sentinel-2-l2a.json")
    signed = cat.resign_items(s2[:1], signer=fake_signer)
    assert signed[0]["assets"]["B02"]["href"].endswith(FAKE_TOKEN)
    assert "sig=" not in s2[0]["assets"]["B02"]["href"], "input items are not modified"
    # An expiring token is detected and replaced (not appended to) on re-signing.
    soon = (datetime.now(UTC) + timedelta(minutes=3)).strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ")
    expiring = copy.deepcopy(signed)
    expiring[0]["assets"]["B02"]["href"] = f"{unsigned_href(signed[0]['assets']['B02']['href'])}?se={soon}&sig=OLD"
    assert cat.items_need_resign(expiring) and not cat.items_need_resign(signed)
    fresh = cat.resign_items(expiring, signer=fake_signer)
    assert fresh[0]["assets"]["B02"]["href"].count("?") == 1 and "OLD" not in fresh[0]["assets"]["B02"]["href"]

    acq = group_acquisitions(signed, (92.0, 80.0, 98.0, 83.0))[0]
    s1 = cat.resign_items(load("sentinel-1-rtc.json"), signer=fake_signer)
    pairing = select_s1(_acq_at(S1_PASS_TIME + timedelta(days=1)), s1, AOI_S1_ONE_FRAME, 12)
    pair = Pair(s2=acq, s1=pairing, aoi=parse_aoi(AOI_S1_ONE_FRAME))
    text = json.dumps(pair.as_dict())
    assert "SECRET" not in text and "sig=" not in text
    assert "blob.core.windows.net" in text  # hrefs are there, unsigned
    re_signed = cat.resign_pair(pair, signer=fake_signer)
    assert re_signed.s1.s1_items[0]["assets"]["vv"]["href"].count("?") == 1
    assert re_signed.s2.time == pair.s2.time and re_signed.s1.gap_days == pair.s1.gap_days


# ------------------------------------------------------------------------------------ STAC errors
class _Always503(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_open_catalog_retries_5xx_then_names_the_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Always503)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/stac"
    try:
        with pytest.raises(StacApiError) as err:
            cat.open_catalog(url, max_retries=2, backoff_factor=0.01)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert url in str(err.value) and err.value.url == url
    assert _Always503.hits == 3  # first try + 2 retries


def test_open_catalog_unreachable_names_the_url():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    url = f"http://127.0.0.1:{port}/api/stac/v1"
    with pytest.raises(StacApiError, match=f"STAC API {url} failed"):
        cat.open_catalog(url, max_retries=1, backoff_factor=0.01)


# ------------------------------------------------------------------- real PC items behind a STAC API
@pytest.fixture(scope="module")
def pc_fixture_api(tmp_path_factory):
    """The real PC fixture items served by rustac (A's cloudlulc.stac_server), as the PC API would."""
    from cloudlulc.testing.stac_server import serve_stac

    api = tmp_path_factory.mktemp("pc-api") / "api"
    api.mkdir()
    for cid in ("sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"):
        (api / f"{cid}.collection.json").write_text((FIXTURES / "collections" / f"{cid}.json").read_text())
        feats = load(f"{cid}.json")
        (api / f"{cid}.items.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with serve_stac(api.parent) as url:
        yield url


def test_search_and_pair_real_pc_items_through_a_stac_api(pc_fixture_api):
    client = cat.open_catalog(pc_fixture_api)
    acqs = cat.search_s2(client, (92.0, 80.0, 98.0, 83.0), "2024-04-01", "2024-04-30", max_cloud_cover=50)
    assert len(acqs) == 1 and len(acqs[0].items) == 3
    assert all(isinstance(it["properties"]["proj:epsg"], int) for it in acqs[0].items)
    # The acquisition is kept or dropped whole by its cloud over the AOI: the tiles' 0.22, 0.83 and
    # 0.84 % weighted by the AOI area each supplies in the mosaic (the least cloudy one, most of it)
    assert 0.45 < acqs[0].cloud_cover < 0.5
    low = cat.search_s2(client, (92.0, 80.0, 98.0, 83.0), "2024-04-01", "2024-04-30", max_cloud_cover=0.5)
    assert len(low) == 1 and len(low[0].items) == 3
    with pytest.raises(cat.NoSentinel2Error, match="least cloudy: 0.5%"):
        cat.search_s2(client, (92.0, 80.0, 98.0, 83.0), "2024-04-19", "2024-04-19", max_cloud_cover=0.45)
    acq = _acq_at(S1_PASS_TIME + timedelta(days=2))
    pairing = cat.pair_s1(client, acq, AOI_S1_TWO_FRAMES, 12)
    assert len(pairing.s1_items) == 2 and pairing.orbit_state == "descending" and pairing.relative_orbit == 51
    assert all(len(it["properties"]["proj:transform"]) == 6 for it in pairing.s1_items)
    with pytest.raises(NoSentinel1Error) as err:
        cat.pair_s1(client, _acq_at(S1_PASS_TIME + timedelta(days=20)), AOI_S1_TWO_FRAMES, 12)
    assert err.value.nearest_date.isoformat() == "2024-04-19" and 19.9 < err.value.nearest_gap_days < 20.1
