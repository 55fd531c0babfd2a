"""Sentinel-2 L2A: search the AOI and group its tiles into acquisitions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import shapely
import shapely.geometry

from cloudlulc.classes import S2_BANDS
from cloudlulc.stac.aoi import aoi_coverage, fix_footprint, geodesic_area_m2, parse_aoi
from cloudlulc.stac.client import client_url, search_items
from cloudlulc.stac.errors import NoSentinel2Error
from cloudlulc.stac.items import asset_hrefs, item_datetime, normalize_item, property_values
from cloudlulc.times import as_utc

if TYPE_CHECKING:
    from pystac_client import Client

logger = logging.getLogger(__name__)


S2_COLLECTION = "sentinel-2-l2a"


@dataclass(frozen=True)
class Acquisition:
    """One Sentinel-2 acquisition: the same-day tiles of one orbit over the AOI, mosaicked by the cube.

    ``cloud_cover`` is the cloud over the AOI in percent: each tile's ``eo:cloud_cover`` weighted by
    the part of the AOI it supplies in the mosaic (None when no tile says). An acquisition is kept or
    dropped whole by it, never tile by tile: dropping one cloudy tile leaves part of the AOI without
    optical data, a worse input than the cloudy tile the network was made for.
    """

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
        return {
            "datetime": self.time.isoformat(),
            "platform": self.platform,
            "relative_orbit": self.relative_orbit,
            "item_ids": self.item_ids,
            "hrefs": asset_hrefs(self.items, [*S2_BANDS, "SCL"]),
            "cloud_cover": None if self.cloud_cover is None else round(self.cloud_cover, 2),
            "cloud_cover_method": "eo:cloud_cover of the tiles, weighted by the AOI area each supplies",
            "tile_cloud_cover": {it["id"]: it["properties"].get("eo:cloud_cover") for it in self.items},
            "aoi_coverage": round(self.coverage, 4),
            "processing_baselines": list(self.processing_baselines),
        }


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
        group.sort(key=lambda it: (_cloud(it), it["id"]))
        times = sorted(item_datetime(it) for it in group)
        acquisitions.append(
            Acquisition(
                time=times[len(times) // 2],
                platform=platform,
                relative_orbit=orbit,
                items=group,
                cloud_cover=aoi_cloud_cover(group, geom),
                coverage=aoi_coverage(geom, [it.get("geometry") for it in group]),
                processing_baselines=tuple(
                    sorted({str(b) for b in property_values(group, "s2:processing_baseline") if b})
                ),
            )
        )
    acquisitions.sort(key=lambda a: a.time)
    return acquisitions


def _cloud(item: dict) -> float:
    value = item["properties"].get("eo:cloud_cover")
    return 100.0 if value is None else float(value)


def aoi_cloud_cover(items: Sequence[dict], aoi: shapely.Geometry) -> float | None:
    """Cloud over ``aoi`` in percent from the items' ``eo:cloud_cover``, each weighted by the AOI
    area it supplies when mosaicked in the given order (first valid wins); None when no item that
    supplies some of the AOI has ``eo:cloud_cover``."""
    remaining = aoi
    weighted = area = 0.0
    for it in items:
        if remaining.is_empty or not it.get("geometry"):
            continue
        part = remaining.intersection(fix_footprint(shapely.geometry.shape(it["geometry"])))
        a = geodesic_area_m2(part)
        if a <= 0:
            continue
        remaining = remaining.difference(part)
        cc = it["properties"].get("eo:cloud_cover")
        if cc is not None:
            weighted += float(cc) * a
            area += a
    return weighted / area if area > 0 else None


def search_s2(
    client: Client,
    aoi: Any,
    start: Any,
    end: Any | None = None,
    max_cloud_cover: float = 100.0,
    *,
    collection: str = S2_COLLECTION,
) -> list[Acquisition]:
    """Sentinel-2 L2A acquisitions over ``aoi`` between ``start`` and ``end`` (inclusive dates), oldest first.

    The same-day tiles of one orbit become one :class:`Acquisition`, kept whole when its cloud over
    the AOI (:func:`aoi_cloud_cover`) is at most ``max_cloud_cover`` percent and dropped whole
    otherwise (at 100, nothing is dropped for cloud; unknown cloud passes only then). Raises
    :class:`NoSentinel2Error` when nothing is left, saying whether the cloud limit removed everything.
    """
    geom = parse_aoi(aoi)
    t0, t1 = as_utc(start), as_utc(end if end is not None else start, end_of_day=True)
    if t1 < t0:
        raise ValueError(f"end {t1:%Y-%m-%d} is before start {t0:%Y-%m-%d}.")
    items = search_items(client, collection=collection, aoi=geom, start=t0, end=t1, sortby="properties.datetime")
    window = f"{t0:%Y-%m-%d}..{t1:%Y-%m-%d}"
    if not items:
        raise NoSentinel2Error(
            f"No {collection} items intersect the AOI {tuple(round(v, 4) for v in geom.bounds)} in {window} "
            f"on {client_url(client)}; widen the date range or check the AOI."
        )
    found = group_acquisitions(items, geom)
    acquisitions = [a for a in found if (a.cloud_cover if a.cloud_cover is not None else 100.0) <= max_cloud_cover]
    for a in found:
        if a not in acquisitions:
            logger.info(
                "Sentinel-2 %s dropped: %s%% cloud over the AOI > max_cloud_cover %s",
                a.time.isoformat(),
                "unknown" if a.cloud_cover is None else f"{a.cloud_cover:.1f}",
                max_cloud_cover,
            )
    if not acquisitions:
        best = min((a.cloud_cover for a in found if a.cloud_cover is not None), default=None)
        least = "unknown" if best is None else f"{best:.1f}%"
        raise NoSentinel2Error(
            f"{len(found)} Sentinel-2 acquisitions cover the AOI in {window} but none has at most "
            f"{max_cloud_cover:g}% cloud over it (least cloudy: {least}); raise max_cloud_cover (100 keeps "
            "every acquisition: the radar maps under cloud) or widen the dates."
        )
    logger.info(
        "Sentinel-2: %d of %d acquisitions (%d items) over the AOI in %s with cloud over the AOI <= %s%%",
        len(acquisitions),
        len(found),
        sum(len(a.items) for a in acquisitions),
        window,
        max_cloud_cover,
    )
    return acquisitions
