"""Flow parameter models and the one place parameter errors are turned into readable messages.

The library owns the parameter models (:class:`cloudlulc.params.MapParams`,
:class:`cloudlulc.dataset.DatasetParams`, :class:`cloudlulc.evaluation.EvaluationParams`) so the CLI,
Python callers and the flows validate identically; this module adds what only the flows need:
the near-real-time parameters and :func:`validate`, which every flow calls first so that bad
parameters fail *before any work starts* with a message naming each bad field.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from cloudlulc.params import MapParams, MappingOptions, TimeText
from cloudlulc.times import as_utc, parse_time_window

__all__ = ["InvalidParameters", "MapParams", "NrtParams", "validate"]

M = TypeVar("M", bound=BaseModel)


class InvalidParameters(ValueError):
    """Flow parameters were rejected before any work started."""


def validate(model: type[M], flow_name: str, values: dict[str, Any]) -> M:
    """``model.model_validate(values)``, re-raised as :class:`InvalidParameters` listing each bad field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(parameters)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {where}: {msg}")
        raise InvalidParameters(
            f"{flow_name}: parameters rejected before any work started:\n" + "\n".join(lines)
        ) from None


def run_with_config_file(model: type[M], flow_name: str, flow_fn: Callable[[M], Any], argv: list[str] | None) -> None:
    """``python -m flows.<name> --config params.json``: validate the JSON as ``model``, run the flow,
    print its result."""
    ap = argparse.ArgumentParser(
        prog=f"python -m flows.{flow_name}", description=f"Run the {flow_name} flow through Prefect."
    )
    ap.add_argument("--config", required=True, help=f"JSON file with {model.__module__}.{model.__name__}")
    ap.add_argument("--json", action="store_true", help="print the flow's full result as JSON")
    a = ap.parse_args(argv)
    with open(a.config) as f:
        params = validate(model, flow_name, json.load(f))
    print_result(flow_fn(params), a.json)


def print_result(result: Any, as_json: bool) -> None:
    """A flow's result on stdout: the full JSON when asked, else its scalar fields, one per line
    (the flow's own log lines and artifacts carry the details)."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                print(f"{key}: {value}")
            elif isinstance(value, (list, dict)):
                print(f"{key}: {len(value)} entr{'y' if len(value) == 1 else 'ies'} (--json shows them)")
    else:
        print(result)


class NrtParams(MappingOptions):
    """Near-real-time mapping: what is new since the store's last mapped time, up to ``now``."""

    #: the mapping itself (its ``time`` is derived per run, see :meth:`map_params`)
    aoi: Any
    output: str
    #: how far back the first run (empty store) looks
    lookback_days: float = Field(30.0, gt=0, le=3650)
    #: end of the search window; None = the current time (tests and backfills pin it)
    now: TimeText | None = None

    def now_utc(self) -> datetime:
        if self.now is None:
            return datetime.now(UTC)
        return parse_time_window(self.now)[1]

    def map_params(self, last_mapped: datetime | None) -> MapParams:
        """The validated :class:`MapParams` of this run's window (see :meth:`map_values`)."""
        return validate(MapParams, "map-aoi-nrt", self.map_values(last_mapped))

    def map_values(self, last_mapped: datetime | None) -> dict[str, Any]:
        """The :class:`MapParams` fields of this run's window.

        The window starts at the *day* of the last mapped time (not the instant): tiles of one
        acquisition carry slightly different datetimes and are grouped by day, so the whole group must
        be seen again to recognise it as already mapped (``skip_mapped`` drops it). An empty store
        starts ``lookback_days`` before ``now``; missed runs simply find several acquisitions.
        """
        end = self.now_utc()
        if last_mapped is None:
            start = end - timedelta(days=self.lookback_days)
        else:
            lm = last_mapped if last_mapped.tzinfo else last_mapped.replace(tzinfo=UTC)
            start = min(lm.replace(hour=0, minute=0, second=0, microsecond=0), end)
        fields = self.model_dump(exclude={"lookback_days"})
        fields["now"] = _iso(end)
        return {**fields, "time": f"{_iso(start)}/{_iso(end)}", "skip_mapped": True, "latest_only": False}

    def oldest_waiting(self, unpaired: dict[str, dict[str, Any]]) -> datetime | None:
        """The oldest acquisition a previous run left waiting for Sentinel-1. Past its wait too: this
        run must see it again to map it optical-only or give it up (``nrt_without_s1``)."""
        waiting = [as_utc(t) for t, u in unpaired.items() if u.get("status") == "waiting"]
        return min(waiting) if waiting else None


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
