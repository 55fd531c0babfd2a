"""Process-wide memory settings of the processes that read and infer, applied where workers start.

Two settings decide whether peak memory stays bounded by the chunk size or grows with the AOI
(figures in ``docs/performance.md``), and neither can be set per task:

* GDAL's block cache (``gdal_cachemax_mb``): GDAL's default, 5 % of RAM, fills with the decoded
  blocks of every COG handle a run keeps open.
* glibc's malloc arenas (``malloc_arena_max``, opt-in): each allocating thread may get an arena
  that keeps what was freed in it.

They are applied in this process before Dask's threads start (:func:`apply_worker_limits`), given to
worker processes through Dask's nanny (:func:`nanny_environ`) and to served flow runs through the
environment (:func:`export_to_child_processes`). An operator's ``MALLOC_ARENA_MAX`` or
``GDAL_CACHEMAX`` in the environment wins.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

__all__ = ["apply_worker_limits", "export_to_child_processes", "nanny_environ"]

#: ``mallopt`` parameter number of ``M_ARENA_MAX`` (glibc's ``<malloc.h>``)
_M_ARENA_MAX = -8
ARENA_VARIABLE = "MALLOC_ARENA_MAX"
GDAL_CACHE_VARIABLE = "GDAL_CACHEMAX"
#: what Dask's nanny sets (it makes every buffer over 128 KiB an mmap); removed where arenas are capped
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
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: no arenas to cap
    return libc


def limit_malloc_arenas(max_arenas: int) -> bool:
    """Cap this process's glibc malloc arenas at ``max_arenas`` from now on; True if applied.

    Threads that start allocating after the call share the existing arenas once the cap is reached,
    so calling it before the Dask threads start is enough. An operator's ``MALLOC_ARENA_MAX`` wins;
    ``max_arenas=0`` leaves the allocator alone.
    """
    _check("max_arenas", max_arenas)
    if max_arenas == 0:
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(_M_ARENA_MAX, int(_operator_arenas() or max_arenas)))
    if applied:
        log.debug("glibc malloc arenas capped at %d", _operator_arenas() or max_arenas)
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

    set_gdal_config(GDAL_CACHE_VARIABLE, int(megabytes) << 20)  # rasterio passes bytes to GDALSetCacheMax64
    log.debug("GDAL block cache set to %d MB", megabytes)
    return True


def apply_worker_limits(max_arenas: int, gdal_cachemax_mb: int) -> str:
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
