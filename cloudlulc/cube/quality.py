"""What went into each pixel of a map: the ``input_quality`` bit flags.

A land-cover map made from radar alone, or from an optical pixel under cloud, deserves less trust
than one made from a clear optical view plus radar. ``input_quality`` says, per pixel, which inputs
the network had, so that users (and the quicklook) can tell a fused pixel from a radar-only one:

=====  ========================  ===================================================================
bit    meaning                   set where
=====  ========================  ===================================================================
1      optical_clear             some Sentinel-2 band has a value and SCL says clear (not 3, 8, 9, 10)
2      optical_cloud_or_shadow   some Sentinel-2 band has a value and SCL says cloud, cirrus or shadow
4      optical_missing           no Sentinel-2 band has a value (outside the tiles, dropped, no data)
8      sar_observed              some Sentinel-1 band has a value
16     sar_missing               no Sentinel-1 band has a value (no pass paired, outside the frames)
=====  ========================  ===================================================================

Every mapped pixel has exactly one optical bit (1, 2 or 4; an optical value with SCL nodata gets
neither 1 nor 2) and one SAR bit (8 or 16); 0 means "not written".
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

__all__ = [
    "INPUT_QUALITY_ATTRS",
    "INPUT_QUALITY_FILL",
    "OPTICAL_CLEAR",
    "OPTICAL_CLOUDY",
    "OPTICAL_MISSING",
    "SAR_MISSING",
    "SAR_OBSERVED",
    "input_fractions",
    "input_quality",
    "input_quality_array",
    "quality_flags",
]

OPTICAL_CLEAR = 1
OPTICAL_CLOUDY = 2
OPTICAL_MISSING = 4
SAR_OBSERVED = 8
SAR_MISSING = 16
#: value of pixels not written
INPUT_QUALITY_FILL = 0

#: CF attributes of the ``input_quality`` variable
INPUT_QUALITY_ATTRS = {
    "long_name": "inputs the map rests on, per pixel (bit flags)",
    "flag_masks": [OPTICAL_CLEAR, OPTICAL_CLOUDY, OPTICAL_MISSING, SAR_OBSERVED, SAR_MISSING],
    "flag_meanings": "optical_clear optical_cloud_or_shadow optical_missing sar_observed sar_missing",
}


def quality_flags(optical: np.ndarray, sar: np.ndarray | None, cloud: np.ndarray | None) -> np.ndarray:
    """(y, x) uint8 flags from ``optical`` (band, y, x) and ``sar`` (band, y, x) with NaN nodata and
    ``cloud`` (y, x) uint8 (1 cloud or shadow, 0 clear, other values unknown)."""
    has_optical = ~np.isnan(optical).all(axis=0)
    out = np.where(has_optical, 0, OPTICAL_MISSING).astype(np.uint8)
    if cloud is not None:
        out[has_optical & (cloud == 0)] |= OPTICAL_CLEAR
        out[has_optical & (cloud == 1)] |= OPTICAL_CLOUDY
    else:
        out[has_optical] |= OPTICAL_CLEAR
    has_sar = np.zeros(has_optical.shape, bool) if sar is None else ~np.isnan(sar).all(axis=0)
    out |= np.where(has_sar, SAR_OBSERVED, SAR_MISSING).astype(np.uint8)
    return out


def input_quality(cube: xr.Dataset) -> xr.DataArray:
    """Lazy (y, x) ``input_quality`` of a :func:`~cloudlulc.cube.build_cube` cube, chunked like its
    optical variable (see the module docstring)."""
    optical = _dask(cube["optical"].transpose("band", "y", "x")).rechunk({0: -1})
    yx = optical.chunks[1:]
    sar = (
        _dask(cube["sar"].transpose("sar_band", "y", "x")).rechunk({0: -1, 1: yx[0], 2: yx[1]})
        if "sar" in cube
        else None
    )
    cloud = _dask(cube["cloud"].transpose("y", "x")).rechunk(yx) if "cloud" in cube else None
    coords = {k: v for k, v in cube["optical"].coords.items() if set(v.dims) <= {"y", "x"}}
    data = input_quality_array(optical, sar, cloud)
    return xr.DataArray(data, dims=("y", "x"), coords=coords, attrs=dict(INPUT_QUALITY_ATTRS), name="input_quality")


def input_quality_array(optical: da.Array, sar: da.Array | None, cloud: da.Array | None) -> da.Array:
    """(y, x) uint8 flags from dask arrays chunked alike in (y, x), with one chunk along their band
    axis: ``optical`` and ``sar`` (band, y, x), ``cloud`` (y, x). A task per chunk."""
    args: list[Any] = [optical, "byx"]
    if sar is not None:
        args += [sar, "syx"]
    if cloud is not None:
        args += [cloud, "yx"]

    def block(o: np.ndarray, *rest: np.ndarray) -> np.ndarray:
        it = iter(rest)
        s = next(it) if sar is not None else None
        c = next(it) if cloud is not None else None
        return quality_flags(o, s, c)

    return da.blockwise(block, "yx", *args, concatenate=True, dtype=np.uint8)


def _dask(var: xr.DataArray) -> da.Array:
    data = var.data
    return data if isinstance(data, da.Array) else da.from_array(np.asarray(data))


def input_fractions(flags: np.ndarray, mapped: np.ndarray | None = None) -> dict[str, float]:
    """Share (0..1) of the ``mapped`` pixels (default: every written pixel) with each input state:
    ``optical_clear``, ``optical_cloud_or_shadow``, ``optical_missing``, ``sar_missing``."""
    flags = np.asarray(flags)
    sel = flags != INPUT_QUALITY_FILL if mapped is None else np.asarray(mapped) & (flags != INPUT_QUALITY_FILL)
    n = int(sel.sum())
    names = {
        "optical_clear": OPTICAL_CLEAR,
        "optical_cloud_or_shadow": OPTICAL_CLOUDY,
        "optical_missing": OPTICAL_MISSING,
        "sar_missing": SAR_MISSING,
    }
    if n == 0:
        return dict.fromkeys(names, 0.0)
    values = flags[sel]
    return {name: round(float(np.count_nonzero(values & bit)) / n, 4) for name, bit in names.items()}
