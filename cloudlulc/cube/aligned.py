"""Windowed reads of assets that already sit on the target grid, without GDAL's warper.

Sentinel-2 L2A and Sentinel-1 RTC assets are usually on the very UTM grid a cube asks for (same
EPSG, pixel edges on 10 m multiples): the 10 m bands need no resampling and the 20 m / 60 m bands
only an integer-factor upsampling. For those the warper's per-pixel coordinate transformation is
pure overhead, so :func:`grid_alignment` recognises the case and :func:`read_aligned` serves the
window with a plain windowed read, upsampling in numpy (:func:`upsample`) with the warper's
kernel and nodata rule. The result equals the warped read (bit for bit at 10 m and 20 m, within
one DN at 60 m; ``tests/test_aligned_read.py``). Anything else keeps the warper
(:mod:`cloudlulc.cube.reader`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

__all__ = ["FAST_RESAMPLING", "AlignedSource", "GridAlignment", "aligned_source", "grid_alignment", "read_aligned"]

#: kernels for which a windowed read equals the warper on an aligned grid
FAST_RESAMPLING = frozenset({Resampling.nearest, Resampling.bilinear})
_TOL = 1e-6  # in target pixels: transforms come from JSON and float arithmetic


@dataclass(frozen=True)
class GridAlignment:
    """Where an asset sits on the target grid, in target pixels.

    The asset's pixel ``(r, c)`` covers target rows ``row0 + r*ky ... row0 + (r+1)*ky`` (likewise
    columns): ``row0``/``col0`` are integers and ``ky``/``kx`` the integer upsampling factors.
    """

    row0: int
    col0: int
    ky: int
    kx: int
    height: int  # asset size in target pixels
    width: int


def _integer(value: float) -> int | None:
    r = round(value)
    return int(r) if abs(value - r) <= _TOL else None


def grid_alignment(
    ds_crs_epsg: int | None,
    ds_transform: Affine,
    ds_shape: tuple[int, int],
    target_epsg: int,
    target_transform: Affine,
) -> GridAlignment | None:
    """The alignment of an asset with the target grid, or None when a warp is needed.

    Aligned means: same EPSG, both grids north-up, the asset's pixel size an integer multiple (>= 1)
    of the target's, and the asset's pixel edges on target pixel edges.
    """
    if ds_crs_epsg is None or ds_crs_epsg != target_epsg:
        return None
    a, b, c, d, e, f = ds_transform[:6]
    ta, tb, tc, td, te, tf = target_transform[:6]
    if b != 0 or d != 0 or tb != 0 or td != 0 or not (a > 0 and e < 0 and ta > 0 and te < 0):
        return None
    kx, ky = _integer(a / ta), _integer(e / te)
    col0, row0 = _integer((c - tc) / ta), _integer((f - tf) / te)
    if kx is None or ky is None or kx < 1 or ky < 1 or col0 is None or row0 is None:
        return None
    h, w = ds_shape
    return GridAlignment(row0=row0, col0=col0, ky=ky, kx=kx, height=h * ky, width=w * kx)


@dataclass(frozen=True)
class AlignedSource:
    """What :func:`read_aligned` needs to know of an open asset besides its handle."""

    alignment: GridAlignment
    resampling: Resampling
    src_dtype: np.dtype
    nodata: float | None


def aligned_source(
    ds: rasterio.DatasetReader, target_epsg: int, target_transform: Affine, resampling: Resampling
) -> AlignedSource | None:
    """An :class:`AlignedSource` when the open ``ds`` can be read without the warper, else None.

    Datasets whose validity comes from an alpha band or a per-dataset mask keep the warper (it reads
    those masks; a plain read would not).
    """
    if Resampling(resampling) not in FAST_RESAMPLING or ds.count != 1:
        return None
    if not set(ds.mask_flag_enums[0]) <= {MaskFlags.all_valid, MaskFlags.nodata}:
        return None
    epsg = ds.crs.to_epsg() if ds.crs else None
    alignment = grid_alignment(epsg, ds.transform, (ds.height, ds.width), target_epsg, target_transform)
    if alignment is None:
        return None
    return AlignedSource(alignment, Resampling(resampling), np.dtype(ds.dtypes[0]), ds.nodata)


def _is_nodata(values: np.ndarray, nodata: float, src_dtype: np.dtype) -> np.ndarray:
    """Pixels equal to the asset's nodata (as stored in the source dtype), in ``values`` of the
    source dtype or of one it converts to exactly."""
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.isnan(values)
    return values == np.asarray(nodata).astype(src_dtype).astype(values.dtype)


def read_aligned(
    ds: rasterio.DatasetReader,
    src: AlignedSource,
    window: Window,
    dtype: Any,
    fill_value: Any,
    scale_offset: tuple[float, float] = (1.0, 0.0),
) -> np.ndarray:
    """The target-grid ``window`` of the asset as ``dtype``: nodata and pixels outside the asset set
    to ``fill_value``, ``scale``/``offset`` applied to valid pixels (what a masked warped read gives).

    The window is written once and a mask exists only where the source has nodata: this runs for
    every band of every chunk.
    """
    al = src.alignment
    dtype = np.dtype(dtype)
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    y0, y1 = max(r0, al.row0), min(r0 + h, al.row0 + al.height)
    x0, x1 = max(c0, al.col0), min(c0 + w, al.col0 + al.width)
    if not (y0 < y1 and x0 < x1):
        return np.full((h, w), fill_value, dtype=dtype)
    native = Window((x0 - al.col0) / al.kx, (y0 - al.row0) / al.ky, (x1 - x0) / al.kx, (y1 - y0) / al.ky)
    plain = al.ky == 1 and al.kx == 1 and tuple(scale_offset) == (1, 0)
    if plain and (y0, y1, x0, x1) == (r0, r0 + h, c0, c0 + w) and np.can_cast(src.src_dtype, dtype, "safe"):
        # the usual 10 m band inside the asset: GDAL decodes straight into the output
        out = np.empty((h, w), dtype=dtype)
        ds.read(1, window=native, out=out)
        if src.nodata is not None:
            missing = _is_nodata(out, src.nodata, src.src_dtype)
            if missing.any():
                out[missing] = fill_value
        return out
    out = np.full((h, w), fill_value, dtype=dtype)
    part: np.ndarray
    invalid: np.ndarray | None
    if al.ky == 1 and al.kx == 1:
        part = ds.read(1, window=native, out_dtype=src.src_dtype)
        invalid = _is_nodata(part, src.nodata, src.src_dtype) if src.nodata is not None else None
    else:
        part, invalid = _read_upsampled(ds, src, y0, y1, x0, x1)
    if invalid is not None and not invalid.any():
        invalid = None
    scale, offset = scale_offset
    if scale != 1 or offset != 0:  # as stackstac: in the output dtype, valid pixels only
        part = part.astype(dtype)
        if scale != 1:
            part *= scale
        if offset != 0:
            part += offset
    region = out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
    np.copyto(region, part, casting="unsafe", where=True if invalid is None else ~invalid)
    return out


def _read_upsampled(
    ds: rasterio.DatasetReader, src: AlignedSource, y0: int, y1: int, x0: int, x1: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Target rows ``y0:y1`` x columns ``x0:x1`` (inside the asset) of the upsampled band and its
    nodata mask (None: the asset has no nodata value). Nearest keeps the source dtype; bilinear
    values are floats, rounded as GDAL rounds resampled integers when the source is integer.

    One native read of the source pixels under the window plus a one-pixel margin (the bilinear
    neighbours); at the asset's edge the edge pixel stands in for the missing neighbour, which is
    what the warper's renormalisation over in-asset pixels amounts to.
    """
    al = src.alignment
    r0, r1 = (y0 - al.row0) // al.ky, (y1 - 1 - al.row0) // al.ky + 1  # source rows under the window
    c0, c1 = (x0 - al.col0) // al.kx, (x1 - 1 - al.col0) // al.kx + 1
    m = 1 if src.resampling == Resampling.bilinear else 0
    er0, er1 = max(r0 - m, 0), min(r1 + m, ds.height)
    ec0, ec1 = max(c0 - m, 0), min(c1 + m, ds.width)
    native = ds.read(1, window=Window(ec0, er0, ec1 - ec0, er1 - er0), out_dtype=src.src_dtype)
    if m:
        pad = ((m - (r0 - er0), m - (er1 - r1)), (m - (c0 - ec0), m - (ec1 - c1)))
        if any(any(p) for p in pad):
            native = np.pad(native, pad, mode="edge")
    nodata = _is_nodata(native, src.nodata, src.src_dtype) if src.nodata is not None else None
    valid = None if nodata is None or not nodata.any() else ~nodata
    values = upsample(native, al.ky, al.kx, src.resampling, valid)
    if np.issubdtype(src.src_dtype, np.integer) and values.dtype != src.src_dtype:
        values += 0.5  # GDAL's rounding of resampled integers (half up), in place
        np.floor(values, out=values)
    # the upsampled array covers source rows r0:r1 (columns c0:c1): cut the window out of it
    oy, ox = (y0 - al.row0) - r0 * al.ky, (x0 - al.col0) - c0 * al.kx
    cut = (slice(oy, oy + (y1 - y0)), slice(ox, ox + (x1 - x0)))
    invalid = None
    if nodata is not None:
        inner = nodata[m : nodata.shape[0] - m, m : nodata.shape[1] - m]
        invalid = np.repeat(np.repeat(inner, al.ky, axis=0), al.kx, axis=1)[cut]
    return values[cut], invalid


