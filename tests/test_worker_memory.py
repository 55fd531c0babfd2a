"""Worker memory limits (cloudlulc.runtime.worker): glibc arena cap and GDAL block cache, applied
where the pipeline's workers start, and effective.

Arena counts come from glibc's own ``malloc_stats()`` and the cache size from GDAL, in fresh
subprocesses, so each test sees a process whose allocator and GDAL nothing else has touched.
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

from cloudlulc.config import Settings
from cloudlulc.runtime import make_cluster
from cloudlulc.runtime import worker as worker_memory
from cloudlulc.runtime.worker import (
    export_to_child_processes,
    limit_gdal_block_cache,
    limit_malloc_arenas,
    nanny_environ,
)

ROOT = Path(__file__).resolve().parents[1]
glibc_only = pytest.mark.skipif(worker_memory._glibc() is None, reason="arenas are a glibc feature")

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
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GDAL_CACHEMAX"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**clean, **(env or {})}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {k: int(v) for k, v in re.findall(r"^(\w+)=(\d+)$", out.stdout, flags=re.M)}


@glibc_only
def test_cap_keeps_new_threads_in_the_existing_arenas():
    body = """
        from cloudlulc.runtime.worker import limit_malloc_arenas
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
def test_threaded_scheduler_limits_memory_before_its_threads_start():
    body = """
        import time
        import dask.array as da
        from rasterio.env import get_gdal_config
        from cloudlulc.config import Settings
        from cloudlulc.runtime import dask_client

        before = arenas()
        held = []

        def block(b):
            held.append([bytearray(4096) for _ in range(64)])
            time.sleep(0.2)  # the chunks overlap, so the pool starts a thread for each
            return b

        gdal_default = get_gdal_config("GDAL_CACHEMAX")
        with dask_client(Settings(malloc_arena_max={cap}, gdal_cachemax_mb={cache}, dask_threads_per_worker=6)):
            da.zeros(6, chunks=1).map_blocks(block).compute()
        print(f"before={{before}}")
        print(f"after={{arenas()}}")
        print(f"gdal_default={{gdal_default}}")
        print(f"gdal_cache={{get_gdal_config('GDAL_CACHEMAX')}}")
    """
    free = _probe(body.format(cap=0, cache=0))
    capped = _probe(body.format(cap=2, cache=48))
    assert free["after"] >= free["before"] + 3  # the pool's threads took arenas of their own
    assert capped["after"] <= max(2, capped["before"])
    assert free["gdal_cache"] == free["gdal_default"] > 48 << 20  # GDAL's own default: 5 % of RAM
    assert capped["gdal_cache"] == 48 << 20


def test_gdal_block_cache_leaves_an_operator_value_to_gdal():
    body = """
        from rasterio.env import get_gdal_config
        from cloudlulc.runtime.worker import limit_gdal_block_cache
        print(f"set={{int(limit_gdal_block_cache(48))}}")
        print(f"gdal_cache={{get_gdal_config('GDAL_CACHEMAX')}}")
    """
    assert _probe(body.format()) == {"set": 1, "gdal_cache": 48 << 20}
    assert _probe(body.format(), env={"GDAL_CACHEMAX": "32"}) == {"set": 0, "gdal_cache": 32 << 20}


def test_arena_settings_validate_and_zero_leaves_the_allocator_alone(monkeypatch):
    with pytest.raises(ValueError, match="max_arenas must be >= 0"):
        limit_malloc_arenas(-1)
    with pytest.raises(ValueError, match="megabytes must be >= 0"):
        limit_gdal_block_cache(-1)
    with pytest.raises(ValueError, match="gdal_cachemax_mb must be >= 0"):
        nanny_environ(2, -1)
    with pytest.raises(ValueError, match="malloc_arena_max"):
        Settings(malloc_arena_max=-1)
    with pytest.raises(ValueError, match="gdal_cachemax_mb"):
        Settings(gdal_cachemax_mb=-1)
    assert limit_malloc_arenas(0) is False and limit_gdal_block_cache(0) is False
    assert nanny_environ(0, 0) == {}
    assert nanny_environ(2, 64) == {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": None, "GDAL_CACHEMAX": "64"}

    for key in ("MALLOC_ARENA_MAX", "GDAL_CACHEMAX", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(key, raising=False)
    export_to_child_processes(0, 0)
    assert "MALLOC_ARENA_MAX" not in os.environ and "GDAL_CACHEMAX" not in os.environ
    monkeypatch.setenv("MALLOC_ARENA_MAX", "3")
    export_to_child_processes(2, 64)  # the operator's value stays; None entries are not exported
    assert os.environ["MALLOC_ARENA_MAX"] == "3" and os.environ["GDAL_CACHEMAX"] == "64"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ


def test_applied_limits_are_described_for_the_run_log(monkeypatch):
    from cloudlulc.runtime.worker import apply_worker_limits

    for key in ("MALLOC_ARENA_MAX", "GDAL_CACHEMAX"):
        monkeypatch.delenv(key, raising=False)
    expected_arenas = "malloc arenas capped at 2" if worker_memory._glibc() else "malloc arenas: glibc default"
    assert apply_worker_limits(2, 64) == f"{expected_arenas}, GDAL block cache 64 MB"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "3")
    monkeypatch.setenv("GDAL_CACHEMAX", "32")
    assert apply_worker_limits(0, 64) == ("malloc arenas capped at 3 (environment), GDAL block cache 32 (environment)")
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.delenv("GDAL_CACHEMAX")
    assert apply_worker_limits(0, 0) == "malloc arenas: glibc default, GDAL block cache: GDAL default"


def test_worker_processes_get_the_limits_instead_of_the_nanny_trim_threshold():
    import dask
    from distributed import Client

    default_trim = dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_")
    cluster = make_cluster(
        Settings(
            dask_cluster="local",
            dask_processes=True,
            dask_n_workers=1,
            dask_threads_per_worker=1,
        )
    )
    try:
        with Client(cluster) as client:
            seen = client.run(
                lambda: {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "GDAL_CACHEMAX")}
            )
    finally:
        cluster.close()
    assert list(seen.values()) == [{"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": None, "GDAL_CACHEMAX": "64"}]
    # the override was scoped to starting the cluster
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == default_trim


def test_image_dask_config_matches_the_library():
    config = yaml.safe_load((ROOT / "deploy/dask/dask-config.yaml").read_text())
    environ = config["distributed"]["nanny"]["pre-spawn-environ"]
    defaults = Settings()
    assert environ == nanny_environ(defaults.malloc_arena_max, defaults.gdal_cachemax_mb)
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert "COPY deploy/dask/dask-config.yaml /etc/dask/" in dockerfile
    assert re.search(rf"MALLOC_ARENA_MAX={defaults.malloc_arena_max}\b", dockerfile)
    assert re.search(rf"GDAL_CACHEMAX={defaults.gdal_cachemax_mb}\b", dockerfile)
