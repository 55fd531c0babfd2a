"""STAC access: open a catalog, search Sentinel-2 L2A, pair each acquisition with a Sentinel-1 RTC pass.

Everything returned here is plain data (item *dicts*, dataclasses), not pystac objects: pystac 1.15
migrates ``proj:epsg`` to ``proj:code`` on load and stackstac 0.5.1 only reads ``proj:epsg`` (see
DESIGN.md "Known pitfalls"), so items are kept as the server sent them, normalised by
:func:`normalize_item`. Filters the API may ignore (rustac ignores ``query`` and ``sortby``) are always
re-applied client-side, so results do not depend on which STAC server answers.

Signed Planetary Computer hrefs carry SAS tokens that expire within about an hour; they are never
written to logs or to :meth:`Pair.as_dict` (see :func:`unsigned_href`), and long runs re-sign with
:func:`resign_items` / :func:`resign_pair`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import numpy as np
import shapely
import shapely.geometry
from pyproj import Geod

logger = logging.getLogger(__name__)

PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
S2_COLLECTION = "sentinel-2-l2a"
S1_COLLECTION = "sentinel-1-rtc"

#: Half-width of the search that names the nearest Sentinel-1 pass when none is within the gap.
NEAREST_S1_SEARCH_DAYS = 30.0
#: AOIs larger than this are refused: one run maps one AOI on one grid held by one Dask graph.
MAX_AOI_AREA_KM2 = 1e5

#: Earth Search v1 ``sentinel-2-l2a`` asset keys -> Planetary Computer band names.
EARTH_SEARCH_S2_KEYS: dict[str, str] = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
}

_GEOD = Geod(ellps="WGS84")
_SAS_KEYS = {"st", "se", "sp", "sv", "sr", "sig", "skoid", "sktid", "skt", "ske", "sks", "skv", "sip", "spr"}


# --------------------------------------------------------------------------------------------- errors
class CatalogError(RuntimeError):
    """Base class of everything this module raises on purpose."""


class AoiError(CatalogError, ValueError):
    """The area of interest cannot be used (unparseable, empty, not an area, or too large)."""


class StacApiError(CatalogError):
    """The STAC API could not be reached or kept failing (5xx / connection errors) after retries."""

    def __init__(self, url: str, detail: str):
        self.url = url
        super().__init__(
            f"STAC API {url} failed after retries: {strip_tokens(detail)}. Check the URL and your network, "
            "or configure another catalog (open_catalog(url=...))."
        )


class MissingCollectionError(CatalogError):
    """The catalog has no collection with the id we need (e.g. Earth Search has no sentinel-1-rtc)."""


class NoSentinel2Error(CatalogError):
    """No Sentinel-2 L2A acquisition matched the AOI, dates and cloud limit."""


class NoSentinel1Error(CatalogError):
    """No Sentinel-1 RTC pass covering the AOI within ``max_gap_days`` of the Sentinel-2 acquisition.

    ``nearest`` is the closest pass found in a wider window (or None), so the message can say how far
    off the data is and whether widening ``max_gap_days`` would help.
    """

    def __init__(self, message: str, *, s2_time: datetime, max_gap_days: float, nearest: S1Pass | None):
        self.s2_time = s2_time
        self.max_gap_days = max_gap_days
        self.nearest = nearest
        self.nearest_date = nearest.time.date() if nearest else None
        self.nearest_gap_days = nearest.gap_days if nearest else None
        super().__init__(message)


class AssetReadError(CatalogError):
    """An asset (COG) could not be opened or read: missing (404), unreadable, or an expired token."""

    def __init__(self, href: str, detail: str):
        self.href = unsigned_href(href)
        super().__init__(
            f"Could not read asset {self.href}: {strip_tokens(detail)}. The file may be missing (HTTP 404) or "
            "its SAS token expired (re-sign with cloudlulc.catalog.resign_pair); pass errors_as_nodata=True "
            "to build_cube to map such assets as nodata instead."
        )


# --------------------------------------------------------------------------------------- hrefs/tokens
def unsigned_href(href: str) -> str:
    """``href`` without a SAS token: the query string is dropped when it carries SAS keys (``sig``, ``se``...).

    Query strings that are not tokens (e.g. the PC tilejson ``?collection=...``) are kept: they are
    part of the resource's address, not a secret.
    """
    parts = urlsplit(href)
    if not parts.query:
        return href
    keys = set(parse_qs(parts.query, keep_blank_values=True))
    if keys & _SAS_KEYS:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment))
    return href


_TOKEN_RE = re.compile(r"\?[^\s'\"]*\bsig=[^\s'\"]*")


def strip_tokens(text: str) -> str:
    """Remove anything that looks like a SAS query string (``?...sig=...``) from free text (error messages)."""
    return _TOKEN_RE.sub("", text)


def token_expiry(href: str) -> datetime | None:
    """Expiry time (``se=`` parameter) of a signed href, or None when it is unsigned."""
    q = parse_qs(urlsplit(href).query)
    if "se" not in q:
        return None
    try:
        return datetime.fromisoformat(q["se"][0].replace("Z", "+00:00"))
    except ValueError:
        return None


def items_need_resign(items: Iterable[dict], margin: timedelta = timedelta(minutes=10)) -> bool:
    """True when any asset token of ``items`` expires within ``margin`` (unsigned items never need it)."""
    now = datetime.now(UTC)
    for item in items:
        for asset in item.get("assets", {}).values():
            exp = token_expiry(asset.get("href", ""))
            if exp is not None and exp - now < margin:
                return True
    return False


def _default_signer(href: str) -> str:
    import planetary_computer

    return planetary_computer.sign(href)


def resign_items(items: Sequence[dict], signer: Callable[[str], str] | None = None) -> list[dict]:
    """Copies of ``items`` with every asset href stripped of its old token and signed again.

    Planetary Computer tokens expire within about an hour and get baked into Dask graphs; the
    inference stage calls this per batch of windows and rebuilds the cube (see
    :func:`cloudlulc.cube.build_cube`). ``signer`` defaults to ``planetary_computer.sign``, which
    only touches Azure blob hrefs and caches tokens until shortly before expiry.
    """
    sign = signer or _default_signer
    out = []
    for item in items:
        new = copy.deepcopy(item)
        for asset in new.get("assets", {}).values():
            if "href" in asset:
                asset["href"] = sign(unsigned_href(asset["href"]))
        new.get("properties", {}).pop("msft:expiry", None)
        out.append(new)
    return out


def resign_pair(pair: Pair, signer: Callable[[str], str] | None = None) -> Pair:
    """The same pairing decision with freshly signed hrefs (S2 and S1 items)."""
    s2 = replace(pair.s2, items=resign_items(pair.s2.items, signer))
    s1 = replace(pair.s1, s1_items=resign_items(pair.s1.s1_items, signer)) if pair.s1 is not None else None
    return replace(pair, s2=s2, s1=s1)


# ----------------------------------------------------------------------------------------------- AOI
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


def aoi_coverage(aoi: shapely.Geometry, geometries: Iterable[dict | shapely.Geometry]) -> float:
    """Fraction (0..1) of the AOI's geodesic area covered by the union of item footprints."""
    shapes = [g if isinstance(g, shapely.Geometry) else shapely.geometry.shape(g) for g in geometries if g]
    if not shapes:
        return 0.0
    union = shapely.make_valid(shapely.unary_union([shapely.make_valid(s) for s in shapes]))
    inter = union.intersection(aoi)
    total = abs(_GEOD.geometry_area_perimeter(aoi)[0])
    covered = abs(_GEOD.geometry_area_perimeter(inter)[0]) if not inter.is_empty else 0.0
    return float(min(1.0, covered / total)) if total > 0 else 0.0


