"""STAC access: open a catalog, search Sentinel-2 L2A, pair each acquisition with a Sentinel-1 RTC pass.

Everything returned is plain data (item dicts, dataclasses), not pystac objects (see
:mod:`cloudlulc.stac.items`). The flow of a search reads top to bottom:

* :mod:`~cloudlulc.stac.client`: :func:`open_catalog` (Planetary Computer signing, retries, timeouts);
* :mod:`~cloudlulc.stac.aoi`: :func:`parse_aoi`, the one parser of areas of interest;
* :mod:`~cloudlulc.stac.sentinel2`: :func:`search_s2` -> list of :class:`Acquisition`;
* :mod:`~cloudlulc.stac.sentinel1`: :func:`pair_s1` -> :class:`Pairing`;
* :mod:`~cloudlulc.stac.pairs`: :func:`find_pairs` -> list of :class:`Pair`, what the cube stage reads.
"""

from cloudlulc.stac.aoi import MAX_AOI_AREA_KM2, aoi_coverage, parse_aoi
from cloudlulc.stac.client import EARTH_SEARCH_URL, PLANETARY_COMPUTER_URL, open_catalog, search_items
from cloudlulc.stac.errors import (
    AoiError,
    AssetReadError,
    CatalogError,
    MissingCollectionError,
    NoSentinel1Error,
    NoSentinel2Error,
    StacApiError,
)
from cloudlulc.stac.items import asset_hrefs, item_datetime, normalize_item
from cloudlulc.stac.pairs import Pair, find_pairs, resign_pair
from cloudlulc.stac.sentinel1 import S1_COLLECTION, Pairing, S1Pass, pair_s1, select_s1
from cloudlulc.stac.sentinel2 import S2_COLLECTION, Acquisition, group_acquisitions, search_s2
from cloudlulc.stac.urls import items_need_resign, redact, redact_url, resign_items, token_expiry, unsigned_href

__all__ = [
    "EARTH_SEARCH_URL",
    "MAX_AOI_AREA_KM2",
    "PLANETARY_COMPUTER_URL",
    "S1_COLLECTION",
    "S2_COLLECTION",
    "Acquisition",
    "AoiError",
    "AssetReadError",
    "CatalogError",
    "MissingCollectionError",
    "NoSentinel1Error",
    "NoSentinel2Error",
    "Pair",
    "Pairing",
    "S1Pass",
    "StacApiError",
    "aoi_coverage",
    "asset_hrefs",
    "find_pairs",
    "group_acquisitions",
    "item_datetime",
    "items_need_resign",
    "normalize_item",
    "open_catalog",
    "pair_s1",
    "parse_aoi",
    "redact",
    "redact_url",
    "resign_items",
    "resign_pair",
    "search_items",
    "search_s2",
    "select_s1",
    "token_expiry",
    "unsigned_href",
]
