"""Reading assets that already sit on the target grid without GDAL's warper.

Why
---
stackstac reads every asset through a ``WarpedVRT`` unless the asset covers *exactly* the requested
grid, which an AOI never does. Sentinel-2 L2A and Sentinel-1 RTC assets are, however, usually on
the very UTM grid the cube asks for (same EPSG, pixel edges on 10 m multiples): the 10 m bands need
no resampling at all and the 20 m / 60 m bands only an integer-factor upsampling. For those the
warper's per-pixel coordinate transformation is pure overhead: it made reading 5-10x slower than a
plain windowed read and the cube the bottleneck of the mapping pipeline.

:func:`grid_alignment` recognises that case and :class:`AlignedWindowDataset` serves stackstac's
window reads with a plain windowed ``RasterIO`` of the source pixels (plus a one-pixel margin when
upsampling), filling what lies outside the asset as nodata. Integer-factor upsampling is then done
here (:func:`upsample`) rather than by GDAL: its generic resampler cost five times a native read plus
a numpy upsampling, and made the 20 m bands most of the cube's read time. The result equals the warped
read: bit for bit at the same resolution and for nearest upsampling (a target pixel centre never falls
on a source pixel edge for integer factors); for bilinear upsampling :func:`upsample` uses the warper's
kernel and nodata rule (neighbours that are nodata are left out and the weights renormalised;
an upsampled pixel is nodata where the source pixel under its centre is), bit for bit at 20 m and
within one DN of integer rounding at 60 m, where the warper's pixel positions carry float error
(``tests/test_aligned_read.py`` checks both against the warped path). Anything else
(another CRS, rotated or fractional grids, downsampling, other resampling kernels, assets with an
alpha or per-dataset mask) keeps the warper.
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

__all__ = ["FAST_RESAMPLING", "AlignedWindowDataset", "GridAlignment", "aligned_dataset", "grid_alignment"]

#: kernels for which a windowed RasterIO read equals the warper on an aligned grid
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


class AlignedWindowDataset:
    """Thread-safe reads of target-grid windows from an aligned asset (no warper).

    Wraps stackstac's thread-local dataset (one GDAL handle per thread).
    :class:`cloudlulc.cube.CheckedRioReader` calls :meth:`read_filled` with ``window`` in target-grid
    pixels instead of stackstac's masked ``read``.
    """

    def __init__(
        self, inner: Any, alignment: GridAlignment, resampling: Resampling, src_dtype: np.dtype, nodata: float | None
    ) -> None:
        self.inner = inner
        self.alignment = alignment
        self.resampling = resampling
        self.src_dtype = np.dtype(src_dtype)
        self.nodata = nodata
        self.scale_offset = inner.scale_offset

    def read_filled(
        self, window: Window, dtype: Any, fill_value: Any, scale_offset: tuple[float, float] = (1.0, 0.0)
    ) -> np.ndarray:
        """The ``(h, w)`` window as ``dtype`` with nodata and outside-asset pixels set to ``fill_value``,
        and ``scale``/``offset`` applied to the valid pixels: what stackstac's reader makes of
        the warped dataset's masked read, without building a masked array.

        Why: it runs for every band of every chunk; the masked path made a mask of ones, a masked
        array and a filled copy per band and entered the GDAL environment once per RasterIO call,
        about as much CPU as the decode itself. Here the window is written once, the mask exists
        only where the source has nodata, and an upsampled band is a single native read.
        """
        al = self.alignment
        dtype = np.dtype(dtype)
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        y0, y1 = max(r0, al.row0), min(r0 + h, al.row0 + al.height)
        x0, x1 = max(c0, al.col0), min(c0 + w, al.col0 + al.width)
        if not (y0 < y1 and x0 < x1):
            return np.full((h, w), fill_value, dtype=dtype)
        src = Window((x0 - al.col0) / al.kx, (y0 - al.row0) / al.ky, (x1 - x0) / al.kx, (y1 - y0) / al.ky)
        if (
            (y0, y1, x0, x1) == (r0, r0 + h, c0, c0 + w)
            and al.ky == 1
            and al.kx == 1
            and tuple(scale_offset) == (1, 0)
            and np.can_cast(self.src_dtype, dtype, "safe")
        ):
            # the usual 10 m band inside the asset: GDAL decodes straight into the output (the
            # conversion is exact), nodata is the only thing left to mark
            out = np.empty((h, w), dtype=dtype)
            with self.inner._env.read:
                self.inner.dataset.read(1, window=src, out=out)
            if self.nodata is not None:
                invalid = self._is_nodata(out)
                if invalid.any():
                    out[invalid] = fill_value
            return out
        out = np.full((h, w), fill_value, dtype=dtype)
        if al.ky == 1 and al.kx == 1:
            with self.inner._env.read:  # stackstac's GDAL environment for reads, as its own read enters it
                part = self.inner.dataset.read(1, window=src, out_dtype=self.src_dtype)
            invalid = self._is_nodata(part) if self.nodata is not None else None
        else:
            part, invalid = self._read_upsampled(y0, y1, x0, x1)
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
        if invalid is None:
            np.copyto(region, part, casting="unsafe")
        else:
            np.copyto(region, part, casting="unsafe", where=~invalid)
        return out

    def _is_nodata(self, values: np.ndarray) -> np.ndarray:
        """Pixels equal to the asset's nodata (as stored in the source dtype), in ``values`` of the
        source dtype or of one it converts to exactly."""
        if isinstance(self.nodata, float) and math.isnan(self.nodata):
            return np.isnan(values)
        return values == np.asarray(self.nodata).astype(self.src_dtype).astype(values.dtype)

    def _read_upsampled(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Target rows ``y0:y1`` x columns ``x0:x1`` (inside the asset) of the upsampled band and its
        nodata mask (None: the asset has no nodata value). Nearest keeps the source dtype; bilinear
        values are floats, rounded as GDAL rounds resampled integers when the source is integer.

        One native read of the source pixels under the window plus a one-pixel margin (the bilinear
        neighbours); at the asset's edge the edge pixel stands in for the missing neighbour, which
        is what the warper's renormalisation over in-asset pixels amounts to.
        """
        al = self.alignment
        ds = self.inner.dataset  # this thread's handle
        r0, r1 = (y0 - al.row0) // al.ky, (y1 - 1 - al.row0) // al.ky + 1  # source rows under the window
        c0, c1 = (x0 - al.col0) // al.kx, (x1 - 1 - al.col0) // al.kx + 1
        m = 1 if self.resampling == Resampling.bilinear else 0
        er0, er1 = max(r0 - m, 0), min(r1 + m, ds.height)
        ec0, ec1 = max(c0 - m, 0), min(c1 + m, ds.width)
        with self.inner._env.read:  # stackstac's GDAL environment for reads, as its own read enters it
            native = ds.read(1, window=Window(ec0, er0, ec1 - ec0, er1 - er0), out_dtype=self.src_dtype)
        if m:
            pad = ((m - (r0 - er0), m - (er1 - r1)), (m - (c0 - ec0), m - (ec1 - c1)))
            if any(any(p) for p in pad):
                native = np.pad(native, pad, mode="edge")
        nodata = self._is_nodata(native) if self.nodata is not None else None
        values = upsample(
            native, al.ky, al.kx, self.resampling, None if nodata is None or not nodata.any() else ~nodata
        )
        if np.issubdtype(self.src_dtype, np.integer) and values.dtype != self.src_dtype:
            values += 0.5  # GDAL's rounding of resampled integers (half up), in place: a hot path
            np.floor(values, out=values)
        # the upsampled array covers source rows r0:r1 (columns c0:c1): cut the window out of it
        oy, ox = (y0 - al.row0) - r0 * al.ky, (x0 - al.col0) - c0 * al.kx
        cut = (slice(oy, oy + (y1 - y0)), slice(ox, ox + (x1 - x0)))
        invalid = None
        if nodata is not None:
            inner = nodata[m : nodata.shape[0] - m, m : nodata.shape[1] - m]
            invalid = np.repeat(np.repeat(inner, al.ky, axis=0), al.kx, axis=1)[cut]
        return values[cut], invalid

    def close(self) -> None:
        self.inner.close()


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


def aligned_dataset(
    ds: rasterio.DatasetReader, spec: Any, resampling: Resampling, env: Any
) -> AlignedWindowDataset | None:
    """An :class:`AlignedWindowDataset` over the open ``ds`` when it can replace the warper, else None.

    ``spec`` is stackstac's ``RasterSpec`` (its ``vrt_params`` hold the target EPSG and transform).
    Datasets whose validity comes from an alpha or a per-dataset mask keep the warper (it reads those
    masks; a plain read would not).
    """
    from stackstac.rio_reader import ThreadLocalRioDataset

    if Resampling(resampling) not in FAST_RESAMPLING or ds.count != 1:
        return None
    flags = set(ds.mask_flag_enums[0])
    if not (flags <= {MaskFlags.all_valid, MaskFlags.nodata}):
        return None
    params = spec.vrt_params
    alignment = grid_alignment(
        ds.crs.to_epsg() if ds.crs else None, ds.transform, (ds.height, ds.width), params["crs"], params["transform"]
    )
    if alignment is None:
        return None
    inner = ThreadLocalRioDataset(env, ds, vrt=None)
    return AlignedWindowDataset(inner, alignment, Resampling(resampling), np.dtype(ds.dtypes[0]), ds.nodata)
