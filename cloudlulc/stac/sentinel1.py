"""Sentinel-1 RTC: choose the pass nearest in time to a Sentinel-2 acquisition."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import shapely
import shapely.geometry

from cloudlulc.classes import S1_BANDS
from cloudlulc.stac.aoi import aoi_coverage, fix_footprint, parse_aoi
from cloudlulc.stac.client import require_collection, search_items
from cloudlulc.stac.errors import NoSentinel1Error, StacApiError
from cloudlulc.stac.items import asset_hrefs, item_datetime, normalize_item
from cloudlulc.stac.sentinel2 import Acquisition

if TYPE_CHECKING:
    from pystac_client import Client

logger = logging.getLogger(__name__)


S1_COLLECTION = "sentinel-1-rtc"


#: Half-width of the search that names the nearest Sentinel-1 pass when none is within the gap.
NEAREST_S1_SEARCH_DAYS = 30.0


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


def _s1_passes(items: list[dict], aoi: shapely.Geometry, s2_time: datetime) -> list[S1Pass]:
    groups: dict[tuple, list[dict]] = {}
    for it in items:
        if not it.get("geometry") or not fix_footprint(shapely.geometry.shape(it["geometry"])).intersects(aoi):
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
        "Paired Sentinel-2 %s with Sentinel-1 %s (%d candidate passes)", f"{t:%Y-%m-%d %H:%M}", best.describe(), len(ok)
    )
    logger.debug("pairing: %s", json.dumps(pairing.as_dict()))
    return pairing


def pair_s1(
    client: Client,
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
    items = search_items(client, collection=collection, aoi=geom, start=t - gap, end=t + gap)
    if not items:
        require_collection(
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
            wider = search_items(client, collection=collection, aoi=geom, start=t - wide, end=t + wide)
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
