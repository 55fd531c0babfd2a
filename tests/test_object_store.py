"""Mosaics on object storage, end to end against a real S3 API on loopback (moto's server mode).

The same store code as on disk, through fsspec (s3fs) and zarr's FsspecStore; credentials come
from the standard ``AWS_*`` variables only. The writer lease is tested where it matters: conditional
writes that only one writer wins, a writer killed with SIGKILL mid-write (the next one takes the
stale lease over and resumes), two writers at once, a store held by another writer, a writer whose
lease was taken over, and a store that ignores conditional writes. Real processes, no mocks.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import fsspec
import numpy as np
import pytest
import store_writer_child as writer_child
import xarray as xr
import zarr
from s3_server import BUCKET, S3Server, environ, moto_s3, strip_conditions

from cloudlulc import pipeline
from cloudlulc.config import Settings
from cloudlulc.params import MapParams
from cloudlulc.store import (
    MOSAIC_VARIABLES,
    LeaseLostError,
    StoreBusyError,
    mapped_times,
    open_mosaic,
    read_provenance,
    write_mosaic,
    writer_lease,
)
from cloudlulc.store.lease import LeaseFile, StoreLeaseError
from flows.demo import demo_aoi_and_time

CHILD = Path(__file__).resolve().parent / "store_writer_child.py"
T0, T1 = "2024-04-19T10:06:31Z", "2024-05-01T10:16:29Z"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto on loopback, its AWS_* variables in this process's environment (as a pod gets them)."""
    with moto_s3(tmp_path_factory.mktemp("moto")) as server, environ(server.env()):
        yield server


def _url(name: str) -> str:
    return f"s3://{BUCKET}/{name}"


def _child(store: str, time_: str, seed: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), store, time_, str(seed), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _write_here(store: str, time_: str, seed: int) -> None:
    """What the child writes, written from this process (no interpreter start-up)."""
    with dask.config.set(scheduler="synchronous"):
        write_mosaic(
            writer_child.result(seed, 0.0),
            store,
            time=time_,
            attrs={"model": {"name": f"slow-{seed}"}, "note": ""},
            chunk_size=writer_child.CHUNK,
        )


def _done_markers(store: str, slot: int) -> int:
    try:
        root = zarr.open_group(store, mode="r", use_consolidated=False)
        return int(np.asarray(root["_resume/done"][slot]).sum())
    except Exception:
        return 0