# --------------------------------------------------------------------------------------- item helpers
def parse_datetime(value: str | None) -> datetime | None:
    """ISO 8601 (``Z``, offsets, or a space instead of ``T`` as in PC S1 RTC ``start_datetime``) -> aware UTC."""
    if value is None:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if len(text) > 10 and text[10] == " ":
        text = text[:10] + "T" + text[11:]
    # Python < 3.11 accepts at most 6 fractional digits; trim longer fractions (pgstac may add some).
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def item_datetime(item: dict) -> datetime:
    """The item's nominal time: ``datetime``, or the middle of ``start_datetime``/``end_datetime`` when null."""
    props = item.get("properties", {})
    dt = parse_datetime(props.get("datetime"))
    if dt is not None:
        return dt
    start, end = parse_datetime(props.get("start_datetime")), parse_datetime(props.get("end_datetime"))
    if start and end:
        return start + (end - start) / 2
    if start or end:
        return start or end  # type: ignore[return-value]
    raise CatalogError(f"STAC item {item.get('id')!r} has neither datetime nor start/end_datetime.")


def _epsg_from_code(code: Any) -> int | None:
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        try:
            return int(code.split(":", 1)[1])
        except ValueError:
            return None
    return None


def normalize_item(item: dict) -> dict:
    """A copy of an item dict in the shape the rest of CloudLULC expects.

    - ``proj:epsg`` restored from ``proj:code`` (item and assets), for stackstac 0.5.1;
    - 9-number ``proj:transform`` (PC S1 RTC) cut to the 6 affine terms;
    - a ``datetime`` key present (null when only start/end are set; pgstac omits it);
    - Earth Search asset keys (``red``, ``nir``, ``scl``...) renamed to the PC band names (``B04``...).
    """
    item = copy.deepcopy(item)
    props = item.setdefault("properties", {})
    props.setdefault("datetime", None)  # pgstac drops a null datetime; stackstac indexes the key
    _fix_proj(props)
    assets = item.setdefault("assets", {})
    for asset in assets.values():
        _fix_proj(asset)
    if "B04" not in assets and "red" in assets:
        item["assets"] = {EARTH_SEARCH_S2_KEYS.get(k, k): v for k, v in assets.items()}
    return item


