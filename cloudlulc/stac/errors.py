"""Errors of STAC access: each names the input, what was expected, and what to change."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cloudlulc.errors import CloudLULCError
from cloudlulc.stac.urls import redact, redact_url

if TYPE_CHECKING:
    from cloudlulc.stac.sentinel1 import S1Pass


class CatalogError(CloudLULCError):
    """A STAC catalog, its items or its assets cannot give what the run needs."""


class AoiError(CatalogError, ValueError):
    """The area of interest cannot be used (unparseable, empty, not an area, or too large)."""


class StacApiError(CatalogError):
    """The STAC API could not be reached or kept failing (5xx / connection errors) after retries."""

    def __init__(self, url: str, detail: str):
        self.url = redact_url(url)
        super().__init__(
            f"STAC API {self.url} failed after retries: {redact(detail)}. Check the URL and your network, "
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

    def __init__(self, href: str, detail: str, *, transient: bool = False):
        self.href = redact_url(href)
        #: whether a later attempt may succeed (a network failure, not a missing asset)
        self.transient = transient
        super().__init__(
            f"Could not read asset {self.href}: {redact(detail)}. The file may be missing (HTTP 404) or "
            "its SAS token expired (re-sign with cloudlulc.stac.resign_pair); pass errors_as_nodata=True "
            "to build_cube to map such assets as nodata instead."
        )
