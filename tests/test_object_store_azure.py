"""Mosaics on Azure Blob Storage (``az://``) against Azurite, Microsoft's storage emulator, on loopback.

Azurite is an npm package, not a PyPI one, so this module runs only where ``azurite-blob`` is on
the PATH (``npm install -g azurite``) or ``AZURITE_BLOB`` names it; elsewhere it is skipped. It
covers what the S3 tests cannot: the lease's path for stores other than S3 (create-if-absent, then
compare, delete and create), and adlfs's listing cache, which once left the arrays out of the
consolidated metadata.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr
from s3_server import environ

from cloudlulc.store import LeaseLostError, StoreBusyError, mapped_times, writer_lease
from cloudlulc.store.lease import LeaseFile
from cloudlulc.testing.processes import die_with_parent, free_port, stop_process, wait_until_ready

AZURITE = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
pytestmark = pytest.mark.skipif(AZURITE is None, reason="Azurite not installed (npm install -g azurite)")
CHILD = Path(__file__).resolve().parent / "store_writer_child.py"
#: Azurite's documented development account (public, the same in every installation)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """azurite-blob in memory on a free loopback port, its connection string in the environment."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    cmd = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--loose"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--skipApiVersionCheck"], stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    try:
        wait_until_ready(
            lambda: httpx.get(f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list", timeout=2.0).status_code < 500,
            proc,
            timeout=60,
            on_exit=lambda code: RuntimeError(f"azurite exited with {code}; log {log}"),
            on_timeout=lambda: RuntimeError(f"azurite not answering; log {log}"),
        )
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
        )
        with environ({"AZURE_STORAGE_CONNECTION_STRING": conn}):
            az = fsspec.get_filesystem_class("az")
            az.clear_instance_cache()
            fsspec.filesystem("az").mkdir("maps")
            yield
            az.clear_instance_cache()
    finally:
        stop_process(proc)


def test_one_of_five_racing_writers_wins_the_azure_lease(azure):
    lease = LeaseFile(fsspec.filesystem("az"), "maps/race/lease.json")
    for round_ in range(4):
        current, wins, start = lease.read(), [], threading.Barrier(5)

        def take(i: int, current=current, wins=wins, start=start, round_=round_) -> None:
            start.wait()
            mine = {"token": f"{round_}-{i}", "heartbeat": time.time()}
            if lease.create(mine) if current is None else lease.replace(mine, current[1]):
                wins.append(i)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, f"round {round_}: {wins}"


def test_the_azure_lease_waits_releases_and_is_taken_over(azure):
    with writer_lease("az://maps/held.zarr", owner="the first writer"):
        with pytest.raises(StoreBusyError, match="the first writer"):
            with writer_lease("az://maps/held.zarr", wait_s=1.0):
                pass
    with writer_lease("az://maps/held.zarr", wait_s=0):
        pass
    with writer_lease("az://maps/stall.zarr", owner="stalled", stale_s=600) as stalled:
        time.sleep(1.5)
        with writer_lease("az://maps/stall.zarr", owner="next", wait_s=10, stale_s=1) as taker:
            with pytest.raises(LeaseLostError):
                stalled.check()
            taker.check()


def test_a_mosaic_written_to_azure_reads_back_with_plain_xarray(azure):
    store = "az://maps/x.zarr"
    out = subprocess.run(
        [sys.executable, str(CHILD), store, "2024-04-19T10:06:31Z", "5"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ds = xr.open_zarr(store, decode_coords="all")  # consolidated metadata, written by the child
    assert {"lulc", "confidence", "cloud"} <= set(ds.data_vars) and ds.sizes["time"] == 1
    assert len(mapped_times(store)) == 1 and np.isin(ds["lulc"].values, [0, 1, 2, 3, 4, 5, 255]).all()
