"""Times, in one place: parsing what STAC servers and users write, and the store's time encoding.

Everything here returns timezone-aware UTC ``datetime`` or naive-UTC ``numpy.datetime64`` (the
store's convention); naive inputs are taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd

#: two acquisition times closer than this are the same acquisition (the store keeps milliseconds)
SAME_TIME_TOLERANCE = np.timedelta64(1, "s")

TimeLike = str | date | datetime | np.datetime64 | pd.Timestamp


def parse_datetime(value: str | None) -> datetime | None:
    """ISO 8601 text as aware UTC, or None for None.

    Accepts ``Z`` and offsets, a space instead of ``T`` (Planetary Computer S1 RTC
    ``start_datetime``) and more than six fractional digits (pgstac).
    """
    if value is None:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if len(text) > 10 and text[10] == " ":
        text = text[:10] + "T" + text[11:]
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    return as_utc(datetime.fromisoformat(text))


def as_utc(value: TimeLike, *, end_of_day: bool = False) -> datetime:
    """``value`` as an aware UTC datetime; a calendar day (``date`` or ``'YYYY-MM-DD'``) is its
    first instant, or its last with ``end_of_day``."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        start = datetime.combine(value, time.min, tzinfo=UTC)
        return start + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else start
    if isinstance(value, np.datetime64):
        return as_utc(datetime.fromisoformat(str(value.astype("datetime64[us]"))))
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            try:
                day = date.fromisoformat(text)
            except ValueError as exc:
                raise ValueError(f"cannot read {text!r} as a date (YYYY-MM-DD): {exc}") from None
            return as_utc(day, end_of_day=end_of_day)
        try:
            parsed = parse_datetime(text)
        except ValueError as exc:
            raise ValueError(f"cannot read {text!r} as a date (YYYY-MM-DD) or ISO datetime: {exc}") from None
        assert parsed is not None
        return parsed
    raise TypeError(f"Cannot use {value!r} as a date; pass 'YYYY-MM-DD', a date or a datetime.")


def parse_time_window(value: str | date | datetime) -> tuple[datetime, datetime]:
    """A target date or range as an inclusive UTC ``(start, end)`` window.

    Accepts ``"2024-04-19"`` (that whole UTC day), an ISO datetime (that instant), or an interval
    ``"start/end"`` of either (``..`` open ends are refused: a mapping run needs a bounded search).
    """
    if isinstance(value, datetime):
        dt = as_utc(value)
        return dt, dt
    if isinstance(value, date):
        return as_utc(value), as_utc(value, end_of_day=True)
    text = str(value).strip()
    if not text:
        raise ValueError("time is empty: give a date '2024-04-19' or a range '2024-04-01/2024-04-30'")
    if "/" in text:
        parts = text.split("/")
        if len(parts) != 2 or ".." in parts or not all(p.strip() for p in parts):
            raise ValueError(f"time range {text!r} must be 'start/end' with both ends given")
        start, end = as_utc(parts[0].strip()), as_utc(parts[1].strip(), end_of_day=True)
    else:
        start, end = as_utc(text), as_utc(text, end_of_day=True)
    if end < start:
        raise ValueError(f"time range {text!r} ends before it starts")
    return start, end


def to_datetime64(value: TimeLike, unit: str = "ns") -> np.datetime64:
    """``value`` as naive-UTC ``numpy.datetime64`` in ``unit`` (the store's time convention)."""
    if isinstance(value, np.datetime64):
        return value.astype(f"datetime64[{unit}]")
    ts = pd.Timestamp(as_utc(value) if isinstance(value, (str, date)) else value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_datetime64().astype(f"datetime64[{unit}]")


def iso_utc(value: TimeLike, unit: str = "s") -> str:
    """``YYYY-MM-DDTHH:MM:SS[.fff]Z`` at ``unit`` precision (``"s"`` or ``"ms"``)."""
    return str(to_datetime64(value, unit)) + "Z"


def same_time(a: TimeLike, b: TimeLike, tolerance: np.timedelta64 = SAME_TIME_TOLERANCE) -> bool:
    """Whether two times are the same acquisition (within ``tolerance``)."""
    return bool(abs(to_datetime64(a) - to_datetime64(b)) <= tolerance)


def days_between(a: TimeLike, b: TimeLike) -> float:
    """``b - a`` in days (fractional)."""
    return (as_utc(b) - as_utc(a)).total_seconds() / 86400.0
