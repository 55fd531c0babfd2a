"""URLs that may carry secrets: redact them for storage and logs, inspect and renew SAS tokens.

Planetary Computer hrefs carry SAS tokens that expire within about an hour; catalog URLs may carry
``user:password@``. Neither is ever written to attrs, results or logs: :func:`redact_url` (one URL)
and :func:`redact` (free text) drop userinfo, query strings and fragments. Long runs re-sign with
:func:`resign_items`, which keeps non-token query parameters (:func:`unsigned_href`).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit, urlunsplit

_SAS_KEYS = {"st", "se", "sp", "sv", "sr", "sig", "skoid", "sktid", "skt", "ske", "sks", "skv", "sip", "spr"}


def unsigned_href(href: str) -> str:
    """``href`` without a SAS token, to be signed again: the query string is dropped when it carries
    SAS keys (``sig``, ``se``...); other query strings (the PC tilejson ``?collection=...``) are kept.
    For storing or logging use :func:`redact_url`."""
    parts = urlsplit(href)
    if not parts.query:
        return href
    keys = set(parse_qs(parts.query, keep_blank_values=True))
    if keys & _SAS_KEYS:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment))
    return href


def redact_url(url: str) -> str:
    """``url`` as it may be stored or logged: no userinfo (``user:password@``), query or fragment.

    Text that is not a URL with a scheme and host (a local path, say) is returned unchanged.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_URL_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)\]]+")


def redact(text: str) -> str:
    """``text`` (an error message, a log record) with every URL in it passed through :func:`redact_url`."""
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)


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


class RedactingFilter(logging.Filter):
    """A logging filter that passes every URL in a record through :func:`redact_url`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


#: loggers of the libraries that read assets and catalogs for us, which log URLs as they open them
#: (rasterio: "Dataset <... name='https://...?sig=...'> is started")
_URL_LOGGERS = (
    "rasterio",
    "rasterio._base",
    "rasterio._env",
    "rasterio._err",
    "rasterio._io",
    "rasterio._filepath",
    "rasterio.env",
    "rasterio.session",
    "rasterio.vrt",
    "urllib3.connectionpool",
    "pystac_client",
    "pystac_client.stac_api_io",
    "stackstac",
    "planetary_computer",
)
_FILTER = RedactingFilter()


def redact_library_logs() -> None:
    """Keep signed and credentialed URLs out of the logs of rasterio, urllib3, pystac-client and
    stackstac, whatever level a deployment logs them at (idempotent)."""
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
