"""GDAL options for reading assets: timeouts, GDAL's own HTTP retries and caching.

They are captured once, where a cube is built (:func:`gdal_env`), into a stackstac ``LayeredEnv``
that stackstac hands to every reader: the options travel with the tasks to whatever worker reads,
instead of being set per process.
"""

from __future__ import annotations

from dataclasses import dataclass

from stackstac import LayeredEnv

__all__ = ["HttpOptions", "gdal_env"]


@dataclass(frozen=True)
class HttpOptions:
    """Network behaviour of pixel reads (GDAL ``/vsicurl``)."""

    #: seconds for one HTTP request (GDAL_HTTP_TIMEOUT) and for connecting (GDAL_HTTP_CONNECTTIMEOUT)
    timeout_s: float = 60.0
    connect_timeout_s: float = 15.0
    #: GDAL's own retries of HTTP 429/502/503/504 and their first delay
    max_retry: int = 3
    retry_delay_s: float = 1.0


def gdal_env(http: HttpOptions = HttpOptions()) -> LayeredEnv:
    """The ``LayeredEnv`` for stackstac readers: stackstac's defaults plus ``http``.

    ``GDAL_DISABLE_READDIR_ON_OPEN`` stops GDAL listing the directory of every COG; ``VSI_CACHE``
    is on for opening (each thread opens its own handle, the headers come from the cache) and off
    for pixel reads, which are not read twice.
    """
    always: dict[str, str | bool | int | float] = {
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_TIMEOUT": str(max(1, round(http.timeout_s))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(http.connect_timeout_s))),
        "GDAL_HTTP_MAX_RETRY": str(http.max_retry),
        "GDAL_HTTP_RETRY_DELAY": str(http.retry_delay_s),
    }
    return LayeredEnv(
        always=always,
        open={"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "VSI_CACHE": True},
        read={"VSI_CACHE": False},
    )
