"""Per-slice records in the store's attributes: JSON-safe, secret-free, fingerprinted.

Root attributes hold JSON *strings* (``provenance``, ``slots``, ``classes``), so that the store's
attributes are netCDF-safe: ``xr.open_zarr(store).to_netcdf(...)`` works, and one attribute write
(atomic: ``zarr.json`` is replaced whole) updates all of them together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from cloudlulc.stac.urls import redact

__all__ = ["fingerprint", "jsonable", "read_json_attr", "redact_values", "software_version"]

_VOLATILE_KEYS = {"created", "creation_time", "completed"}


def redact_values(value: Any) -> Any:
    """``value`` with every string passed through :func:`cloudlulc.stac.redact`: URLs lose their
    userinfo, query and fragment (SAS tokens, passwords) before anything is stored."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): redact_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (datetimes -> ISO strings, numpy scalars -> Python)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.datetime64, pd.Timestamp, datetime, Path)):
        return str(obj)
    return repr(obj)


def fingerprint(entry: Mapping[str, Any]) -> str:
    """A short hash of what decides a slice's pixels (its record without times of day)."""
    stable = {k: v for k, v in entry.items() if k not in _VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("cloudlulc")
    except Exception:  # pragma: no cover - a source tree without metadata
        return "unknown"


def read_json_attr(root: zarr.Group, name: str, default: Any) -> Any:
    """A root attribute stored as a JSON string (or, in stores of earlier versions, as JSON data)."""
    value = root.attrs.get(name, default)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value
