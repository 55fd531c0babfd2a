"""Network faults injected on loopback: a STAC API or a COG server that hangs, answers 503 for a
while, or cuts a body short. Every run ends in bounded time, retries what a retry can mend, and
fails naming the URL (never a token) otherwise. Real servers (rustac, the asset server) behind
:mod:`cloudlulc.testing.faults`; no mocks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cloudlulc import stac as cat
from cloudlulc.cube import HttpOptions, ReadOptions, ReadRetry, build_cube, grid_for_aoi
from cloudlulc.errors import is_transient_error
from cloudlulc.stac import AssetReadError, Pair, StacApiError, group_acquisitions, select_s1
from cloudlulc.testing.assets import serve_assets
from cloudlulc.testing.faults import FaultRule, fault_proxy
from cloudlulc.testing.stac_server import serve_stac

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

#: quick network settings for tests: GDAL retries once, the reader three times
FAST = ReadOptions(
    http=HttpOptions(timeout_s=1.0, connect_timeout_s=1.0, max_retry=1, retry_delay_s=0.05),
    retry=ReadRetry(attempts=3, delay_s=0.05),
)


@pytest.fixture(scope="module")
def remote(sim_catalog):
    """The simulated catalog's COGs behind a fault proxy: (proxy, a pair with remote hrefs, a small grid)."""
    with serve_assets(sim_catalog.root) as server, fault_proxy(server.url) as proxy:
        items = sim_catalog.with_href_base(proxy.url)
        aoi = cat.parse_aoi(sim_catalog.aoi_bbox_lonlat)
        acq = group_acquisitions([it for it in items if it["collection"] == "sentinel-2-l2a"], aoi)[1]
        s1 = select_s1(acq, [it for it in items if it["collection"] == "sentinel-1-rtc"], aoi)
        grid = grid_for_aoi(aoi).window(0, 0, 96, 96)
        yield proxy, Pair(acq, s1, aoi), grid


def _cube(pair, grid, fresh: str):
    """The cube computed from hrefs tagged ``?fresh=...``: GDAL caches what it read from a URL for the
    life of the process, so a test that reuses another's URLs would never reach the proxy."""
    tagged = cat.resign_pair(pair, signer=lambda href: f"{href.split('?')[0]}?fresh={fresh}")
    return build_cube(tagged, grid, chunksize=48, read=FAST)[["optical", "sar", "scl"]].compute(scheduler="threads")


@pytest.fixture(scope="module")
def clean(remote):
    proxy, pair, grid = remote
    proxy.set()
    return _cube(pair, grid, "clean")


def _same(a, b) -> None:
    for name in ("optical", "sar", "scl"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_a_503_burst_on_one_cog_is_retried_on_a_fresh_handle(remote, clean):
    """More 503s than GDAL's own retries: the reader reopens (bypassing GDAL's cached failure)."""
    proxy, pair, grid = remote
    proxy.set(FaultRule("B04", "status", 503, count=3))
    _same(_cube(pair, grid, "burst"), clean)
    assert proxy.stats()["faults"] == 3


def test_a_truncated_body_is_retried(remote, clean):
    proxy, pair, grid = remote
    proxy.set(FaultRule("B08", "truncate", count=2))
    _same(_cube(pair, grid, "truncate"), clean)
    assert proxy.stats()["faults"] == 2


def test_a_cog_server_that_never_answers_fails_in_bounded_time_naming_the_asset(remote):
    proxy, pair, grid = remote
    proxy.set(FaultRule("B03", "hang"))
    t0 = time.monotonic()
    with pytest.raises(AssetReadError, match="B03") as info:
        _cube(pair, grid, "hang")
    assert time.monotonic() - t0 < 90
    assert info.value.transient and is_transient_error(info.value)
    assert "?" not in info.value.href and "after 3 retries" in str(info.value)


def test_a_persistent_503_exhausts_the_budget_then_a_later_run_succeeds(remote, clean):
    """What a Prefect task retry does: the same process builds the cube again once the fault is over.
    Its new readers first meet GDAL's cached failure, then reopen past it."""
    proxy, pair, grid = remote
    proxy.set(FaultRule("B02", "status", 503))
    with pytest.raises(AssetReadError, match="B02") as info:
        _cube(pair, grid, "persistent")
    assert info.value.transient and "503" in str(info.value)
    proxy.set()  # the server recovers
    _same(_cube(pair, grid, "persistent"), clean)


def test_a_missing_asset_is_not_retried(remote):
    proxy, pair, grid = remote
    proxy.set(FaultRule("B05", "status", 404))
    with pytest.raises(AssetReadError, match="B05") as info:
        _cube(pair, grid, "missing")
    assert not info.value.transient and not is_transient_error(info.value)
    assert proxy.stats()["faults"] <= 2 * 4  # a try or two per handle, no retry budget spent on it
    proxy.set()


def test_a_stac_api_that_never_answers_fails_in_bounded_time(sim_catalog):
    with serve_stac(sim_catalog) as url, fault_proxy(url) as proxy:
        proxy.set(FaultRule("/", "hang"))
        t0 = time.monotonic()
        with pytest.raises(StacApiError) as info:
            cat.open_catalog(proxy.url, timeout=1.0, connect_timeout=1.0, max_retries=1, backoff_factor=0.05)
        assert time.monotonic() - t0 < 30
        assert is_transient_error(info.value)
        proxy.set(FaultRule("/search", "hang"))  # the landing page answers, searches do not
        client = cat.open_catalog(proxy.url, timeout=1.0, connect_timeout=1.0, max_retries=1, backoff_factor=0.05)
        t0 = time.monotonic()
        with pytest.raises(StacApiError, match="search"):
            cat.search_s2(client, sim_catalog.aoi_bbox_lonlat, "2022-01-01", "2022-03-01")
        assert time.monotonic() - t0 < 30
