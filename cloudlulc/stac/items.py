"""STAC item dicts in the one shape the rest of CloudLULC reads.

Items stay plain dicts, as the server sent them: pystac 1.15 migrates ``proj:epsg`` to
``proj:code`` on load and stackstac 0.5.1 reads only ``proj:epsg`` (DESIGN.md "Known pitfalls").
:func:`normalize_item` smooths over the shapes real APIs return.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudlulc.stac.errors import CatalogError
from cloudlulc.stac.urls import redact_url
from cloudlulc.times import parse_datetime

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


def property_values(items: Sequence[dict], key: str) -> list[Any]:
    return [it.get("properties", {}).get(key) for it in items]


def asset_hrefs(items: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{item_id: {asset_key: unsigned href}}`` for the given asset keys (for provenance, never tokens)."""
    return {
        it["id"]: {k: redact_url(it["assets"][k]["href"]) for k in keys if k in it.get("assets", {})} for it in items
    }
