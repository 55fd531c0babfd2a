"""Process-wide memory settings for the processes that read and infer: glibc's malloc arenas and
GDAL's block cache. Both decide whether peak memory is bounded by the chunk size or grows with the
AOI, and neither can be set per task, so they are applied where the workers start
(:mod:`cloudlulc.dask_cluster`, ``flows.serve``, the container image).

Measured with ``benchmarks/inference.py``'s memory runs (tiny network, threaded scheduler, 2 cores,
24 GiB, 2048 and 8192 px AOIs):

* **glibc's default arenas let memory grow with the AOI.** Every allocating thread gets its own
  arena (up to 8 per core), and each arena keeps what was freed in it. The Dask threads, Zarr's
  codec threads and the main thread all allocate chunk-sized buffers. Peak RSS went from 1199 MB
  to 1697 MB for 16x the area (+42 %).
* **Two arenas keep memory bounded at full speed.** Peak RSS went from 940 MB to 1118 MB
  (+19 %), and the runs took the same time.
* **Dask's nanny trims, which costs speed.** It starts worker processes with
  ``MALLOC_TRIM_THRESHOLD_=65536``. Any explicit trim threshold switches off glibc's dynamic mmap
  threshold, so every buffer over 128 KiB is mapped and unmapped on each use. Memory stays low
  (+14 %), but the same run takes 2.8x as long. Worker processes started here get the arena cap
  instead.
* **GDAL's block cache defaults to 5 % of RAM**, and it fills with the decoded COG blocks of every
  dataset handle the run keeps open. Uncapped, peak RSS went from 1029 MB to 2279 MB (+121 %; the
  cap would be 6 GiB on a 128 GiB GPU node). At 64 MB the reads ran as fast: the cache only serves
  blocks that a thread's own handle reads twice along chunk borders.

Operators' ``MALLOC_ARENA_MAX`` and ``GDAL_CACHEMAX`` in the environment win over the settings.
Only glibc has arenas; on other C libraries (musl, macOS) the arena functions change nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of ``M_ARENA_MAX`` (glibc's ``<malloc.h>``)
_M_ARENA_MAX = -8
ARENA_VARIABLE = "MALLOC_ARENA_MAX"
GDAL_CACHE_VARIABLE = "GDAL_CACHEMAX"
#: what Dask's nanny sets and :func:`nanny_environ` removes
_DASK_TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"


def _check(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (0 leaves the library's default), got {value}")


def _operator_arenas() -> int | None:
    """The operator's ``MALLOC_ARENA_MAX`` when it is one glibc accepts (a positive integer)."""
    value = os.environ.get(ARENA_VARIABLE, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this interpreter is linked against
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: no arenas to cap
    return libc


def limit_malloc_arenas(max_arenas: int) -> bool:
    """Cap this process's glibc malloc arenas at ``max_arenas`` from now on; True if applied.

    Threads that start allocating after the call share the existing arenas once the cap is
    reached, so calling it before the Dask threads start is enough. glibc fixes its own limit
    (8 per core) once more than 8 arenas exist; a call after that changes nothing. That is why
    served flow runs also get the variable at process start (:func:`export_to_child_processes`).

    An operator's ``MALLOC_ARENA_MAX`` in the environment wins over ``max_arenas``: glibc applied it
    if it was there at start, and it is applied here in case it was set later.
    ``max_arenas=0`` leaves the allocator alone.
    """
    _check("max_arenas", max_arenas)
    if max_arenas == 0:
        return False
    max_arenas = _operator_arenas() or max_arenas
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(_M_ARENA_MAX, int(max_arenas)))
    if applied:
        log.debug("glibc malloc arenas capped at %d", max_arenas)
    return applied


def limit_gdal_block_cache(megabytes: int) -> bool:
    """Set GDAL's block cache (process-wide, all dataset handles) to ``megabytes``; True if set.

    An operator's ``GDAL_CACHEMAX`` in the environment is left to GDAL, which reads it itself;
    ``megabytes=0`` keeps GDAL's default (5 % of RAM).
    """
    _check("megabytes", megabytes)
    if megabytes == 0 or os.environ.get(GDAL_CACHE_VARIABLE, "").strip():
        return False
    from rasterio.env import set_gdal_config

    set_gdal_config(GDAL_CACHE_VARIABLE, int(megabytes) << 20)  # rasterio passes it to GDALSetCacheMax64 (bytes)
    log.debug("GDAL block cache set to %d MB", megabytes)
    return True


def apply_worker_memory_limits(max_arenas: int, gdal_cachemax_mb: int) -> str:
    """Both limits for this process, before its worker threads start. Returns what is in force, for
    the run's log (operators see there whether their environment or the settings applied)."""
    operator_arenas = _operator_arenas()
    capped = limit_malloc_arenas(max_arenas)
    if operator_arenas:  # glibc applied it at start, whatever the setting says
        arena_text = f"malloc arenas capped at {operator_arenas} (environment)"
    elif capped:
        arena_text = f"malloc arenas capped at {max_arenas}"
    else:
        arena_text = "malloc arenas: glibc default"
    operator_cache = os.environ.get(GDAL_CACHE_VARIABLE)
    if limit_gdal_block_cache(gdal_cachemax_mb):
        cache_text = f"GDAL block cache {gdal_cachemax_mb} MB"
    elif operator_cache:
        cache_text = f"GDAL block cache {operator_cache} (environment)"
    else:
        cache_text = "GDAL block cache: GDAL default"
    return f"{arena_text}, {cache_text}"


def nanny_environ(max_arenas: int, gdal_cachemax_mb: int) -> dict[str, str | None]:
    """Entries for Dask's ``distributed.nanny.pre-spawn-environ``, so that worker processes start
    with the same limits as this process. Dask's ``MALLOC_TRIM_THRESHOLD_`` is removed where the
    arenas are capped (a None value unsets a variable there); a 0 keeps that library's default."""
    _check("max_arenas", max_arenas)
    _check("gdal_cachemax_mb", gdal_cachemax_mb)
    env: dict[str, str | None] = {}
    if max_arenas:
        env[ARENA_VARIABLE] = str(max_arenas)
        env[_DASK_TRIM_VARIABLE] = None
    if gdal_cachemax_mb:
        env[GDAL_CACHE_VARIABLE] = str(gdal_cachemax_mb)  # GDAL reads values under 100000 as MB
    return env


def export_to_child_processes(max_arenas: int, gdal_cachemax_mb: int) -> None:
    """Put the limits in this process's environment for the processes it starts (served flow runs),
    where glibc and GDAL read them at start; values already in the environment are kept."""
    for key, value in nanny_environ(max_arenas, gdal_cachemax_mb).items():
        if value is not None:
            os.environ.setdefault(key, value)
