"""Exceptions raised by the dataset builder.

Each one names the problem and what to change, so a flow run log or a CLI user can act on it without
reading the code.
"""

from __future__ import annotations


class DatasetError(RuntimeError):
    """Base class: building or reading a training dataset failed."""


class NoLabelCoverageError(DatasetError):
    """The label product has no valid pixels (no items, or only nodata) over the AOI."""


class NoPatchesError(DatasetError):
    """Every candidate patch was removed; the message lists how many each filter removed."""

    def __init__(self, message: str, dropped: dict[str, int] | None = None):
        super().__init__(message)
        self.dropped = dict(dropped or {})


class NoScenesError(DatasetError):
    """The STAC search found no usable Sentinel-2 acquisitions (or no clear reference) for the AOI."""


class StoreMismatchError(DatasetError):
    """The output store exists but was built with different parameters (resuming would mix datasets)."""
