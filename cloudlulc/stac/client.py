"""Open a STAC API and search it, re-applying every filter client-side.

Filters an API may ignore (rustac ignores ``query`` and ``sortby``) are sent only where
``/conformance`` advertises them and are always re-applied here, so results do not depend on which
STAC server answers.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import shapely
import shapely.geometry

from cloudlulc.stac.aoi import fix_footprint
from cloudlulc.stac.errors import CatalogError, MissingCollectionError, StacApiError
from cloudlulc.stac.items import item_datetime, normalize_item
from cloudlulc.stac.urls import redact, redact_library_logs, redact_url
from cloudlulc.times import parse_datetime

if TYPE_CHECKING:
    from pystac_client import Client

logger = logging.getLogger(__name__)
redact_library_logs()


PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"


EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"


def _is_planetary_computer(url: str) -> bool:
    return "planetarycomputer.microsoft.com" in url


def open_catalog(
    url: str | None = None,
    *,
    sign: bool | None = None,
    max_retries: int = 4,
    backoff_factor: float = 0.5,
    timeout: float = 60.0,
    connect_timeout: float = 15.0,
) -> Client:
    """Open a STAC API as a ``pystac_client.Client``.

    ``url`` defaults to the Planetary Computer; ``sign`` (default: only for the Planetary Computer)
    adds ``planetary_computer.sign_inplace`` as the client's modifier so asset hrefs come back signed.
    Every request waits at most ``connect_timeout`` seconds to connect and ``timeout`` seconds for an
    answer; failed requests (connection errors, timeouts, HTTP 429/5xx) are retried ``max_retries``
    times with exponential backoff (urllib3 ``Retry``), after which :class:`StacApiError` names the
    URL (without credentials).

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
    timeouts = (connect_timeout, timeout)
    stac_io = StacApiIO(max_retries=retry, timeout=timeouts)
    try:
        # Client.open hands its own ``timeout`` to the StacApiIO it is given (None would reset ours)
        client = Client.open(url, modifier=modifier, stac_io=stac_io, timeout=timeouts)
    except Exception as e:
        raise StacApiError(url, f"{type(e).__name__}: {e}") from None
    if stac_io.timeout != timeouts:  # pinned: requests without a timeout would wait forever
        raise RuntimeError(f"pystac-client dropped the request timeout ({stac_io.timeout!r}); pin pystac-client")
    logger.info("Opened STAC API %s (signing: %s)", redact_url(url), bool(sign))
    return client


def client_url(client: Client) -> str:
    """The client's root URL as it may be shown (no credentials, no query)."""
    try:
        return redact_url(client.get_self_href() or "<unknown STAC API>")
    except Exception:
        return "<unknown STAC API>"


_CONFORMANCE_SUFFIX = {"QUERY": "/item-search#query", "SORT": "/item-search#sort", "FILTER": "/item-search#filter"}


def conforms(client, name: str) -> bool:
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


def require_collection(client, collection: str, hint: str = "") -> None:
    try:
        coll = client.get_collection(collection)
    except Exception as e:  # pystac-client raises APIError / NotFound / KeyError depending on the server
        coll = None
        detail = f"{type(e).__name__}: {e}"
    else:
        detail = ""
    if coll is None:
        raise MissingCollectionError(
            f"The STAC API {client_url(client)} has no collection {collection!r} ({redact(detail)[:200]}). "
            f"{hint}".strip()
        )


def search_items(
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
        if value and conforms(client, name):
            kwargs[key] = value
            try:  # pystac-client would warn about (and drop) extensions advertised as v1.1 URIs
                client.add_conforms_to(name)
            except Exception:
                pass
    url = client_url(client)
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
        if geom is None or not fix_footprint(shapely.geometry.shape(geom)).intersects(aoi):
            continue
        items.append(it)
    return items
