"""Writing the simulated catalog's files: COGs (in parallel), STAC JSON, datetimes as PC writes them."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape[-2:]
    return a.reshape(*a.shape[:-2], h // k, k, w // k, k).mean(axis=(-3, -1))


def _block_any(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape
    return np.asarray(a.reshape(h // k, k, w // k, k).any(axis=(1, 3)))  # numpy types any(axis=...) as bool or array


def _write_cog(
    path: Path,
    data: np.ndarray,
    *,
    transform: rasterio.Affine,
    crs: CRS,
    nodata: float | int | None,
    resampling: str,
) -> None:
    """Write a single-band COG (deflate, 256 px blocks, overviews): deterministic bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = data.shape
    predictor = 3 if data.dtype.kind == "f" else 2
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="DEFLATE",
        level=1,  # fast; the simulated rasters are small and written often (test fixtures)
        predictor=predictor,
        blocksize=256,
        overview_resampling=resampling,
        num_threads=1,
    ) as ds:
        ds.write(data, 1)


class _CogWriter:
    """Writes COGs on a small thread pool while the caller simulates the next acquisition.

    GDAL releases the GIL while it compresses, so on a multi-core machine writing overlaps with
    the numpy work; each file is independent, so the bytes do not depend on the order.
    """

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        self._futures: list[Future[None]] = []

    def write(self, path: Path, data: np.ndarray, **kwargs: Any) -> None:
        self._futures.append(self._pool.submit(_write_cog, path, data, **kwargs))

    def wait(self) -> None:
        """Block until every submitted file is written; re-raises the first failure."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _quantize(a: np.ndarray, mantissa_bits: int = 10) -> np.ndarray:
    """Zero the low float32 mantissa bits (relative precision ~1e-3, i.e. < 0.005 dB).

    Speckle is incompressible noise; without this the S1 COGs are 4 bytes per pixel and slow to write.
    """
    drop = 23 - mantissa_bits
    bits = a.view(np.uint32)
    bits = (bits + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return bits.view(np.float32)


def _multihash_md5(path: Path) -> str:
    return "d50110" + hashlib.md5(path.read_bytes()).hexdigest()


def _fmt_dt(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pc_space_dt(dt: datetime) -> str:
    """The Planetary Computer S1 RTC items write start/end_datetime with a space instead of ``T``."""
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _parse_dt(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _iso(s: str) -> str:
    return _parse_dt(s).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
