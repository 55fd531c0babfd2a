"""Where the simulated catalog lies: grid, tiles, dates of the acquisitions (SIMULATED DATA)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pyproj import Transformer

from cloudlulc.simulate import metadata as md
from cloudlulc.simulate.scene import (
    BARREN,
    BUILT,
    CROPLAND,
    FOREST,
    GRASSLAND,
    WATER,
)

#: the collection ids of the Planetary Computer, which the simulated catalog copies
S2_COLLECTION, S1_COLLECTION, LABEL_COLLECTION = "sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"

EPSG = 32633


RES = 10


#: Upper-left corner of the eastern tile (33UYP): on the 60 m lattice like real S2 tile origins.
TILE_B_ORIGIN = (699960.0, 5349960.0)


S2_NATIVE_RES = {k: g for k, (g, _, _) in md.S2_BAND_META.items()}


#: CloudLULC class -> the WorldCover code written in the label product.
LULC_TO_WORLDCOVER = {WATER: 80, FOREST: 10, GRASSLAND: 30, BARREN: 60, BUILT: 50, CROPLAND: 40}


@dataclass(frozen=True)
class S2Acquisition:
    """One simulated Sentinel-2 acquisition (both tiles)."""

    datetime: datetime
    platform: str
    processing_baseline: str
    cloud_cover: float  # requested fraction of cloud + shadow over the scene
    season: float  # crop greenness stage, see cloudlulc.simulate.scene.greenness
    relative_orbit: int = 79


@dataclass(frozen=True)
class S1Pass:
    """One simulated Sentinel-1 pass; ``slices`` > 1 delivers it as overlapping frames."""

    start: datetime
    orbit_state: str
    relative_orbit: int
    absolute_orbit: int
    season: float
    slices: int = 1


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


#: Dates straddle the 25 Jan 2022 switch to processing baseline 04.00 (DN offset +1000).
DEFAULT_S2: tuple[S2Acquisition, ...] = (
    S2Acquisition(_utc(2022, 1, 6, 9, 54, 29, 24000), "Sentinel-2B", "03.01", 0.35, 0.40),
    S2Acquisition(_utc(2022, 1, 16, 9, 53, 49, 24000), "Sentinel-2B", "03.01", 0.02, 0.45),
    S2Acquisition(_utc(2022, 1, 31, 9, 54, 1, 24000), "Sentinel-2A", "04.00", 0.85, 0.50),
    S2Acquisition(_utc(2022, 2, 10, 9, 53, 11, 24000), "Sentinel-2A", "04.00", 0.15, 0.55),
)


#: S1A passes 1 to 3 days off each S2 date (12-day repeat), both orbit states; one split in two frames.
DEFAULT_S1: tuple[S1Pass, ...] = (
    S1Pass(_utc(2022, 1, 4, 4, 59, 4, 220006), "descending", 124, 41300, 0.39),
    S1Pass(_utc(2022, 1, 19, 16, 42, 11, 104512), "ascending", 73, 41524, 0.46),
    S1Pass(_utc(2022, 1, 28, 4, 59, 3, 871220), "descending", 124, 41650, 0.49, slices=2),
    S1Pass(_utc(2022, 2, 12, 16, 42, 9, 553001), "ascending", 73, 41874, 0.56),
)


class _Geo:
    """Conversions between the UTM grid and WGS84 for footprints and bboxes."""

    def __init__(self, epsg: int) -> None:
        self.to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
        self.to_utm = Transformer.from_crs(4326, epsg, always_xy=True)

    def polygon(self, xy: Sequence[tuple[float, float]]) -> tuple[dict[str, Any], list[float]]:
        """GeoJSON polygon (lon/lat, 7 decimals, closed ring, counter-clockwise) and its bbox."""
        xs, ys = zip(*xy, strict=True)
        lon, lat = self.to_ll.transform(np.array(xs), np.array(ys))
        ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
        ring.append(ring[0])
        bbox = [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)]
        return {"type": "Polygon", "coordinates": [ring]}, bbox


def _rect(minx: float, miny: float, maxx: float, maxy: float) -> list[tuple[float, float]]:
    return [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)]


@dataclass
class _Layout:
    """Pixel layout of the simulated area: world grid, S2 tiles and their windows in it."""

    tile_size: int
    overlap: int
    margin: int

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "margin"):
            v = getattr(self, name)
            if v % 6:
                raise ValueError(f"{name}={v} must be a multiple of 6 so that 20 m and 60 m bands tile exactly")
        if not 0 < self.overlap < self.tile_size // 2:
            raise ValueError(f"overlap={self.overlap} must be in (0, tile_size/2)")
        n, o, p = self.tile_size, self.overlap, self.margin
        self.xb, self.ytop = TILE_B_ORIGIN
        self.xa = self.xb - (n - o) * RES
        self.world_x0, self.world_y0 = self.xa - p * RES, self.ytop + p * RES
        self.shape = (n + 2 * p, 2 * n - o + 2 * p)
        # tile name -> (row0, col0) of the tile window in the world grid
        self.tiles = {"33UXP": (p, p), "33UYP": (p, p + n - o)}

    def tile_bounds(self, name: str) -> tuple[float, float, float, float]:
        r0, c0 = self.tiles[name]
        minx = self.world_x0 + c0 * RES
        maxy = self.world_y0 - r0 * RES
        return (minx, maxy - self.tile_size * RES, minx + self.tile_size * RES, maxy)

    def world_bounds(self) -> tuple[float, float, float, float]:
        h, w = self.shape
        return (self.world_x0, self.world_y0 - h * RES, self.world_x0 + w * RES, self.world_y0)

    def aoi_bounds(self) -> tuple[float, float, float, float]:
        """A 4 km x 3 km AOI centred on the tile overlap (crosses both tiles)."""
        cx = self.xb + self.overlap * RES / 2
        cy = self.ytop - self.tile_size * RES / 2
        hw, hh = min(2000.0, self.tile_size * RES * 0.3), min(1500.0, self.tile_size * RES * 0.25)
        return (cx - hw, cy - hh, cx + hw, cy + hh)


def _nodata_wedge(layout: _Layout) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Nodata mask of tile 33UXP on date 0 (a swath-edge wedge inside the overlap) and the valid footprint."""
    n, o = layout.tile_size, layout.overlap
    rows = np.arange(n)[:, None]
    cols = np.arange(n)[None, :]
    c_top, c_bottom = n - o // 3, n - (2 * o) // 3  # boundary column at the top and bottom rows
    boundary = c_top + (c_bottom - c_top) * rows / (n - 1)
    mask = cols >= np.round(boundary)
    minx, miny, maxx, maxy = layout.tile_bounds("33UXP")
    footprint = [(minx, miny), (minx + c_bottom * RES, miny), (minx + c_top * RES, maxy), (minx, maxy)]
    return mask, footprint
