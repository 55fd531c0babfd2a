"""Signed hrefs: strip, inspect and renew Planetary Computer SAS tokens.

Signed hrefs carry SAS tokens that expire within about an hour. They are never written to logs or
outputs (:func:`unsigned_href`, :func:`strip_tokens`); long runs re-sign with :func:`resign_items`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit, urlunsplit

_SAS_KEYS = {"st", "se", "sp", "sv", "sr", "sig", "skoid", "sktid", "skt", "ske", "sks", "skv", "sip", "spr"}


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
