"""glibc arena cap (cloudlulc.allocator): applied where the pipeline's workers start, and effective.

The arena counts come from glibc's own ``malloc_stats()`` in fresh subprocesses, so each test sees
a process whose allocator nothing else has touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cloudlulc import allocator
from cloudlulc.allocator import export_arena_cap, limit_malloc_arenas, nanny_environ
from cloudlulc.config import Settings
from cloudlulc.dask_cluster import make_cluster

ROOT = Path(__file__).resolve().parents[1]
glibc_only = pytest.mark.skipif(allocator._glibc() is None, reason="arenas are a glibc feature")

# Threads that allocate while all of them are alive: without a cap glibc gives each its own arena.
_ARENA_PROBE = textwrap.dedent("""
    import ctypes, os, sys, threading

    def arenas():
        # glibc prints one "Arena N:" section per arena to stderr (fd 2): read it through a pipe
        r, w = os.pipe()
        saved = os.dup(2)
        os.dup2(w, 2)
        try:
            ctypes.CDLL(None).malloc_stats()
        finally:
            os.dup2(saved, 2)
            os.close(w)
        with os.fdopen(r) as f:
            return sum(line.startswith("Arena ") for line in f)

    def allocate_together(n):
        barrier = threading.Barrier(n)
        held = []
        def work():
            held.append([bytearray(4096) for _ in range(64)])  # malloc'd (over pymalloc's 512 bytes)
            barrier.wait()
        threads = [threading.Thread(target=work) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
""")


def _probe(body: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Run the probe plus ``body`` (which prints ``key=value`` lines) in a fresh interpreter."""
    code = _ARENA_PROBE + textwrap.dedent(body)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**clean, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return {k: int(v) for k, v in re.findall(r"^(\w+)=(\d+)$", out.stdout, flags=re.M)}


@glibc_only
def test_cap_keeps_new_threads_in_the_existing_arenas():
    body = """
        from cloudlulc.allocator import limit_malloc_arenas
        print(f"applied={{int(limit_malloc_arenas({cap}))}}")
        allocate_together(6)
        print(f"arenas={{arenas()}}")
    """
    free = _probe(body.format(cap=0))
    capped = _probe(body.format(cap=2))
    assert free["applied"] == 0 and free["arenas"] >= 5  # the probe sees one arena per thread
    assert capped["applied"] == 1 and capped["arenas"] <= 2
    # an operator's MALLOC_ARENA_MAX wins over the setting
    operator = _probe(body.format(cap=4), env={"MALLOC_ARENA_MAX": "1"})
    assert operator["applied"] == 1 and operator["arenas"] == 1


@glibc_only
def test_threaded_scheduler_caps_arenas_before_its_threads_start():
    body = """
        import time
        import dask.array as da
        from cloudlulc.config import Settings
        from cloudlulc.dask_cluster import dask_client

        before = arenas()
        held = []

        def block(b):
            held.append([bytearray(4096) for _ in range(64)])
            time.sleep(0.2)  # the chunks overlap, so the pool starts a thread for each
            return b

        with dask_client(Settings(malloc_arena_max={cap}, dask_threads_per_worker=6)):
            da.zeros(6, chunks=1).map_blocks(block).compute()
        print(f"before={{before}}")
        print(f"after={{arenas()}}")
    """
    free = _probe(body.format(cap=0))
    capped = _probe(body.format(cap=2))
    assert free["after"] >= free["before"] + 3  # the pool's threads took arenas of their own
    assert capped["after"] <= max(2, capped["before"])


def test_arena_settings_validate_and_zero_leaves_the_allocator_alone(monkeypatch):
    with pytest.raises(ValueError, match="max_arenas must be >= 0"):
        limit_malloc_arenas(-1)
    with pytest.raises(ValueError, match="max_arenas must be >= 0"):
        nanny_environ(-1)
    with pytest.raises(ValueError, match="malloc_arena_max"):
        Settings(malloc_arena_max=-1)
    assert limit_malloc_arenas(0) is False
    assert nanny_environ(0) == {}
    assert nanny_environ(2) == {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": None}

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    export_arena_cap(0)
    assert "MALLOC_ARENA_MAX" not in os.environ
    export_arena_cap(2)
    assert os.environ["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "3")
    export_arena_cap(2)  # the operator's value stays
    assert os.environ["MALLOC_ARENA_MAX"] == "3"


def test_worker_processes_get_the_cap_instead_of_the_nanny_trim_threshold():
    import dask
    from distributed import Client

    default_trim = dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_")
    cluster = make_cluster(Settings(dask_cluster="local", dask_processes=True, dask_n_workers=1,
                                    dask_threads_per_worker=1))
    try:
        with Client(cluster) as client:
            seen = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_")})
    finally:
        cluster.close()
    assert list(seen.values()) == [{"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": None}]
    # the override was scoped to starting the cluster
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == default_trim


def test_image_dask_config_matches_the_library():
    config = yaml.safe_load((ROOT / "deploy/dask/dask-config.yaml").read_text())
    environ = config["distributed"]["nanny"]["pre-spawn-environ"]
    assert environ == nanny_environ(Settings().malloc_arena_max)
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert "COPY deploy/dask/dask-config.yaml /etc/dask/" in dockerfile
    assert re.search(rf"MALLOC_ARENA_MAX={Settings().malloc_arena_max}\b", dockerfile)
