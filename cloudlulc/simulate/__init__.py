"""Simulated Sentinel-2 / Sentinel-1 scenes and a Planetary-Computer-shaped STAC catalog.

SIMULATED DATA, for tests, demos and CPU training without network access:

- :func:`simulate_scene` renders one co-registered acquisition in memory (``SimScene``);
- :func:`write_demo_catalog` writes COGs and STAC JSON with the collection ids, asset keys and
  property names of the Planetary Computer (``sentinel-2-l2a``, ``sentinel-1-rtc``,
  ``esa-worldcover``), ready for ``rustac serve`` (see :mod:`cloudlulc.testing.stac_server`);
  ``SimCatalog.load(dir)`` re-opens one and :func:`ensure_demo_catalog` reuses or writes the demo
  catalog (default ``.demo/catalog``).

CLI: ``python -m cloudlulc.simulate <out_dir> [--seed N]``.
"""

from cloudlulc.simulate.catalog import (
    COLLECTION_IDS,
    DEFAULT_DEMO_DIR,
    DEFAULT_S1,
    DEFAULT_S2,
    S1Pass,
    S2Acquisition,
    SimCatalog,
    ensure_demo_catalog,
    rewrite_hrefs,
    write_demo_catalog,
)
from cloudlulc.simulate.scene import Landscape, SimScene, make_landscape, simulate_scene

__all__ = [
    "COLLECTION_IDS",
    "DEFAULT_DEMO_DIR",
    "DEFAULT_S1",
    "DEFAULT_S2",
    "Landscape",
    "S1Pass",
    "S2Acquisition",
    "SimCatalog",
    "SimScene",
    "ensure_demo_catalog",
    "make_landscape",
    "rewrite_hrefs",
    "simulate_scene",
    "write_demo_catalog",
]
