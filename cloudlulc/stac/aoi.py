"""Areas of interest: parse what users give (bbox, GeoJSON, vector files) into one lon/lat geometry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.affinity
import shapely.geometry
from pyproj import Geod

from cloudlulc.stac.errors import AoiError

#: AOIs larger than this are refused: one run maps one AOI on one grid held by one Dask graph.
MAX_AOI_AREA_KM2 = 1e5


_GEOD = Geod(ellps="WGS84")


def parse_aoi(aoi: Any, *, max_area_km2: float = MAX_AOI_AREA_KM2) -> shapely.Geometry:
    """The AOI as a valid shapely (multi)polygon in EPSG:4326 longitude/latitude.

    Accepts a GeoJSON geometry / Feature / FeatureCollection (dict or JSON string), a bbox
    (``(minx, miny, maxx, maxy)`` sequence or ``"minx,miny,maxx,maxy"`` string), a shapely geometry,
    or a path to a vector file (anything GDAL/pyogrio reads; reprojected to EPSG:4326).
    Raises :class:`AoiError` naming the problem: unparseable, empty, not an area, out of range, or
    larger than ``max_area_km2``.
    """
    geom = _to_geometry(aoi)
    if geom.is_empty:
        raise AoiError("The AOI is empty; pass a polygon or a bbox (minx, miny, maxx, maxy) in lon/lat.")
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        polys = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
        if not polys:
            raise AoiError(
                f"The AOI is a {geom.geom_type}, which has no area; pass a polygon or a bbox "
                "(buffer points/lines yourself if you mean an area around them)."
            )
        geom = shapely.unary_union(polys)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
        polys = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")]
        geom = shapely.unary_union(polys)
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise AoiError(
            f"AOI bounds {geom.bounds} are outside lon/lat range; AOIs are EPSG:4326 degrees "
            "(reproject projected coordinates first, or pass a vector file with its CRS)."
        )
    area_km2 = abs(_GEOD.geometry_area_perimeter(geom)[0]) / 1e6
    if area_km2 <= 0:
        raise AoiError("The AOI has zero area; pass a polygon or a bbox with minx < maxx and miny < maxy.")
    if area_km2 > max_area_km2:
        raise AoiError(
            f"The AOI covers {area_km2:,.0f} km², more than the {max_area_km2:,.0f} km² limit for one run; "
            "split it into smaller AOIs (one mosaic store each) or raise max_area_km2."
        )
    return geom


def _to_geometry(aoi: Any) -> shapely.Geometry:
    if isinstance(aoi, shapely.Geometry):
        return aoi
    if isinstance(aoi, Path) or (isinstance(aoi, str) and _looks_like_path(aoi)):
        return _read_vector(Path(aoi))
    if isinstance(aoi, str):
        text = aoi.strip()
        if text.startswith("{"):
            try:
                return _geojson_to_geometry(json.loads(text))
            except json.JSONDecodeError as e:
                raise AoiError(f"The AOI string is not valid GeoJSON: {e}") from None
        try:
            nums = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise AoiError(
                f"Cannot parse AOI {aoi[:80]!r}: expected GeoJSON, 'minx,miny,maxx,maxy' or a vector file path "
                "that exists."
            ) from None
        return _bbox_to_geometry(nums)
    if isinstance(aoi, dict):
        return _geojson_to_geometry(aoi)
    if isinstance(aoi, (list, tuple, np.ndarray)):
        return _bbox_to_geometry([float(v) for v in aoi])
    if hasattr(aoi, "__geo_interface__"):
        return _geojson_to_geometry(aoi.__geo_interface__)
    raise AoiError(f"Unsupported AOI type {type(aoi).__name__}; pass GeoJSON, a bbox or a vector file path.")


def _looks_like_path(text: str) -> bool:
    t = text.strip()
    if t.startswith("{") or not t:
        return False
    if Path(t).exists():
        return True
    return bool(re.search(r"\.(geojson|json|gpkg|shp|fgb|parquet|kml)$", t, re.I))


def _bbox_to_geometry(nums: list[float]) -> shapely.Geometry:
    if len(nums) != 4:
        raise AoiError(f"A bbox needs 4 numbers (minx, miny, maxx, maxy), got {len(nums)}.")
    minx, miny, maxx, maxy = nums
    if not (minx < maxx and miny < maxy):
        raise AoiError(f"Invalid bbox {nums}: need minx < maxx and miny < maxy (lon/lat degrees).")
    return shapely.box(minx, miny, maxx, maxy)


def _geojson_to_geometry(obj: dict) -> shapely.Geometry:
    kind = obj.get("type")
    try:
        if kind == "FeatureCollection":
            geoms = [shapely.geometry.shape(f["geometry"]) for f in obj.get("features", []) if f.get("geometry")]
            if not geoms:
                raise AoiError("The AOI FeatureCollection has no features with a geometry.")
            return shapely.unary_union(geoms)
        if kind == "Feature":
            if not obj.get("geometry"):
                raise AoiError("The AOI Feature has no geometry.")
            return shapely.geometry.shape(obj["geometry"])
        if "bbox" in obj and "coordinates" not in obj:
            return _bbox_to_geometry(list(obj["bbox"]))
        return shapely.geometry.shape(obj)
    except AoiError:
        raise
    except Exception as e:  # shapely raises several types for malformed coordinates
        raise AoiError(f"Invalid GeoJSON AOI (type {kind!r}): {e}") from None


def _read_vector(path: Path) -> shapely.Geometry:
    if not path.exists():
        raise AoiError(f"AOI file {path} does not exist.")
    import pyogrio

    try:
        meta, _, geoms, _ = pyogrio.raw.read(path, read_geometry=True, columns=[])
    except Exception as e:
        raise AoiError(f"Cannot read AOI file {path}: {e}") from None
    shapes = [g for g in shapely.from_wkb(geoms) if g is not None] if geoms is not None else []
    if not shapes:
        raise AoiError(f"AOI file {path} has no geometries.")
    geom = shapely.unary_union(shapes)
    crs = meta.get("crs")
    if crs and crs.upper() not in ("EPSG:4326", "OGC:CRS84"):
        from pyproj import CRS, Transformer

        tr = Transformer.from_crs(CRS.from_user_input(crs), 4326, always_xy=True)
        geom = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return geom


def geodesic_area_m2(geom: shapely.Geometry) -> float:
    """Area of a lon/lat geometry on the WGS84 ellipsoid, in m²."""
    return 0.0 if geom.is_empty else float(abs(_GEOD.geometry_area_perimeter(geom)[0]))


def aoi_coverage(aoi: shapely.Geometry, geometries: Iterable[dict | shapely.Geometry]) -> float:
    """Fraction (0..1) of the AOI's geodesic area covered by the union of item footprints."""
    shapes = [
        fix_footprint(g if isinstance(g, shapely.Geometry) else shapely.geometry.shape(g)) for g in geometries if g
    ]
    if not shapes:
        return 0.0
    union = shapely.make_valid(shapely.unary_union([shapely.make_valid(s) for s in shapes]))
    total = geodesic_area_m2(aoi)
    covered = geodesic_area_m2(union.intersection(aoi))
    return float(min(1.0, covered / total)) if total > 0 else 0.0


