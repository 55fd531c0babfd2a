"""Sentinel-2 L2A: search the AOI and group its tiles into acquisitions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from cloudlulc.classes import S2_BANDS
from cloudlulc.stac.aoi import aoi_coverage, parse_aoi
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
        clouds = [float(c) for c in property_values(group, "eo:cloud_cover") if c is not None]
        acquisitions.append(
            Acquisition(
                time=times[len(times) // 2],
                platform=platform,
                relative_orbit=orbit,
                items=group,
                cloud_cover=float(np.mean(clouds)) if clouds else None,
                coverage=aoi_coverage(geom, [it.get("geometry") for it in group]),
                processing_baselines=tuple(
                    sorted({str(b) for b in property_values(group, "s2:processing_baseline") if b})
                ),
            )
        )
    acquisitions.sort(key=lambda a: a.time)
    return acquisitions


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

    Items with ``eo:cloud_cover`` above ``max_cloud_cover`` (or without it) are dropped; the same-day
    tiles of one orbit become one :class:`Acquisition`. Raises :class:`NoSentinel2Error` when nothing
    matches, saying whether the cloud limit removed everything.
    """
    geom = parse_aoi(aoi)
    t0, t1 = as_utc(start), as_utc(end if end is not None else start, end_of_day=True)
    if t1 < t0:
        raise ValueError(f"end {t1:%Y-%m-%d} is before start {t0:%Y-%m-%d}.")
    items = search_items(
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
            f"on {client_url(client)}; widen the date range or check the AOI."
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
