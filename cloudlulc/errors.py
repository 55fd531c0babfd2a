"""The project's exception family and the one test of which errors are worth retrying.

Every error CloudLULC raises on purpose derives from :class:`CloudLULCError`; its message names the
input, what was expected, and the setting or parameter that changes it, so the CLI prints it as one
line. :func:`is_transient_error` tells an orchestrator (Prefect task retries, the CLI) which failures
are network hiccups.
"""

from __future__ import annotations


class CloudLULCError(RuntimeError):
    """Base class of every error CloudLULC raises on purpose."""


_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_WORDS = (
    "timed out",
    "timeout",
    "connection",
    "temporarily",
    "too many requests",
    "reset by peer",
    "curl error",
    "http response code: 5",
    "503",
    "502",
    "504",
)


def is_transient_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a network hiccup worth retrying.

    Catalog errors from pystac-client arrive as ``APIError`` wrapping the requests exception, pixel
    reads as rasterio/GDAL errors with curl messages; bad parameters and missing data are not
    transient and must fail at once rather than after minutes of retries.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        flag = getattr(e, "transient", None)
        if isinstance(flag, bool):  # the raiser knew (cloudlulc.stac.AssetReadError)
            return flag
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        status = getattr(e, "status_code", None)
        if isinstance(status, int):
            if status in _TRANSIENT_HTTP:
                return True
            if 400 <= status < 500:
                return False
        mod = type(e).__module__.split(".")[0]
        name = type(e).__name__
        if mod in ("requests", "urllib3", "httpx", "httpcore", "aiohttp") and any(
            k in name for k in ("Connection", "Timeout", "Transport", "Network", "Protocol", "ReadError")
        ):
            return True
        if name == "StacApiError":  # the API kept failing after HTTP-level retries
            return True
        if mod in ("rasterio", "pystac_client") or name in (
            "APIError",
            "RasterioIOError",
            "CPLE_HttpResponseError",
            "AssetReadError",
        ):
            msg = str(e).lower()
            if any(w in msg for w in _TRANSIENT_WORDS):
                return True
        e = e.__cause__ or e.__context__
    return False
