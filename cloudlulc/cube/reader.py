"""A stackstac ``Reader`` (its public protocol) with aligned reads, retries and token-free errors.

stackstac creates one reader per (item, asset) and calls :meth:`AssetReader.read` with windows of
the target grid from many threads. Each thread gets its own GDAL handle. Assets already on the
target grid are read without the warper (:mod:`cloudlulc.cube.aligned`); others through a
``WarpedVRT``, as stackstac's own reader does.

Transient failures (HTTP 5xx, timeouts, dropped connections) are retried a bounded number of times,
each retry on a handle opened afresh with GDAL's ``/vsicurl`` cache bypassed for that URL (GDAL
replays a cached failure otherwise). GDAL's own HTTP retries (``GDAL_HTTP_MAX_RETRY``) come first,
through the GDAL options in ``gdal_env`` (:func:`cloudlulc.cube.gdal.gdal_env`), which travel with
the readers in the Dask graph. Errors name the unsigned href, never a token.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from cloudlulc.cube.aligned import AlignedSource, aligned_source, read_aligned
from cloudlulc.errors import is_transient_error
from cloudlulc.stac.errors import AssetReadError
from cloudlulc.stac.urls import redact, redact_library_logs, redact_url

logger = logging.getLogger(__name__)
redact_library_logs()

__all__ = ["AssetReadWarning", "AssetReader", "ReadRetry"]


class AssetReadWarning(UserWarning):
    """An unreadable asset was mapped as nodata (``errors_as_nodata=True``)."""


@dataclass(frozen=True)
class ReadRetry:
    """How often a transient read failure is retried on a fresh handle, and the wait before each."""

    attempts: int = 3
    delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.delay_s < 0:
            raise ValueError(f"read retries and their delay must be >= 0, got {self.attempts}, {self.delay_s}")


class _Handle:
    """One thread's open asset: the dataset, and how to read target windows from it."""

    def __init__(self, ds: Any, aligned: AlignedSource | None, vrt: WarpedVRT | None) -> None:
        self.ds, self.aligned, self.vrt = ds, aligned, vrt

    def close(self) -> None:
        for obj in (self.vrt, self.ds):
            if obj is not None:
                obj.close()


def _matches(exc: BaseException, patterns: tuple[Exception, ...]) -> bool:
    """stackstac's ``errors_as_nodata`` rule: same type and the pattern's text as a regex."""
    return any(isinstance(exc, type(p)) and re.match(str(p), str(exc)) for p in patterns)


