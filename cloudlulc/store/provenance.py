"""Per-slice provenance in the store's attributes: JSON-safe, token-free, fingerprinted."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

_VOLATILE_KEYS = {"created", "creation_time"}


_URL_QUERY = re.compile(r"^(https?://[^?#\s]+)[?#].*$", re.IGNORECASE)


def strip_query(value: Any) -> Any:
    """Recursively drop ``?query`` / ``#fragment`` from URL strings: SAS tokens must never be stored."""
    if isinstance(value, str):
        m = _URL_QUERY.match(value)
        return m.group(1) if m else value
    if isinstance(value, Mapping):
        return {str(k): strip_query(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_query(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """Attrs as plain JSON (datetimes -> ISO strings, numpy scalars -> Python) for Zarr attributes."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.datetime64, pd.Timestamp, datetime)):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _fingerprint(attrs: Mapping[str, Any]) -> str:
    stable = {k: v for k, v in attrs.items() if k not in _VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return version("cloudlulc")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "unknown"


def _set_provenance(root: zarr.Group, key: str, entry: dict[str, Any]) -> None:
    prov = dict(root.attrs.get("provenance", {}))
    prov[key] = entry
    root.attrs["provenance"] = prov
