"""The target grid every layer of a date is read onto: one EPSG, square pixels, snapped bounds."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer

from cloudlulc.stac.aoi import aoi_centre, fix_footprint, parse_aoi, unwrap_antimeridian
from cloudlulc.stac.errors import CatalogError


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: ``epsg``, outer ``bounds``, square pixel size ``resolution``.

    Bounds that span whole pixels are kept exactly (a reference raster's grid, whatever its origin);
    other bounds are snapped outward to multiples of ``resolution``, as :func:`grid_for_aoi` does for
    AOIs, so that S2 tiles (origins on the 60 m lattice) and the grid share pixel edges.
    """

    epsg: int
    bounds: tuple[float, float, float, float]
    resolution: float = 10.0

    def __post_init__(self) -> None:
        r = float(self.resolution)
        if r <= 0:
            raise ValueError(f"Grid resolution must be positive, got {self.resolution}.")
        minx, miny, maxx, maxy = (float(v) for v in self.bounds)
        nx, ny = (maxx - minx) / r, (maxy - miny) / r
        if abs(nx - round(nx)) < 1e-6 and abs(ny - round(ny)) < 1e-6:
            bounds = (minx, miny, minx + round(nx) * r, miny + round(ny) * r)
        else:
            bounds = (
                math.floor(minx / r + 1e-9) * r,
                math.floor(miny / r + 1e-9) * r,
                math.ceil(maxx / r - 1e-9) * r,
                math.ceil(maxy / r - 1e-9) * r,
            )
        if not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
            raise ValueError(f"Grid bounds {self.bounds} are empty.")
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "resolution", r)
        object.__setattr__(self, "epsg", int(self.epsg))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        minx, miny, maxx, maxy = self.bounds
        return round((maxy - miny) / self.resolution), round((maxx - minx) / self.resolution)

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates, increasing."""
        return self.bounds[0] + (np.arange(self.shape[1]) + 0.5) * self.resolution

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates, decreasing (north-up)."""
        return self.bounds[3] - (np.arange(self.shape[0]) + 0.5) * self.resolution

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        return tuple(tr.transform_bounds(*self.bounds, densify_pts=21))  # type: ignore[return-value]

    def footprint_lonlat(self) -> shapely.Geometry:
        """The grid's outline in lon/lat, cut in two where it crosses ±180° (a STAC search with it
        then asks for the right places, not for the rest of the globe)."""
        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        outline = shapely.segmentize(shapely.box(*self.bounds), max_segment_length=max(self.resolution, 100.0))
        lonlat = shapely.transform(outline, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        return fix_footprint(lonlat)

    def window(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The sub-grid of a pixel window (clipped to this grid), for re-building a cube per batch."""
        h, w = self.shape
        r0, c0 = max(0, row_off), max(0, col_off)
        r1, c1 = min(h, row_off + height), min(w, col_off + width)
        if r0 >= r1 or c0 >= c1:
            raise ValueError(f"Window ({row_off}, {col_off}, {height}, {width}) is outside the {h}x{w} grid.")
        minx, maxy, r = self.bounds[0], self.bounds[3], self.resolution
        return Grid(self.epsg, (minx + c0 * r, maxy - r1 * r, minx + c1 * r, maxy - r0 * r), r)

    def windows(self, size: int) -> Iterator[tuple[tuple[int, int], Grid]]:
        """``((row_off, col_off), sub-grid)`` tiles of at most ``size`` x ``size`` pixels covering the grid."""
        h, w = self.shape
        for r in range(0, h, size):
            for c in range(0, w, size):
                yield (r, c), self.window(r, c, size, size)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lon, lat)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return (32600 if lat >= 0 else 32700) + zone


#: grids larger than this are refused by default: one run maps one AOI on one grid held by one graph
MAX_GRID_PIXELS = 1_000_000_000


class GridTooLargeError(CatalogError, ValueError):
    """The AOI's grid has more pixels than the limit for one run."""


def grid_for_aoi(
    aoi: Any, epsg: int | None = None, resolution: float = 10.0, *, max_pixels: int = MAX_GRID_PIXELS
) -> Grid:
    """The grid covering ``aoi``: the UTM zone of its centre unless ``epsg`` is given, bounds snapped
    outward. An AOI split at ±180° is handled as the one area it is (centre, zone and bounds on the
    antimeridian, not on the other side of the globe); a grid over ``max_pixels`` is refused."""
    geom = aoi if isinstance(aoi, shapely.Geometry) else parse_aoi(aoi)
    if epsg is None:
        epsg = utm_epsg(*aoi_centre(geom))
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    # across ±180° the lon/lat bounds are the whole globe: project the unwrapped bounds instead
    lon_lat_bounds = unwrap_antimeridian(geom).bounds
    minx, miny, maxx, maxy = tr.transform_bounds(*lon_lat_bounds, densify_pts=21)  # type: ignore[misc]
    if not all(map(math.isfinite, (minx, miny, maxx, maxy))):
        raise CatalogError(f"The AOI {geom.bounds} cannot be projected to EPSG:{epsg}; pick another epsg.")
    r = float(resolution)
    snapped = (math.floor(minx / r) * r, math.floor(miny / r) * r, math.ceil(maxx / r) * r, math.ceil(maxy / r) * r)
    pixels = round((snapped[2] - snapped[0]) / r) * round((snapped[3] - snapped[1]) / r)
    if pixels > max_pixels:
        raise GridTooLargeError(
            f"The AOI's grid in EPSG:{epsg} would be {pixels:,} pixels of {r:g} m, over the {max_pixels:,} "
            "allowed for one run (setting max_grid_pixels); split the AOI into smaller ones."
        )
    return Grid(int(epsg), snapped, r)
