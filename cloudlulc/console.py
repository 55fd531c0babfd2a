"""What a person running CloudLULC sees: concise log lines and a progress bar per written slice.

The library logs through :mod:`logging` (``cloudlulc.*`` loggers) and never configures it behind a
caller's back, except through :func:`configure_logging`, which the CLI and :func:`map_aoi` call
when nothing else has configured logging: a run from a script or a notebook then says what it does
instead of staying silent for minutes. Library and third-party chatter (rasterio, urllib3) stays at
WARNING.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["configure_logging", "slice_progress"]

_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
_HANDLER_NAME = "cloudlulc-console"


def configure_logging(level: int | str = "INFO", *, force: bool = False) -> None:
    """Show ``cloudlulc`` log records at ``level`` on stderr, one short line each.

    Does nothing when the application configured logging already (a handler on the root or the
    ``cloudlulc`` logger), unless ``force``; calling it twice adds no second handler.
    """
    logger = logging.getLogger("cloudlulc")
    ours = [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]
    if not force and not ours and (logging.getLogger().handlers or logger.handlers):
        return
    if not ours:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


@contextmanager
def slice_progress(label: str, *, enabled: bool | None = None) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over the chunks of one slice; yields ``update(done, total)``.

    ``enabled=None`` shows it only on an interactive terminal (logs and CI stay clean).
    """
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="chunk", disable=None if enabled is None else not enabled)
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
