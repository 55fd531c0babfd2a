"""Lazy Dask cubes of one paired acquisition on one grid (stackstac).

Every layer of a target date (Sentinel-2 reflectance, SCL / cloud mask, Sentinel-1 dB, labels) is
brought onto the same :class:`Grid`: one EPSG, 10 m pixels, bounds on 10 m multiples, so the arrays
share ``x``/``y`` exactly and the model can stack them.

* :mod:`~cloudlulc.cube.grid`: :class:`Grid`, :func:`grid_for_aoi`;
* :mod:`~cloudlulc.cube.reader`: :class:`AssetReader`, stackstac's ``Reader`` protocol with aligned
  reads (:mod:`~cloudlulc.cube.aligned`), retries and token-free errors;
* :mod:`~cloudlulc.cube.stack`: the first-valid mosaic of an acquisition's items, read chunk by chunk;
* :mod:`~cloudlulc.cube.conversions`: DN -> reflectance, linear -> dB, SCL -> cloud;
* :mod:`~cloudlulc.cube.build`: :func:`build_cube` (the model input);
* :mod:`~cloudlulc.cube.labels`: label products in CloudLULC classes.
"""

from cloudlulc.cube.build import build_cube, iter_window_cubes, optical_cube, sar_cube, scl_cube
from cloudlulc.cube.conversions import baseline_offset, cloud_from_scl, harmonise_s2, linear_to_db
from cloudlulc.cube.gdal import HttpOptions
from cloudlulc.cube.grid import Grid, grid_for_aoi, utm_epsg
from cloudlulc.cube.labels import build_label_cube, label_cube_from_items
from cloudlulc.cube.reader import AssetReader, AssetReadWarning, ReadRetry
from cloudlulc.cube.stack import ReaderTable, ReadOptions, first_valid, reader_table

__all__ = [
    "AssetReadWarning",
    "AssetReader",
    "Grid",
    "HttpOptions",
    "ReadOptions",
    "ReadRetry",
    "ReaderTable",
    "baseline_offset",
    "build_cube",
    "build_label_cube",
    "cloud_from_scl",
    "first_valid",
    "grid_for_aoi",
    "harmonise_s2",
    "iter_window_cubes",
    "label_cube_from_items",
    "linear_to_db",
    "optical_cube",
    "reader_table",
    "sar_cube",
    "scl_cube",
    "utm_epsg",
]
