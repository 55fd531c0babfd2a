"""The store under faults: writers killed with SIGKILL mid-write or mid-rerun, two writers at once,
a store held by another writer. Nothing published is ever hidden or lost; real processes, a real
Zarr store on disk, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from cloudlulc.store import (
    MOSAIC_VARIABLES,
    mapped_times,
    open_mosaic,
    read_provenance,
    read_slots,
    writer_lease,
)

CHILD = Path(__file__).resolve().parent / "store_writer_child.py"
T0, T1 = "2024-04-19T10:06:31Z", "2024-05-01T10:16:29Z"
K0 = "2024-04-19T10:06:31.000Z"


def _child(store: Path, time_: str, seed: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), time_, str(seed), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _done_markers(store: Path, slot: int) -> int:
    try:
        root = zarr.open_group(store, mode="r", use_consolidated=False)
        return int(np.asarray(root["_resume/done"][slot]).sum())
    except Exception:
        return 0


def _kill_after_markers(proc: subprocess.Popen[str], store: Path, slot: int, at_least: int) -> None:
    deadline = time.monotonic() + 180
    while _done_markers(store, slot) < at_least:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the writer made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _products(store: Path, time_: str) -> dict[str, np.ndarray]:
    ds = open_mosaic(store)
    sl = ds.sel(time=np.datetime64(time_.rstrip("Z"), "ns"))
    return {v: sl[v].values for v in MOSAIC_VARIABLES}


def test_kill_9_mid_write_resumes_to_the_store_an_uninterrupted_run_writes(tmp_path):
    clean, crashed = tmp_path / "clean.zarr", tmp_path / "crash.zarr"
    _finish(_child(clean, T0, 5))
    proc = _child(crashed, T0, 5, "--delay", "0.05")
    _kill_after_markers(proc, crashed, 0, 3)
    assert mapped_times(crashed) == []  # the half-written slice is not published
    assert read_slots(crashed)[0]["status"] == "writing"
    out = _finish(_child(crashed, T0, 5))
    assert out.split()[:3] == ["written", "resume", "0"]
    got, want = _products(crashed, T0), _products(clean, T0)
    for v in MOSAIC_VARIABLES:
        np.testing.assert_array_equal(got[v], want[v], err_msg=v)


def test_kill_9_during_a_rerun_never_hides_the_published_slice(tmp_path):
    store = tmp_path / "rerun.zarr"
    _finish(_child(store, T0, 5, "--note", "first"))
    first = _products(store, T0)
    assert _finish(_child(store, T0, 5, "--note", "first")).split()[1] == "skip"  # same inputs: not redone
    proc = _child(store, T0, 4, "--delay", "0.05", "--note", "second")  # other inputs: a replacement
    _kill_after_markers(proc, store, 1, 3)
    # the replacement died half-way: readers still see the first slice, whole and untouched
    assert mapped_times(store) == [np.datetime64(K0.rstrip("Z"), "ns")]
    for v in MOSAIC_VARIABLES:
        np.testing.assert_array_equal(_products(store, T0)[v], first[v], err_msg=v)
    assert read_provenance(store)[K0]["note"] == "first"
    out = _finish(_child(store, T0, 4, "--note", "second"))
    assert out.split()[:3] == ["written", "resume", "1"]
    assert read_provenance(store)[K0]["note"] == "second"
    assert read_slots(store)[0]["status"] == "retired" and read_slots(store)[1]["status"] == "complete"
    assert (_products(store, T0)["lulc"] != first["lulc"]).any()


def test_two_writers_at_once_both_publish_and_keep_each_others_provenance(tmp_path):
    store = tmp_path / "two.zarr"
    a = _child(store, T0, 5, "--delay", "0.02", "--note", "a")
    b = _child(store, T1, 4, "--delay", "0.02", "--note", "b")
    _finish(a)
    _finish(b)
    times = [str(t)[:19] for t in mapped_times(store)]
    assert times == ["2024-04-19T10:06:31", "2024-05-01T10:16:29"]
    prov = read_provenance(store)
    assert {p["note"] for p in prov.values()} == {"a", "b"}
    assert all(s["status"] == "complete" for s in read_slots(store).values())


def test_a_store_held_by_another_writer_fails_clearly_after_the_wait(tmp_path):
    store = tmp_path / "busy.zarr"
    _finish(_child(store, T0, 5))
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and ".cloudlulc" not in p.parts}
    with writer_lease(store, owner="a test holding the store"):
        out = subprocess.run(
            [sys.executable, str(CHILD), str(store), T1, "4", "--wait", "0.5"], capture_output=True, text=True
        )
    assert out.returncode != 0
    assert "another writer holds the store" in out.stderr and f"pid {os.getpid()}" in out.stderr
    assert "StoreBusyError" in out.stderr
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and ".cloudlulc" not in p.parts}
    assert after == before  # nothing was touched


def test_a_writer_killed_holding_the_lease_does_not_block_the_next(tmp_path):
    store = tmp_path / "dead.zarr"
    proc = _child(store, T0, 5, "--delay", "0.05")
    _kill_after_markers(proc, store, 0, 1)
    out = _finish(_child(store, T1, 4, "--wait", "5"))  # the kernel released the dead writer's lock
    assert out.split()[:3] == ["written", "append", "1"]  # slot 0 stays the dead writer's, resumable
