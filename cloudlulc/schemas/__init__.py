"""Offline STAC validation against vendored JSON schemas (see README.md in this directory).

pystac validates with JSON schemas it downloads from ``schemas.stacspec.org`` and
``stac-extensions.github.io``; it ships only the STAC 1.1.0 core. The machines this project runs
its tests on have no internet, so the STAC 1.0.0 core and every extension schema the Planetary
Computer items (and the simulated catalog) declare are vendored here and served to pystac's
validator from memory. A schema that is not vendored fails loudly instead of hitting the network.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pystac
from pystac.validation import JsonSchemaSTACValidator, validate_dict
from pystac.validation.stac_validator import GetSchemaError

SCHEMA_DIR = Path(__file__).resolve().parent
STAC_SPEC_BASE = "https://schemas.stacspec.org"
EXTENSIONS_BASE = "https://stac-extensions.github.io"

__all__ = ["OfflineSTACValidator", "SCHEMA_DIR", "local_schemas", "validate_stac"]


@cache
def _load_local() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        rel = path.relative_to(SCHEMA_DIR).as_posix()
        if rel.startswith("stac-spec/"):
            url = f"{STAC_SPEC_BASE}/{rel.removeprefix('stac-spec/')}"
        else:
            url = f"{EXTENSIONS_BASE}/{rel}"
        schemas[url] = json.loads(path.read_text())
    return schemas


def local_schemas() -> dict[str, dict[str, Any]]:
    """URL -> schema of every vendored schema (a fresh copy; validators may mutate their cache)."""
    return json.loads(json.dumps(_load_local()))


class OfflineSTACValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator, restricted to pystac's bundled and our vendored schemas."""

    def __init__(self) -> None:
        super().__init__()
        self.schema_cache.update(local_schemas())

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        key = schema_uri.split("#", 1)[0]
        if key in self.schema_cache:
            return self.schema_cache[key]
        raise GetSchemaError(
            schema_uri,
            FileNotFoundError(
                f"schema {key} is not vendored in {SCHEMA_DIR} and validation runs offline: add its JSON "
                "there (see README.md) or drop the extension from stac_extensions"
            ),
        )


@cache
def _validator() -> OfflineSTACValidator:
    return OfflineSTACValidator()


def validate_stac(stac_dict: dict[str, Any]) -> list[str]:
    """Validate an item / collection / catalog dict offline; returns the schema URIs it passed.

    Raises :class:`pystac.errors.STACValidationError` (with the best-matching jsonschema error)
    when it does not validate, and :class:`GetSchemaError` when a declared extension schema is
    not vendored.
    """
    return [str(u) for u in validate_dict(stac_dict, validator=_validator()) if u is not None]


# Re-exported for callers that want to catch validation failures without importing pystac.errors.
STACValidationError = pystac.errors.STACValidationError
