"""Label cubes: a land-cover product (ESA WorldCover, Impact Observatory) in CloudLULC classes on a grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from rasterio.enums import Resampling

from cloudlulc.classes import LABEL_PRODUCTS, NODATA, remap_labels
from cloudlulc.cube.build import require_assets, with_crs
from cloudlulc.cube.grid import Grid, grid_for_aoi
from cloudlulc.cube.stack import ReadOptions, first_valid, stack_items
from cloudlulc.stac.client import search_items
from cloudlulc.stac.errors import CatalogError
from cloudlulc.stac.items import item_datetime, normalize_item
from cloudlulc.stac.urls import unsigned_href

if TYPE_CHECKING:
    from pystac_client import Client

__all__ = ["build_label_cube", "label_cube_from_items"]
def label_cube_from_items(
    items: Sequence[dict],
    grid: Grid,
    collection: str = "esa-worldcover",
    *,
    chunksize: int = 1024,
    errors_as_nodata: bool = False,
    read: ReadOptions = ReadOptions(),
) -> xr.DataArray:
    """(y, x) uint8 CloudLULC classes from label-product ``items`` (newest first wins), nearest resampling."""
    if collection not in LABEL_PRODUCTS:
        raise CatalogError(f"Unknown label collection {collection!r}; known: {sorted(LABEL_PRODUCTS)}.")
    if not items:
        raise CatalogError(f"No {collection} items cover the grid {grid.bounds_lonlat} (lon/lat).")
    asset, mapping = LABEL_PRODUCTS[collection]
    items = sorted((normalize_item(it) for it in items), key=item_datetime, reverse=True)
    require_assets(items, (asset,), collection)
    if errors_as_nodata:
        read = replace(read, errors_as_nodata=True)
    codes = stack_items(
        items,
        (asset,),
        grid,
        dtype=np.dtype("uint8"),
        fill_value=np.uint8(0),
        resampling=Resampling.nearest,
        chunksize=chunksize,
        read=read,
    )
    codes = first_valid(codes, items, grid, 0).isel(band=0, drop=True)
    labels = xr.apply_ufunc(
        remap_labels, codes, kwargs={"mapping": mapping}, dask="parallelized", output_dtypes=[np.uint8]
    ).astype(np.uint8)
    labels.attrs.update(
        long_name=f"CloudLULC classes from {collection}",
        source_items=[it["id"] for it in items],
        source_hrefs=[unsigned_href(it["assets"][asset]["href"]) for it in items],
        nodata=NODATA,
    )
    labels.name = "labels"
    return with_crs(labels, grid)


def build_label_cube(
    client: Client,
    grid: Grid | Any,
    collection: str = "esa-worldcover",
    *,
    chunksize: int = 1024,
    errors_as_nodata: bool = False,
) -> xr.DataArray:
    """Search ``collection`` over the grid (or AOI) and return its labels in CloudLULC classes on the grid."""
    if not isinstance(grid, Grid):
        grid = grid_for_aoi(grid)
    footprint = grid.footprint_lonlat()
    items = search_items(
        client,
        collection=collection,
        aoi=footprint,
        start=datetime(1970, 1, 1, tzinfo=UTC),
        end=datetime(2100, 1, 1, tzinfo=UTC),
    )
    if not items:
        raise CatalogError(
            f"No {collection} items intersect {tuple(round(v, 4) for v in footprint.bounds)} on the catalog; "
            "pick another label collection or AOI."
        )
    return label_cube_from_items(items, grid, collection, chunksize=chunksize, errors_as_nodata=errors_as_nodata)