def _bilinear_axis0(values: np.ndarray, k: int) -> np.ndarray:
    """Upsample along axis 0 by the integer ``k`` with the bilinear kernel; ``values`` carries one
    margin row on each side (the neighbours), the result has ``k`` rows per inner row.

    A target pixel centre sits at ``(m + 0.5) / k - 0.5`` source pixels from its source pixel's
    centre (phase ``m``), so every phase is one weighted sum of two shifted views: no index arrays.
    """
    n = values.shape[0] - 2
    out = np.empty((n * k,) + values.shape[1:], dtype=values.dtype)
    centre = values[1:-1]
    for m in range(k):
        f = (m + 0.5) / k - 0.5
        neighbour = values[:-2] if f < 0 else values[2:]
        rows = out[m::k]
        np.multiply(centre, values.dtype.type(1 - abs(f)), out=rows)
        rows += values.dtype.type(abs(f)) * neighbour
    return out


def upsample(
    native: np.ndarray, ky: int, kx: int, resampling: Resampling, valid: np.ndarray | None = None
) -> np.ndarray:
    """Upsample a 2-D array by integer factors as GDAL's warper does on an aligned grid.

    ``nearest`` repeats each pixel. ``bilinear`` (``native`` with a one-pixel margin all round, the
    result without it) weighs the two nearest source pixels along each axis by distance; where
    ``valid`` is given, invalid neighbours are left out and the weights of the valid ones
    renormalised (the warper's rule; pixels without any valid neighbour come out as 0 and are the
    caller's to mask). The bilinear result is float32 for integer and float32 sources (float64
    for float64), unrounded.
    """
    if resampling == Resampling.nearest:
        return np.repeat(np.repeat(native, ky, axis=0), kx, axis=1)
    if resampling != Resampling.bilinear:
        raise ValueError(f"upsample supports nearest and bilinear, not {Resampling(resampling).name}")
    work = np.float64 if native.dtype == np.float64 else np.float32
    values = native.astype(work)
    if valid is None:
        return _bilinear_axis0(_bilinear_axis0(values, ky).T, kx).T
    values[~valid] = 0
    weights = valid.astype(work)
    num = _bilinear_axis0(_bilinear_axis0(values, ky).T, kx).T
    den = _bilinear_axis0(_bilinear_axis0(weights, ky).T, kx).T
    # where no neighbour is valid every term of ``num`` was zeroed above: it stays 0 there
    np.divide(num, den, out=num, where=den > 0)
    return num
