"""Build a CloudLULC-Set style dataset from a STAC catalog (work in progress)."""

from __future__ import annotations

from typing import Any, Callable

from cloudlulc.dataset.params import DatasetParams, DatasetSummary

#: ``hook(event, region_id)`` is called at "region_written" (patches in the store, not yet committed)
#: and "region_done" (committed); tests raise from it to simulate a crash.
Hook = Callable[[str, str], None]


def build_dataset(
    params: DatasetParams,
    client: Any = None,
    progress: bool = True,
    hook: Hook | None = None,
) -> DatasetSummary:
    """Build (or resume) the dataset described by ``params``; see :mod:`cloudlulc.dataset`."""
    raise NotImplementedError("cloudlulc.dataset.build_dataset is being written (engineer F)")
