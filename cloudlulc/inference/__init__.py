"""Chunked, seam-free inference over lazy cubes (:func:`predict_cube`).

* :mod:`~cloudlulc.inference.tiles`: the tile grid anchored to the image, blending weights, tile groups;
* :mod:`~cloudlulc.inference.device`: device resolution and per-process model copies;
* :mod:`~cloudlulc.inference.blend`: forwards of a tile group and the blend into uint8 products;
* :mod:`~cloudlulc.inference.graph`: the two-stage Dask graph (group tasks, combine tasks);
* :mod:`~cloudlulc.inference.predict`: :func:`predict_cube` and the one-shot :func:`predict_arrays`.
"""

from cloudlulc.inference.device import AMP_DTYPE, DeviceError, check_device, resolve_device, weights_sha256
from cloudlulc.inference.graph import is_shared_work
from cloudlulc.inference.predict import predict_arrays, predict_cube
from cloudlulc.inference.tiles import TileGrid, blend_window

__all__ = [
    "AMP_DTYPE",
    "DeviceError",
    "TileGrid",
    "blend_window",
    "check_device",
    "is_shared_work",
    "predict_arrays",
    "predict_cube",
    "resolve_device",
    "weights_sha256",
]