def crosses_antimeridian(geom: shapely.Geometry) -> bool:
    """Whether a lon/lat geometry lies on both sides of ±180° (an AOI split there as RFC 7946
    recommends, or a footprint drawn the long way round): its longitudes span more than 180°."""
    minx, _, maxx, _ = geom.bounds
    return bool(maxx - minx > 180)


def unwrap_antimeridian(geom: shapely.Geometry) -> shapely.Geometry:
    """A geometry crossing ±180° as one contiguous shape: western-hemisphere longitudes + 360, so
    the result spans e.g. 179..181 instead of -180..180. Others are returned unchanged."""
    if not crosses_antimeridian(geom):
        return geom
    parts = getattr(geom, "geoms", [geom])

    def shift(part: shapely.Geometry) -> shapely.Geometry:
        return shapely.transform(
            part, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]), xy[:, 1]])
        )

    return shapely.make_valid(shapely.unary_union([shift(p) for p in parts]))


def split_antimeridian(geom: shapely.Geometry) -> shapely.Geometry:
    """A geometry with longitudes beyond 180 (from :func:`unwrap_antimeridian`) cut at 180° and
    brought back into -180..180: the shape a STAC search and an intersection test understand."""
    east = geom.intersection(shapely.box(-180, -90, 180, 90))
    west = shapely.affinity.translate(geom.intersection(shapely.box(180, -90, 540, 90)), xoff=-360)
    return _polygons(shapely.unary_union([g for g in (east, west) if not g.is_empty]))


def _polygons(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygonal parts of ``geom`` (cutting at 180° can leave slivers as lines and points)."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    return shapely.unary_union(parts) if parts else shapely.Polygon()


def fix_footprint(geom: shapely.Geometry) -> shapely.Geometry:
    """An item footprint that crosses ±180° written as one polygon the long way round (its
    longitudes span more than 180°) as the two parts it really covers; others unchanged."""
    if not crosses_antimeridian(geom):
        return geom
    parts = getattr(geom, "geoms", [geom])
    fixed = []
    for part in parts:
        minx, _, maxx, _ = part.bounds
        fixed.append(split_antimeridian(unwrap_antimeridian(part)) if maxx - minx > 180 else part)
    return _polygons(shapely.unary_union(fixed))


def aoi_centre(geom: shapely.Geometry) -> tuple[float, float]:
    """The (lon, lat) centre of an AOI, also for one split at ±180° (where the plain centroid of
    the parts lies on the other side of the globe)."""
    c = unwrap_antimeridian(geom).centroid
    return (c.x + 180.0) % 360.0 - 180.0, c.y
