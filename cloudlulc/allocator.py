"""glibc malloc settings for long chunked runs: bounded memory without slowing the workers.

Why this exists (measured with ``benchmarks/inference.py``'s memory runs, tiny network, threaded
scheduler, 2 cores, 2048 and 8192 px AOIs):

* **glibc's defaults let memory grow with the AOI.** Every thread that allocates gets its own malloc
  arena (up to 8 per core), and an arena keeps what was freed in it. Chunk reads, tile batches and
  Zarr codec buffers are allocated on the Dask threads, Zarr's threads and the main thread, so
  more arenas fill up as a run goes on. Peak RSS went from 1199 MB to 1697 MB for 16x the area
  (+42 %).
* **Capping the arenas keeps memory bounded at the same speed.** With two arenas, peak RSS went
  from 940 MB to 1118 MB (+19 %), and the runs took the same time (3.3 and 50.8 s).
* **Dask's nanny trims aggressively, which costs CPU.** Its worker processes start with
  ``MALLOC_TRIM_THRESHOLD_=65536``. Any explicit trim threshold also switches off glibc's
  dynamic mmap threshold, so every buffer over 128 KiB is mapped and unmapped each time it is
  used. Memory stays low (831 -> 951 MB, +14 %), but the same run takes 2.8x as long: 9.7 s
  against 3.4 s, with 13 s of system time. :func:`nanny_environ` undoes that for workers this
  package starts, and ``deploy/dask/dask.yaml`` does it for the container image.

Only glibc is tuned; on other C libraries (musl, macOS) the functions here change nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of ``M_ARENA_MAX`` (glibc's ``<malloc.h>``)
_M_ARENA_MAX = -8
#: what Dask's nanny sets and :func:`nanny_environ` removes
_DASK_TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"
ARENA_VARIABLE = "MALLOC_ARENA_MAX"


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
    served flow runs also get the variable at process start (``flows.serve``).

    An operator's ``MALLOC_ARENA_MAX`` in the environment wins over ``max_arenas``: glibc applied it
    if it was there at start, and it is applied here in case it was set later.
    ``max_arenas=0`` leaves the allocator alone.
    """
    if max_arenas < 0:
        raise ValueError(f"max_arenas must be >= 0 (0 leaves glibc's default), got {max_arenas}")
    if max_arenas == 0:
        return False
    operator = os.environ.get(ARENA_VARIABLE, "").strip()
    if operator.isdigit() and int(operator) > 0:
        max_arenas = int(operator)
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(_M_ARENA_MAX, int(max_arenas)))
    if applied:
        log.debug("glibc malloc arenas capped at %d", max_arenas)
    return applied


def nanny_environ(max_arenas: int) -> dict[str, str | None]:
    """Entries for Dask's ``distributed.nanny.pre-spawn-environ`` so that worker processes get the
    same allocator as this process: ``MALLOC_ARENA_MAX`` set and Dask's ``MALLOC_TRIM_THRESHOLD_``
    removed (a None value unsets a variable there). Empty for ``max_arenas=0``, which keeps Dask's
    defaults."""
    if max_arenas < 0:
        raise ValueError(f"max_arenas must be >= 0 (0 leaves glibc's default), got {max_arenas}")
    if max_arenas == 0:
        return {}
    return {ARENA_VARIABLE: str(max_arenas), _DASK_TRIM_VARIABLE: None}


def export_arena_cap(max_arenas: int) -> None:
    """Put ``MALLOC_ARENA_MAX`` in this process's environment for the processes it starts (served
    flow runs), where glibc applies it before their first thread; an operator's value is kept."""
    if max_arenas < 0:
        raise ValueError(f"max_arenas must be >= 0 (0 leaves glibc's default), got {max_arenas}")
    if max_arenas:
        os.environ.setdefault(ARENA_VARIABLE, str(max_arenas))