def _objects(store: str) -> dict[str, str]:
    """Every object of the store but the lease, with its ETag."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    root = store.removeprefix("s3://")
    return {p: fs.info(p)["ETag"] for p in fs.find(root) if "/.cloudlulc/" not in p}


def _products(store: str, time_: str) -> dict[str, np.ndarray]:
    sl = open_mosaic(store).sel(time=np.datetime64(time_.rstrip("Z"), "ns"))
    return {v: sl[v].values for v in MOSAIC_VARIABLES}


# ------------------------------------------------------------------------------ the lease


def test_conditional_writes_let_exactly_one_of_six_racing_writers_win(s3):
    lease = LeaseFile(fsspec.filesystem("s3"), f"{BUCKET}/race/lease.json")
    for round_ in range(5):
        wins: list[int] = []
        start = threading.Barrier(6)
        current = lease.read()

        def take(i: int, current=current, wins=wins, start=start, round_=round_) -> None:
            start.wait()
            mine = {"token": f"{round_}-{i}", "heartbeat": time.time()}
            won = lease.create(mine) if current is None else lease.replace(mine, current[1])
            if won:
                wins.append(i)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, f"round {round_}: {wins}"
        content = lease.read()
        assert content is not None and content[0]["token"] == f"{round_}-{wins[0]}"


def test_a_held_store_makes_the_next_writer_wait_then_fail_naming_the_holder(s3):
    with writer_lease(_url("held.zarr"), owner="the first writer"):
        t0 = time.monotonic()
        with pytest.raises(StoreBusyError, match=f"the first writer .*pid {os.getpid()}"):
            with writer_lease(_url("held.zarr"), wait_s=1.0):
                pass
        assert time.monotonic() - t0 >= 1.0
    with writer_lease(_url("held.zarr"), wait_s=0):  # released on exit: taken at once
        pass


def test_a_stalled_writer_loses_its_lease_and_knows_before_it_commits(s3):
    with writer_lease(_url("stall.zarr"), owner="stalled", stale_s=600) as stalled:
        time.sleep(1.5)  # no heartbeat in this time: to a writer with stale_s=1 it looks dead
        with writer_lease(_url("stall.zarr"), owner="next", wait_s=10, stale_s=1) as taker:
            with pytest.raises(LeaseLostError, match="taken over"):
                stalled.check()
            taker.check()  # still its own
    assert LeaseFile(fsspec.filesystem("s3"), f"{BUCKET}/stall.zarr/.cloudlulc/lease.json").read()[0]["released"]


def test_a_store_that_ignores_conditional_writes_is_refused(s3):
    with strip_conditions(s3.endpoint) as proxy:
        with pytest.raises(StoreLeaseError, match="ignores conditional writes"):
            with writer_lease(
                _url("unsafe.zarr"), storage_options={"endpoint_url": proxy, "skip_instance_cache": True}
            ):
                pass


def test_an_output_whose_filesystem_is_not_installed_is_refused_with_the_extra_to_install():
    with pytest.raises(ValueError, match=r"pip install 'cloudlulc\[object-store\]'"):
        MapParams(aoi="16.9,48.1,17.0,48.2", time="2024-04-19", output="oss://bucket/x.zarr")
    MapParams(aoi="16.9,48.1,17.0,48.2", time="2024-04-19", output="s3://bucket/x.zarr")


# ------------------------------------------------------------------------- the writer


def test_kill_9_mid_write_to_s3_resumes_to_what_an_uninterrupted_write_gives(s3):
    clean, crashed = _url("clean.zarr"), _url("crash.zarr")
    _write_here(clean, T0, 5)
    proc = _child(crashed, T0, 5, "--delay", "0.05")
    deadline = time.monotonic() + 180
    while _done_markers(crashed, 0) < 3:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the writer made no progress"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert mapped_times(crashed) == []  # nothing half-written is visible
    # the dead writer's lease stays until its heartbeat is stale, then the next writer takes it over
    out = _finish(_child(crashed, T0, 5, "--stale", "2", "--wait", "60"))
    assert out.split()[:3] == ["written", "resume", "0"]
    got, want = _products(crashed, T0), _products(clean, T0)
    for v in MOSAIC_VARIABLES:
        np.testing.assert_array_equal(got[v], want[v], err_msg=v)


def test_two_writers_of_one_s3_store_take_turns_and_both_publish(s3):
    store = _url("two.zarr")
    a = _child(store, T0, 5, "--delay", "0.02", "--note", "a")
    b = _child(store, T1, 4, "--delay", "0.02", "--note", "b")
    _finish(a)
    _finish(b)
    assert [str(t)[:19] for t in mapped_times(store)] == ["2024-04-19T10:06:31", "2024-05-01T10:16:29"]
    assert {p["note"] for p in read_provenance(store).values()} == {"a", "b"}


def test_a_writer_of_a_held_s3_store_fails_clearly_and_touches_nothing(s3):
    store = _url("busy.zarr")
    _write_here(store, T0, 5)
    before = _objects(store)
    with writer_lease(store, owner="a test holding the store"):
        out = subprocess.run(
            [sys.executable, str(CHILD), store, T1, "4", "--wait", "0.5"], capture_output=True, text=True
        )
    assert out.returncode != 0
    assert "StoreBusyError" in out.stderr and "another writer holds the store" in out.stderr
    assert f"pid {os.getpid()}" in out.stderr
    assert _objects(store) == before


# --------------------------------------------------------------------- map_aoi to S3


def test_map_aoi_writes_to_s3_reads_back_and_keeps_credentials_out(s3, sim_catalog, stac_url, tmp_path, caplog):
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=320)
    day = window.split("/")[0]
    store = _url("berlin/map.zarr")
    settings = Settings(catalog_url=stac_url, device="cpu", tile=64, overlap=16, chunk_size=64)
    with caplog.at_level(logging.DEBUG):
        result = pipeline.map_aoi(
            {"aoi": aoi, "time": day, "output": store, "quicklook_dir": str(tmp_path / "ql")}, settings=settings
        )
    assert len(result.acquisitions) == 1 and result.output == store

    ds = xr.open_zarr(store, decode_coords="all")  # plain xarray, through fsspec
    assert ds["lulc"].rio.crs.to_epsg() == sim_catalog.epsg and ds.sizes["time"] == 1
    lulc = ds["lulc"].isel(time=0).values
    assert set(np.unique(lulc)) <= {0, 1, 2, 3, 4, 5} and (lulc <= 5).mean() > 0.99
    assert Path(result.acquisitions[0].quicklook).is_file()

    again = pipeline.map_aoi({"aoi": aoi, "time": day, "output": store, "skip_mapped": True}, settings=settings)
    assert again.acquisitions == [] and len(again.skipped_times) == 1

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    everything = b"".join(fs.cat_file(p) for p in fs.find(f"{BUCKET}/berlin"))
    for credential in (s3.secret, s3.key_id):
        assert credential.encode() not in everything  # never in attributes, provenance or the lease
    assert s3.secret not in caplog.text  # not even in botocore's DEBUG logs (they name the key id)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and s3.key_id in r.getMessage()]
