"""cloudlulc.stac_server: a real ``rustac serve`` over the SIMULATED catalog, queried with pystac-client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pystac_client import Client
from shapely.geometry import Point, box, shape

from cloudlulc.schemas import validate_stac
from cloudlulc.simulate import SimCatalog
from cloudlulc.testing.stac_server import StacServerError, serve_stac


def _parse(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00").replace(" ", "T"))


def _expected_ids(cat: SimCatalog, collection: str, bbox, start: datetime, end: datetime) -> set[str]:
    """Independent expectation: the item dicts filtered with shapely and datetime comparisons."""
    out = set()
    for it in cat.items_of(collection):
        p = it["properties"]
        t0 = _parse(p["start_datetime"]) if p.get("datetime") is None else _parse(p["datetime"])
        t1 = _parse(p["end_datetime"]) if p.get("datetime") is None else t0
        if t1 >= start and t0 <= end and shape(it["geometry"]).intersects(box(*bbox)):
            out.add(it["id"])
    return out


def test_pystac_client_search_returns_the_right_items(sim_catalog, stac_url):
    client = Client.open(stac_url)
    start = datetime(2022, 1, 10, tzinfo=UTC)
    end = datetime(2022, 2, 5, tzinfo=UTC)
    search = client.search(
        collections=["sentinel-2-l2a"], bbox=sim_catalog.aoi_bbox_lonlat, datetime=(start, end), limit=3
    )
    got = [it["id"] for it in search.items_as_dicts()]  # limit 3 < 4 matches: pages through POST /search
    expected = _expected_ids(sim_catalog, "sentinel-2-l2a", sim_catalog.aoi_bbox_lonlat, start, end)
    assert len(got) == len(set(got)) == 4
    assert set(got) == expected
    s1 = client.search(
        collections=["sentinel-1-rtc"], bbox=sim_catalog.aoi_bbox_lonlat, datetime="2022-01-20/2022-02-28"
    )
    s1_ids = {it["id"] for it in s1.items_as_dicts()}
    assert s1_ids == _expected_ids(
        sim_catalog,
        "sentinel-1-rtc",
        sim_catalog.aoi_bbox_lonlat,
        datetime(2022, 1, 20, tzinfo=UTC),
        datetime(2022, 2, 28, 23, 59, 59, tzinfo=UTC),
    )
    assert len(s1_ids) >= 2
    # WorldCover has datetime null: found through its start/end interval.
    wc = list(client.search(collections=["esa-worldcover"], datetime="2021-06-01/2021-06-30").items_as_dicts())
    assert [it["id"] for it in wc] == [it["id"] for it in sim_catalog.items_of("esa-worldcover")]
    assert list(client.search(collections=["esa-worldcover"], datetime="2023-01-01/2023-02-01").items_as_dicts()) == []


def test_served_items_keep_pc_fields_and_validate(sim_catalog, stac_url):
    client = Client.open(stac_url)
    assert {c.id for c in client.get_collections()} == {"sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"}
    for c in client.get_collections():
        assert "SIMULATED" in c.description
    served = {
        it["id"]: it
        for it in client.search(collections=["sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"]).items_as_dicts()
    }
    assert set(served) == {it["id"] for it in sim_catalog.items}
    for it in sim_catalog.items:
        got = served[it["id"]]
        times = ("datetime", "start_datetime", "end_datetime")
        for key, value in it["properties"].items():
            if key in times and value is not None:
                assert _parse(got["properties"][key]) == _parse(value), key  # rustac normalises the format
            else:
                assert got["properties"][key] == value, key  # e.g. proj:epsg stays proj:epsg
        assert got["assets"] == it["assets"]
        rels = [ln["rel"] for ln in got["links"]]
        assert rels.count("collection") == 1 and rels.count("self") == 1
        validate_stac(got)


def test_intersects_honours_the_nodata_footprint(sim_catalog, stac_url):
    """A point in the nodata wedge of the western tile (first date) only hits the eastern tile."""
    first = min(sim_catalog.s2_dates)
    items = [
        it
        for it in sim_catalog.items_of("sentinel-2-l2a")
        if it["properties"]["datetime"].startswith(first.strftime("%Y-%m-%d"))
    ]
    west = next(it for it in items if it["properties"]["s2:mgrs_tile"] == "33UXP")
    east = next(it for it in items if it["properties"]["s2:mgrs_tile"] == "33UYP")
    wedge = box(*west["bbox"]).intersection(shape(east["geometry"])).difference(shape(west["geometry"]))
    assert not wedge.is_empty
    pt = wedge.representative_point()
    client = Client.open(stac_url)
    got = {
        it["id"]
        for it in client.search(
            collections=["sentinel-2-l2a"],
            intersects=Point(pt.x, pt.y).__geo_interface__,
            datetime=first.strftime("%Y-%m-%d"),
        ).items_as_dicts()
    }
    assert got == {east["id"]}


def test_rustac_returns_nothing_for_query_so_clients_must_filter(stac_url):
    """Canary for the behaviour documented in cloudlulc.stac_server: rustac has no query extension."""
    conformance = httpx.get(f"{stac_url}/conformance", timeout=10).json()["conformsTo"]
    assert not any("query" in c or "filter" in c for c in conformance)
    body = {"collections": ["sentinel-2-l2a"], "query": {"eo:cloud_cover": {"lt": 100}}}
    r = httpx.post(f"{stac_url}/search", json=body, timeout=10)
    assert r.status_code == 200 and r.json()["features"] == []
    plain = httpx.post(f"{stac_url}/search", json={"collections": ["sentinel-2-l2a"]}, timeout=10).json()
    assert len(plain["features"]) == 8


def test_serves_a_catalog_directory_and_stops_on_exit(sim_catalog):
    with serve_stac(Path(sim_catalog.root)) as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        port = int(url.rsplit(":", 1)[1])
        assert httpx.get(f"{url}/collections", timeout=5).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/", timeout=2)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()  # the port is free again: nothing listens there any more


def test_port_in_use_is_reported(sim_catalog):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(StacServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            with serve_stac(sim_catalog, port=port):
                pass


def test_missing_rustac_is_reported(sim_catalog, tmp_path):
    with pytest.raises(StacServerError, match="rustac.*not found.*pip install rustac"):
        with serve_stac(sim_catalog, rustac=tmp_path / "no-such-rustac"):
            pass


def test_early_exit_reports_rustac_output(tmp_path):
    bad = tmp_path / "broken.collection.json"
    bad.write_text("this is not JSON")  # rustac accepts odd STAC, but exits on unparsable files
    with pytest.raises(StacServerError) as err:
        with serve_stac(bad, startup_timeout=20):
            pass
    msg = str(err.value)
    assert "exited with status" in msg and "Output:" in msg
    assert "expected" in msg.split("Output:", 1)[1]  # rustac's own parse error is passed on


def test_missing_catalog_is_reported(tmp_path):
    with pytest.raises(StacServerError, match="does not exist.*python -m cloudlulc.simulate"):
        with serve_stac(tmp_path / "nowhere"):
            pass


def test_cli_serves_until_terminated(sim_catalog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudlulc.testing.stac_server", "serve", str(sim_catalog.root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        cols = httpx.get(f"http://127.0.0.1:{port}/collections", timeout=5).json()["collections"]
        assert len(cols) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
    assert rc == 0
    time.sleep(0.2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