def _fix_proj(obj: dict) -> None:
    if obj.get("proj:epsg") is None:
        epsg = _epsg_from_code(obj.get("proj:code"))
        if epsg is not None:
            obj["proj:epsg"] = epsg
    tr = obj.get("proj:transform")
    if isinstance(tr, list) and len(tr) == 9:
        obj["proj:transform"] = tr[:6]


def _props(items: Sequence[dict], key: str) -> list[Any]:
    return [it.get("properties", {}).get(key) for it in items]


def asset_hrefs(items: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{item_id: {asset_key: unsigned href}}`` for the given asset keys (for provenance, never tokens)."""
    return {
        it["id"]: {k: unsigned_href(it["assets"][k]["href"]) for k in keys if k in it.get("assets", {})} for it in items
    }


# ------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Acquisition:
    """One Sentinel-2 acquisition: the same-day tiles of one orbit over the AOI, mosaicked by the cube."""

    time: datetime
    platform: str | None
    relative_orbit: int | None
    items: list[dict] = field(repr=False)
    cloud_cover: float | None
    coverage: float
    processing_baselines: tuple[str, ...]

    @property
    def date(self) -> date:
        return self.time.date()

    @property
    def item_ids(self) -> list[str]:
        return [it["id"] for it in self.items]

    def as_dict(self) -> dict[str, Any]:
        from .classes import S2_BANDS

        return {
            "datetime": self.time.isoformat(),
            "platform": self.platform,
            "relative_orbit": self.relative_orbit,
            "item_ids": self.item_ids,
            "hrefs": asset_hrefs(self.items, [*S2_BANDS, "SCL"]),
            "cloud_cover": self.cloud_cover,
            "aoi_coverage": round(self.coverage, 4),
            "processing_baselines": list(self.processing_baselines),
        }


@dataclass(frozen=True)
class S1Pass:
    """Frames of one Sentinel-1 pass (same date, platform, orbit) over the AOI."""

    time: datetime
    gap_days: float
    orbit_state: str | None
    relative_orbit: int | None
    platform: str | None
    coverage: float
    items: list[dict] = field(repr=False)

    def describe(self) -> str:
        return (
            f"{self.time:%Y-%m-%d %H:%M} UTC ({self.platform}, {self.orbit_state} relative orbit "
            f"{self.relative_orbit}), gap {self.gap_days:.1f} days, covering {self.coverage:.0%} of the AOI"
        )


@dataclass(frozen=True)
class Pairing:
    """The Sentinel-1 pass chosen for one Sentinel-2 acquisition, and why."""

    s1_items: list[dict] = field(repr=False)
    s1_time: datetime
    gap_days: float
    orbit_state: str | None
    relative_orbit: int | None
    platform: str | None
    coverage: float
    max_gap_days: float
    candidates: int

    def as_dict(self) -> dict[str, Any]:
        from .classes import S1_BANDS

        return {
            "s1_item_ids": [it["id"] for it in self.s1_items],
            "s1_hrefs": asset_hrefs(self.s1_items, list(S1_BANDS)),
            "s1_datetime": self.s1_time.isoformat(),
            "gap_days": round(self.gap_days, 3),
            "orbit_state": self.orbit_state,
            "relative_orbit": self.relative_orbit,
            "platform": self.platform,
            "aoi_coverage": round(self.coverage, 4),
            "max_gap_days": self.max_gap_days,
            "candidate_passes": self.candidates,
        }


@dataclass(frozen=True)
class Pair:
    """A Sentinel-2 acquisition and its Sentinel-1 pairing (None when mapping optical-only)."""

    s2: Acquisition
    s1: Pairing | None
    aoi: shapely.Geometry | None = field(default=None, repr=False, compare=False)
    s1_missing_reason: str | None = None

    @property
    def time(self) -> np.datetime64:
        return np.datetime64(self.s2.time.replace(tzinfo=None), "ns")

    @property
    def optical_only(self) -> bool:
        return self.s1 is None

    def as_dict(self) -> dict[str, Any]:
        """Provenance as JSON-able data: item ids, unsigned hrefs, gap, orbit; never a token."""
        return {
            "time": str(self.time),
            "s2": self.s2.as_dict(),
            "s1": self.s1.as_dict() if self.s1 is not None else None,
            "optical_only": self.optical_only,
            "s1_missing_reason": strip_tokens(self.s1_missing_reason) if self.s1_missing_reason else None,
            "aoi_bounds_lonlat": list(self.aoi.bounds) if self.aoi is not None else None,
        }


# ------------------------------------------------------------------------------------------ client
def _is_planetary_computer(url: str) -> bool:
    return "planetarycomputer.microsoft.com" in url


def open_catalog(
    url: str | None = None,
    *,
    sign: bool | None = None,
    max_retries: int = 4,
    backoff_factor: float = 0.5,
    timeout: float = 60.0,
):
    """Open a STAC API as a ``pystac_client.Client``.

    ``url`` defaults to the Planetary Computer; ``sign`` (default: only for the Planetary Computer)
    adds ``planetary_computer.sign_inplace`` as the client's modifier so asset hrefs come back signed.
    Requests are retried ``max_retries`` times with exponential backoff on connection errors and HTTP
    429/5xx (urllib3 ``Retry``); after that :class:`StacApiError` names the URL.

    Any STAC API works: Earth Search (:data:`EARTH_SEARCH_URL`) serves Sentinel-2 L2A with asset keys
    ``red``, ``nir``, ``scl``... that :func:`normalize_item` maps to ``B04``, ``B08``, ``SCL``; it has no
    ``sentinel-1-rtc`` (pairing raises :class:`MissingCollectionError`, or maps optical-only).
    """
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3 import Retry

    url = url or PLANETARY_COMPUTER_URL
    if sign is None:
        sign = _is_planetary_computer(url)
    modifier = None
    if sign:
        import planetary_computer

        modifier = planetary_computer.sign_inplace
    retry = Retry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        backoff_factor=backoff_factor,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=True,
    )
    stac_io = StacApiIO(max_retries=retry, timeout=timeout)
    try:
        client = Client.open(url, modifier=modifier, stac_io=stac_io)
    except Exception as e:
        raise StacApiError(url, f"{type(e).__name__}: {e}") from None
    logger.info("Opened STAC API %s (signing: %s)", url, bool(sign))
    return client


def _client_url(client) -> str:
    try:
        return client.get_self_href() or "<unknown STAC API>"
    except Exception:
        return "<unknown STAC API>"


_CONFORMANCE_SUFFIX = {"QUERY": "/item-search#query", "SORT": "/item-search#sort", "FILTER": "/item-search#filter"}


def _conforms(client, name: str) -> bool:
    """Whether the API advertises an item-search extension, in any STAC API 1.x version.

    pystac-client only recognises ``v1.0.*`` URIs, but stac-fastapi-pgstac advertises sort as
    ``v1.1.0``; matching the suffix over the advertised list accepts both.
    """
    suffix = _CONFORMANCE_SUFFIX[name]
    try:
        uris = client.get_conforms_to() or []
    except Exception:
        return False
    pattern = re.compile(r"^https://api\.stacspec\.org/v1\.\d+\.[^/]+" + re.escape(suffix) + "$")
    return any(pattern.match(u) for u in uris)


def _require_collection(client, collection: str, hint: str = "") -> None:
    try:
        coll = client.get_collection(collection)
    except Exception as e:  # pystac-client raises APIError / NotFound / KeyError depending on the server
        coll = None
        detail = f"{type(e).__name__}: {e}"
    else:
        detail = ""
    if coll is None:
        raise MissingCollectionError(
            f"The STAC API {_client_url(client)} has no collection {collection!r} ({strip_tokens(detail)[:200]}). "
            f"{hint}".strip()
        )


def _search(
    client,
    *,
    collection: str,
    aoi: shapely.Geometry,
    start: datetime,
    end: datetime,
    query: dict | None = None,
    sortby: str | None = None,
    limit: int = 100,
) -> list[dict]:
    """Search and return normalised item dicts; the spatio-temporal filters are re-applied client-side."""
    kwargs: dict[str, Any] = {
        "collections": [collection],
        "intersects": shapely.geometry.mapping(aoi),
        "datetime": [start, end],
        "limit": limit,
    }
    for name, key, value in (("QUERY", "query", query), ("SORT", "sortby", sortby)):
        if value and _conforms(client, name):
            kwargs[key] = value
            try:  # pystac-client would warn about (and drop) extensions advertised as v1.1 URIs
                client.add_conforms_to(name)
            except Exception:
                pass
    url = _client_url(client)
    try:
        raw = list(client.search(**kwargs).items_as_dicts())
    except CatalogError:
        raise
    except Exception as e:
        raise StacApiError(url, f"search of {collection!r} failed: {type(e).__name__}: {e}") from None
    items = []
    for it in raw:
        if it.get("collection") not in (None, collection):
            continue
        it = normalize_item(it)
        t = item_datetime(it)
        props = it["properties"]
        t0 = parse_datetime(props.get("start_datetime")) or t
        t1 = parse_datetime(props.get("end_datetime")) or t
        if t1 < start or t0 > end:
            continue
        geom = it.get("geometry")
        if geom is None or not shapely.geometry.shape(geom).intersects(aoi):
            continue
        items.append(it)
    return items


def _as_datetime(value: Any, *, end: bool = False) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
        if end:
            dt += timedelta(days=1) - timedelta(microseconds=1)
    elif isinstance(value, np.datetime64):
        dt = datetime.fromisoformat(str(value.astype("datetime64[us]")))
    elif isinstance(value, str):
        if len(value.strip()) == 10:
            return _as_datetime(date.fromisoformat(value.strip()), end=end)
        parsed = parse_datetime(value)
        assert parsed is not None
        dt = parsed
    else:
        raise TypeError(f"Cannot use {value!r} as a date; pass 'YYYY-MM-DD', a date or a datetime.")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# ----------------------------------------------------------------------------------------- Sentinel-2
def group_acquisitions(items: Sequence[dict], aoi: Any) -> list[Acquisition]:
    """Group Sentinel-2 items into acquisitions (same UTC day, platform and relative orbit), oldest first.

    Within an acquisition the least cloudy tile comes first: the cube mosaic keeps the first
    valid pixel where tiles overlap.
    """
    geom = aoi if isinstance(aoi, shapely.Geometry) else parse_aoi(aoi)
    groups: dict[tuple, list[dict]] = {}
    for it in map(normalize_item, items):
        p = it["properties"]
        key = (item_datetime(it).date(), p.get("platform"), p.get("sat:relative_orbit"))
        groups.setdefault(key, []).append(it)
    acquisitions = []
    for (_, platform, orbit), group in groups.items():
        group.sort(key=lambda it: (float(it["properties"].get("eo:cloud_cover", 100.0)), it["id"]))
        times = sorted(item_datetime(it) for it in group)
        clouds = [float(c) for c in _props(group, "eo:cloud_cover") if c is not None]
        acquisitions.append(
            Acquisition(
                time=times[len(times) // 2],
                platform=platform,
                relative_orbit=orbit,
                items=group,
                cloud_cover=float(np.mean(clouds)) if clouds else None,
                coverage=aoi_coverage(geom, [it.get("geometry") for it in group]),
                processing_baselines=tuple(sorted({str(b) for b in _props(group, "s2:processing_baseline") if b})),
            )
        )
    acquisitions.sort(key=lambda a: a.time)
    return acquisitions


def search_s2(
    client,
    aoi: Any,
    start: Any,
    end: Any | None = None,
    max_cloud_cover: float = 100.0,
    *,
    collection: str = S2_COLLECTION,
) -> list[Acquisition]:
    """Sentinel-2 L2A acquisitions over ``aoi`` between ``start`` and ``end`` (inclusive dates), oldest first.

    Items with ``eo:cloud_cover`` above ``max_cloud_cover`` (or without it) are dropped; the same-day
    tiles of one orbit become one :class:`Acquisition`. Raises :class:`NoSentinel2Error` when nothing
    matches, saying whether the cloud limit removed everything.
    """
    geom = parse_aoi(aoi)
    t0, t1 = _as_datetime(start), _as_datetime(end if end is not None else start, end=True)
    if t1 < t0:
        raise ValueError(f"end {t1:%Y-%m-%d} is before start {t0:%Y-%m-%d}.")
    items = _search(
        client,
        collection=collection,
        aoi=geom,
        start=t0,
        end=t1,
        query={"eo:cloud_cover": {"lte": max_cloud_cover}},
        sortby="properties.datetime",
    )
    kept = [
        it
        for it in items
        if it["properties"].get("eo:cloud_cover") is not None
        and float(it["properties"]["eo:cloud_cover"]) <= max_cloud_cover
    ]
    window = f"{t0:%Y-%m-%d}..{t1:%Y-%m-%d}"
    if not kept:
        if items:
            best = min(float(it["properties"].get("eo:cloud_cover", 100.0)) for it in items)
            raise NoSentinel2Error(
                f"{len(items)} Sentinel-2 items intersect the AOI in {window} but none has eo:cloud_cover <= "
                f"{max_cloud_cover} (least cloudy: {best:.1f}%); raise max_cloud_cover or widen the dates."
            )
        raise NoSentinel2Error(
            f"No {collection} items intersect the AOI {tuple(round(v, 4) for v in geom.bounds)} in {window} "
            f"on {_client_url(client)}; widen the date range or check the AOI."
        )
    acquisitions = group_acquisitions(kept, geom)
    logger.info(
        "Sentinel-2: %d acquisitions (%d items) over the AOI in %s with cloud cover <= %s",
        len(acquisitions),
        len(kept),
        window,
        max_cloud_cover,
    )
    return acquisitions


# ----------------------------------------------------------------------------------------- Sentinel-1
def _s1_passes(items: list[dict], aoi: shapely.Geometry, s2_time: datetime) -> list[S1Pass]:
    groups: dict[tuple, list[dict]] = {}
    for it in items:
        if not it.get("geometry") or not shapely.geometry.shape(it["geometry"]).intersects(aoi):
            continue
        p = it["properties"]
        key = (
            item_datetime(it).date(),
            p.get("platform"),
            p.get("sat:relative_orbit"),
            p.get("sat:orbit_state"),
        )
        groups.setdefault(key, []).append(it)
    passes = []
    for (_, platform, orbit, state), group in groups.items():
        group.sort(key=lambda it: (item_datetime(it), it["id"]))
        times = [item_datetime(it) for it in group]
        t = times[0] + (times[-1] - times[0]) / 2
        passes.append(
            S1Pass(
                time=t,
                gap_days=abs((t - s2_time).total_seconds()) / 86400.0,
                orbit_state=state,
                relative_orbit=orbit,
                platform=platform,
                coverage=aoi_coverage(aoi, [it.get("geometry") for it in group]),
                items=group,
            )
        )
    return passes


def _rank(p: S1Pass) -> tuple:
    # Gaps are compared in whole days: a few hours matter less than covering more of the AOI.
    return (math.floor(p.gap_days + 0.5), -round(p.coverage, 3), p.gap_days, p.time)


def select_s1(
    acquisition: Acquisition,
    s1_items: Sequence[dict],
    aoi: Any,
    max_gap_days: float = 12,
    *,
    min_coverage: float = 0.95,
    wider_items: Sequence[dict] | None = None,
    collection: str = S1_COLLECTION,
    _log_failure: bool = True,
) -> Pairing:
    """Choose among ``s1_items`` the pass for ``acquisition`` (the decision part of :func:`pair_s1`).

    A pass is the frames of one date, platform, orbit and orbit state (mosaicked by the cube); it must
    lie within ``max_gap_days`` and cover at least ``min_coverage`` of the AOI. Candidates are ranked by
    gap in whole days, then by coverage (ties prefer the pass covering more), then by exact gap.
    ``wider_items`` (a wider search) only serves to name the nearest pass in :class:`NoSentinel1Error`.
    """
    geom = aoi if isinstance(aoi, shapely.Geometry) else parse_aoi(aoi)
    t = acquisition.time
    passes = _s1_passes([normalize_item(it) for it in s1_items], geom, t)
    ok = [p for p in passes if p.gap_days <= max_gap_days and p.coverage >= min_coverage]
    if not ok:
        pool = _s1_passes([normalize_item(it) for it in wider_items], geom, t) if wider_items else []
        pool = pool or passes
        nearest = min(pool, key=lambda p: (p.gap_days, -p.coverage)) if pool else None
        if nearest is None:
            detail = "no Sentinel-1 pass intersecting the AOI was found near that date"
        else:
            detail = f"nearest pass found: {nearest.describe()}"
        msg = (
            f"No {collection} pass covering >= {min_coverage:.0%} of the AOI within {max_gap_days:g} days of the "
            f"Sentinel-2 acquisition {t:%Y-%m-%d %H:%M} UTC; {detail}. Raise max_gap_days, lower min_coverage, or "
            "map optical-only (allow_optical_only=True)."
        )
        if _log_failure:
            logger.warning(msg)
        raise NoSentinel1Error(msg, s2_time=t, max_gap_days=max_gap_days, nearest=nearest)
    best = min(ok, key=_rank)
    pairing = Pairing(
        s1_items=best.items,
        s1_time=best.time,
        gap_days=best.gap_days,
        orbit_state=best.orbit_state,
        relative_orbit=best.relative_orbit,
        platform=best.platform,
        coverage=best.coverage,
        max_gap_days=float(max_gap_days),
        candidates=len(ok),
    )
    logger.info(
        "Paired Sentinel-2 %s with Sentinel-1 %s (%d candidate passes): %s",
        f"{t:%Y-%m-%d %H:%M}",
        best.describe(),
        len(ok),
        json.dumps(pairing.as_dict()),
    )
    return pairing


def pair_s1(
    client,
    acquisition: Acquisition,
    aoi: Any,
    max_gap_days: float = 12,
    *,
    min_coverage: float = 0.95,
    collection: str = S1_COLLECTION,
) -> Pairing:
    """The Sentinel-1 RTC pass nearest in time to ``acquisition`` within ``max_gap_days`` covering the AOI.

    Searches ``collection`` within +-``max_gap_days`` and decides with :func:`select_s1`. On failure a
    wider window (3 x ``max_gap_days``, at least 30 days) is searched so that :class:`NoSentinel1Error`
    can name the nearest pass;
    :class:`MissingCollectionError` when the catalog has no ``collection`` (Earth Search).
    """
    geom = parse_aoi(aoi)
    t = acquisition.time
    gap = timedelta(days=max_gap_days)
    items = _search(client, collection=collection, aoi=geom, start=t - gap, end=t + gap)
    if not items:
        _require_collection(
            client,
            collection,
            hint="Earth Search has no terrain-corrected Sentinel-1 (its sentinel-1-grd is not a valid "
            "substitute); use the Planetary Computer for SAR or map optical-only (allow_optical_only=True).",
        )
    try:
        return select_s1(
            acquisition, items, geom, max_gap_days, min_coverage=min_coverage, collection=collection, _log_failure=False
        )
    except NoSentinel1Error:
        wide = timedelta(days=max(3 * max_gap_days, NEAREST_S1_SEARCH_DAYS))
        try:
            wider = _search(client, collection=collection, aoi=geom, start=t - wide, end=t + wide)
        except StacApiError:
            wider = items  # the error worth reporting is the missing pass; keep what the narrow search found
        return select_s1(
            acquisition,
            items,
            geom,
            max_gap_days,
            min_coverage=min_coverage,
            wider_items=wider,
            collection=collection,
        )


def find_pairs(
    client,
    aoi: Any,
    start: Any,
    end: Any | None = None,
    *,
    max_cloud_cover: float = 100.0,
    max_gap_days: float = 12,
    min_coverage: float = 0.95,
    allow_optical_only: bool = False,
    s2_collection: str = S2_COLLECTION,
    s1_collection: str = S1_COLLECTION,
) -> list[Pair]:
    """Search Sentinel-2 and pair every acquisition with Sentinel-1 (see :func:`search_s2`, :func:`pair_s1`).

    With ``allow_optical_only`` an acquisition without a Sentinel-1 pass becomes a ``Pair`` with
    ``s1=None`` and the reason recorded in ``s1_missing_reason``; otherwise the
    :class:`NoSentinel1Error` propagates.
    """
    geom = parse_aoi(aoi)
    pairs = []
    for acq in search_s2(client, geom, start, end, max_cloud_cover, collection=s2_collection):
        try:
            s1 = pair_s1(client, acq, geom, max_gap_days, min_coverage=min_coverage, collection=s1_collection)
        except (NoSentinel1Error, MissingCollectionError) as e:
            if not allow_optical_only:
                raise
            logger.warning("Mapping %s optical-only: %s", f"{acq.time:%Y-%m-%d}", e)
            pairs.append(Pair(s2=acq, s1=None, aoi=geom, s1_missing_reason=str(e)))
            continue
        pairs.append(Pair(s2=acq, s1=s1, aoi=geom))
    return pairs
