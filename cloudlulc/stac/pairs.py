"""Pairs: a Sentinel-2 acquisition with its Sentinel-1 pass, the unit every later stage maps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from cloudlulc.stac.aoi import parse_aoi
from cloudlulc.stac.errors import MissingCollectionError, NoSentinel1Error
from cloudlulc.stac.sentinel1 import S1_COLLECTION, Pairing, pair_s1
from cloudlulc.stac.sentinel2 import S2_COLLECTION, Acquisition, search_s2
from cloudlulc.stac.urls import redact, resign_items

if TYPE_CHECKING:
    from pystac_client import Client

logger = logging.getLogger(__name__)


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
            "s1_missing_reason": redact(self.s1_missing_reason) if self.s1_missing_reason else None,
            "aoi_bounds_lonlat": list(self.aoi.bounds) if self.aoi is not None else None,
        }


def resign_pair(pair: Pair, signer: Callable[[str], str] | None = None) -> Pair:
    """The same pairing decision with freshly signed hrefs (S2 and S1 items)."""
    s2 = replace(pair.s2, items=resign_items(pair.s2.items, signer))
    s1 = replace(pair.s1, s1_items=resign_items(pair.s1.s1_items, signer)) if pair.s1 is not None else None
    return replace(pair, s2=s2, s1=s1)


def find_pairs(
    client: Client,
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
