"""Shared pytest fixtures: a SIMULATED Planetary-Computer-shaped catalog and a real STAC API over it.

Both are session-scoped and cheap (~2 s on one core): the catalog is written once per test session
by :func:`cloudlulc.simulate.write_demo_catalog` (seed 0, small 300 px tiles), and ``stac_url`` is
a real ``rustac serve`` process (no mocking) started on a free port and stopped at session end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pc_fixtures import find_pc_fixtures

from cloudlulc.simulate import SimCatalog, write_demo_catalog
from cloudlulc.testing.stac_server import serve_stac

#: Demo-catalog geometry used by the test session: two 3 km S2 tiles overlapping by 300 m.
SIM_TILE_SIZE, SIM_OVERLAP, SIM_MARGIN = 300, 30, 12


@pytest.fixture(scope="session")
def pc_fixtures_dir() -> Path:
    """Directory of the real Planetary Computer item/collection JSON (../shared/fixtures/pc-items)."""
    d = find_pc_fixtures()
    if d is None:
        pytest.fail("real Planetary Computer fixtures not found at ../shared/fixtures/pc-items")
    return d


@pytest.fixture(scope="session")
def sim_catalog(tmp_path_factory: pytest.TempPathFactory) -> SimCatalog:
    """The SIMULATED demo catalog (seed 0) written once per session into a temporary directory."""
    return write_demo_catalog(
        tmp_path_factory.mktemp("sim-catalog"), seed=0, tile_size=SIM_TILE_SIZE, overlap=SIM_OVERLAP, margin=SIM_MARGIN
    )


@pytest.fixture(scope="session")
def stac_url(sim_catalog: SimCatalog) -> Iterator[str]:
    """Root URL (no trailing slash) of a real ``rustac serve`` STAC API over ``sim_catalog``."""
    with serve_stac(sim_catalog) as url:
        yield url
