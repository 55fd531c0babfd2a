"""CloudLULC: near-real-time land use / land cover mapping under clouds from Sentinel-2 and Sentinel-1.

The public API, in the order data flows through it::

    import cloudlulc

    result = cloudlulc.map_aoi({"aoi": "16.9,48.1,17.0,48.2", "time": "2024-04-01/2024-04-30",
                                "output": "out/bratislava.zarr"})          # everything below, in one call
    pairs = cloudlulc.find_pairs(cloudlulc.open_catalog(), aoi, "2024-04-19")   # STAC search and pairing
    cube = cloudlulc.build_cube(pairs[0], cloudlulc.grid_for_aoi(aoi))          # lazy model inputs
    result = cloudlulc.predict_cube(cube, model)                                 # lazy land cover
    cloudlulc.write_mosaic(result, "out/x.zarr", time=pairs[0].time)            # one time slice
    ds = cloudlulc.open_mosaic("out/x.zarr")                                     # completed slices

Each name is documented (``help(cloudlulc.map_aoi)``). Submodules hold the rest: ``cloudlulc.stac``,
``cloudlulc.cube``, ``cloudlulc.inference``, ``cloudlulc.store``, ``cloudlulc.pipeline``,
``cloudlulc.model``, ``cloudlulc.training``, ``cloudlulc.evaluation``, ``cloudlulc.dataset``,
``cloudlulc.simulate``, ``cloudlulc.runtime``. Names are imported on first use, so ``import
cloudlulc`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudlulc.config import Settings, get_settings
    from cloudlulc.cube import Grid, build_cube, grid_for_aoi
    from cloudlulc.errors import CloudLULCError
    from cloudlulc.inference import predict_cube
    from cloudlulc.model import from_pretrained
    from cloudlulc.model.io import load_model
    from cloudlulc.params import MapParams
    from cloudlulc.pipeline import MapResult, map_aoi
    from cloudlulc.stac import Pair, find_pairs, open_catalog, parse_aoi
    from cloudlulc.store import export_cog, open_mosaic, quicklook_png, write_mosaic

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "map_aoi": "cloudlulc.pipeline",
    "MapResult": "cloudlulc.pipeline",
    "MapParams": "cloudlulc.params",
    "Settings": "cloudlulc.config",
    "get_settings": "cloudlulc.config",
    "open_catalog": "cloudlulc.stac",
    "parse_aoi": "cloudlulc.stac",
    "find_pairs": "cloudlulc.stac",
    "Pair": "cloudlulc.stac",
    "Grid": "cloudlulc.cube",
    "grid_for_aoi": "cloudlulc.cube",
    "build_cube": "cloudlulc.cube",
    "load_model": "cloudlulc.model.io",
    "from_pretrained": "cloudlulc.model",
    "predict_cube": "cloudlulc.inference",
    "write_mosaic": "cloudlulc.store",
    "open_mosaic": "cloudlulc.store",
    "export_cog": "cloudlulc.store",
    "quicklook_png": "cloudlulc.store",
    "CloudLULCError": "cloudlulc.errors",
}

__all__ = [
    "CloudLULCError",
    "Grid",
    "MapParams",
    "MapResult",
    "Pair",
    "Settings",
    "build_cube",
    "export_cog",
    "find_pairs",
    "from_pretrained",
    "get_settings",
    "grid_for_aoi",
    "load_model",
    "map_aoi",
    "open_catalog",
    "open_mosaic",
    "parse_aoi",
    "predict_cube",
    "quicklook_png",
    "write_mosaic",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # cached: later lookups skip this hook
        return value
    raise AttributeError(f"module 'cloudlulc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