class AssetReader:
    """Reads windows of the target grid from one single-band asset (stackstac ``Reader`` protocol).

    ``retry`` is not part of stackstac's protocol: bind it with ``functools.partial`` (as
    :func:`cloudlulc.cube.stack.reader_table` does) when another policy is wanted.
    """

    #: read assets already on the target grid without the warper (same values; off to compare)
    aligned_reads: bool = True

    def __init__(
        self,
        *,
        url: str,
        spec: Any,
        resampling: Resampling,
        dtype: np.dtype,
        fill_value: int | float,
        scale_offset: tuple[int | float, int | float],
        gdal_env: Any = None,
        errors_as_nodata: tuple[Exception, ...] = (),
        retry: ReadRetry = ReadRetry(),
    ) -> None:
        from stackstac import DEFAULT_GDAL_ENV

        self.url = url
        self.spec = spec
        self.resampling = Resampling(resampling)
        self.dtype = np.dtype(dtype)
        self.fill_value = fill_value
        self.scale_offset = scale_offset
        self.gdal_env = gdal_env or DEFAULT_GDAL_ENV
        self.errors_as_nodata = tuple(errors_as_nodata)
        self.retry = retry
        self._local = threading.local()
        self._handles: list[_Handle] = []
        self._lock = threading.Lock()

    # -- pickling: the configuration travels, never the handles ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "spec": self.spec,
            "resampling": self.resampling,
            "dtype": self.dtype,
            "fill_value": self.fill_value,
            "scale_offset": self.scale_offset,
            "gdal_env": self.gdal_env,
            "errors_as_nodata": self.errors_as_nodata,
            "retry": self.retry,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- the protocol ------------------------------------------------------------------------------
    def read(self, window: Window) -> np.ndarray:
        """The ``window`` (target-grid pixels) as ``dtype``, nodata as ``fill_value``."""
        failures = 0
        while True:
            try:
                return self._read(window, fresh=failures > 0)
            except Exception as exc:
                if _worth_retrying(exc, self.url) and failures < self.retry.attempts:
                    failures += 1
                    logger.info(
                        "transient error reading %s (%s); retry %d of %d on a fresh handle",
                        redact_url(self.url),
                        type(exc).__name__,
                        failures,
                        self.retry.attempts,
                    )
                    self._drop_handle()
                    time.sleep(self.retry.delay_s * failures)
                    continue
                return self._failed(window, exc, failures)

    @property
    def aligned(self) -> bool | None:
        """Whether this thread's open handle reads without the warper (None: not opened yet)."""
        handle = getattr(self._local, "handle", None)
        return None if handle is None else handle.aligned is not None

    def close(self) -> None:
        """Close every thread's handle."""
        with self._lock:
            handles, self._handles = self._handles, []
        for h in handles:
            h.close()
        self._local = threading.local()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- internals ---------------------------------------------------------------------------------
    def _read(self, window: Window, fresh: bool) -> np.ndarray:
        handle = self._handle(fresh)
        scale, offset = (float(v) for v in self.scale_offset)
        with self.gdal_env.read:
            if handle.aligned is not None:
                return read_aligned(handle.ds, handle.aligned, window, self.dtype, self.fill_value, (scale, offset))
            assert handle.vrt is not None
            result = handle.vrt.read(window=window, out_dtype=self.dtype, masked=True)
        if result.shape[0] == 2:  # no nodata value: the VRT's alpha band marks what lies outside
            result = np.ma.masked_array(result[0], mask=result[1] == 0)
        else:
            result = result[0]
        if scale != 1:
            result *= scale
        if offset != 0:
            result += offset
        return np.ma.filled(result, fill_value=self.fill_value).astype(self.dtype, copy=False)

    def _handle(self, fresh: bool) -> _Handle:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._open(fresh)
            self._local.handle = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def _drop_handle(self) -> None:
        handle = getattr(self._local, "handle", None)
        if handle is not None:
            self._local.handle = None
            with self._lock:
                if handle in self._handles:
                    self._handles.remove(handle)
            handle.close()

    def _open(self, fresh: bool) -> _Handle:
        options = {"CPL_VSIL_CURL_NON_CACHED": _vsi_path(self.url)} if fresh else {}
        with self.gdal_env.open, rasterio.Env(**options):
            ds = rasterio.open(self.url, sharing=False)
            if ds.count != 1:
                count = ds.count
                ds.close()
                raise ValueError(f"assets must have exactly 1 band; {redact_url(self.url)} has {count}")
            epsg, transform = self.spec.epsg, self.spec.transform
            aligned = aligned_source(ds, epsg, transform, self.resampling) if self.aligned_reads else None
            if aligned is not None:
                return _Handle(ds, aligned, None)
        height, width = self.spec.shape
        with self.gdal_env.open_vrt, rasterio.Env(**options):
            vrt = WarpedVRT(
                ds,
                sharing=False,
                resampling=self.resampling,
                add_alpha=ds.nodata is None,
                crs=rasterio.crs.CRS.from_epsg(epsg),
                transform=transform,
                height=height,
                width=width,
            )
        return _Handle(ds, None, vrt)

    def _failed(self, window: Window, exc: BaseException, retries: int) -> np.ndarray:
        href = redact_url(self.url)
        chain = _chain(exc)
        cause = chain[1] if len(chain) > 1 and exc.__cause__ is not None else exc
        root = chain[-1]
        detail = redact(f"{type(cause).__name__}: {cause}" + (f" ({root})" if root is not cause else ""))
        if retries:
            detail += f" (after {retries} retries on fresh handles)"
        if self.errors_as_nodata and _matches(cause, self.errors_as_nodata):
            msg = f"Asset {href} unreadable ({detail}); mapped as nodata (errors_as_nodata=True)"
            logger.warning(msg)
            warnings.warn(msg, AssetReadWarning, stacklevel=3)
            return np.full((int(window.height), int(window.width)), self.fill_value, dtype=self.dtype)
        raise AssetReadError(href, detail, transient=_worth_retrying(exc, self.url)) from None


#: errors that a second try cannot mend: the asset is missing, forbidden, or not a raster
_PERMANENT = re.compile(
    r"HTTP response code: (400|401|403|404|410)|not recognized as being in a supported file format"
    r"|does not exist|No such file|exactly 1 band",
    re.IGNORECASE,
)


_REMOTE_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs", "/vsihdfs")


def is_remote(url: str) -> bool:
    """Whether ``url`` is read over the network (a URL or a GDAL network ``/vsi`` path)."""
    return ("://" in url and not url.startswith("file://")) or url.startswith(_REMOTE_VSI)


def _worth_retrying(exc: BaseException, url: str) -> bool:
    """Whether a failed open or read of ``url`` may succeed on a fresh handle.

    Over the network GDAL reports a dropped connection, a timeout or a truncated body only as a
    failed tile read ("got 0 bytes, expected N"), so every failure of a remote read is retried
    except the ones no retry mends (404, 403, not a raster). Local files are not retried.
    """
    if _PERMANENT.search(" ".join(str(e) for e in _chain(exc))):
        return False
    return is_remote(url) or is_transient_error(exc)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _vsi_path(url: str) -> str:
    """The GDAL virtual path of a URL, as ``CPL_VSIL_CURL_NON_CACHED`` names files."""
    return f"/vsicurl/{url}" if url.startswith(("http://", "https://")) else url
