"""Pixel conversions: Sentinel-2 DN to reflectance, Sentinel-1 linear power to dB, SCL to a cloud mask.

Pure numpy (and xarray where noted), elementwise, so they run per chunk anywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from cloudlulc.classes import NODATA, SCL_CLOUD_CLASSES, SCL_NODATA
from cloudlulc.stac.errors import CatalogError

#: processing baselines >= 04.00 (January 2022 on) add 1000 to every L2A DN
BASELINE_OFFSET_FROM = (4, 0)


S2_BOA_OFFSET = 1000.0


S2_QUANTIFICATION = 10000.0


SAR_DB_RANGE = (-50.0, 10.0)


def baseline_offset(item: dict) -> float:
    """The DN offset of an L2A item: 1000 for ``s2:processing_baseline`` >= 04.00, else 0."""
    raw = item.get("properties", {}).get("s2:processing_baseline")
    if raw is None:
        raise CatalogError(
            f"Sentinel-2 item {item.get('id')!r} has no s2:processing_baseline; cannot tell whether its DN "
            "carry the +1000 offset (baseline >= 04.00)."
        )
    try:
        major, minor = (int(p) for p in str(raw).split(".")[:2])
    except ValueError:
        raise CatalogError(f"Unparseable s2:processing_baseline {raw!r} on {item.get('id')!r}.") from None
    return S2_BOA_OFFSET if (major, minor) >= BASELINE_OFFSET_FROM else 0.0


def harmonise_s2(dn: np.ndarray | xr.DataArray, offset: float | np.ndarray) -> Any:
    """L2A DN -> surface reflectance: (DN - offset) / 10000, DN 0 (nodata) -> NaN, as float32.

    ``offset`` broadcasts against ``dn`` (one value, or one per item along a leading axis). The
    numpy path makes one float32 array and works in place: it runs per chunk on every cube.
    """
    if isinstance(dn, xr.DataArray):
        return xr.apply_ufunc(harmonise_s2, dn, offset, dask="parallelized", output_dtypes=[np.float32])
    dn = np.asarray(dn)
    out = np.subtract(dn, np.asarray(offset, dtype=np.float32), dtype=np.float32)
    out /= np.float32(S2_QUANTIFICATION)
    with np.errstate(invalid="ignore"):
        np.copyto(out, np.float32(np.nan), where=~(dn > 0))  # DN 0 and NaN (outside the asset)
    return out


def linear_to_db(linear: np.ndarray | xr.DataArray) -> Any:
    """Sentinel-1 RTC gamma0 linear power -> dB clipped to [-50, 10]; nodata (-32768) and <= 0 -> NaN."""
    lo, hi = SAR_DB_RANGE
    if isinstance(linear, xr.DataArray):
        valid = linear.where(linear > 0)
        return (10.0 * np.log10(valid)).clip(lo, hi).astype(np.float32)
    lin = np.asarray(linear, dtype=np.float32)
    out = np.full(lin.shape, np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        positive = lin > 0  # NaN compares False
    np.log10(lin, out=out, where=positive)
    out *= np.float32(10.0)
    return np.clip(out, np.float32(lo), np.float32(hi), out=out)  # NaN stays NaN


def cloud_from_scl(scl: np.ndarray | xr.DataArray) -> Any:
    """SCL -> cloud mask: 1 for classes 3, 8, 9, 10 (shadow, cloud, cirrus), 0 otherwise, 255 where SCL is 0."""
    is_cloud = np.isin(scl, SCL_CLOUD_CLASSES) if not isinstance(scl, xr.DataArray) else scl.isin(SCL_CLOUD_CLASSES)
    out = xr.where(scl == SCL_NODATA, np.uint8(NODATA), is_cloud.astype(np.uint8))
    return out.astype(np.uint8)
