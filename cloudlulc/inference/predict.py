"""Chunked, seam-free inference of a segmentation model over a lazy (Dask) cube.

A map of a large AOI is computed chunk by chunk (memory bounded by the chunk size), yet it equals
running the model once over the whole image: tiles sit on a grid anchored to the image
(:mod:`~cloudlulc.inference.tiles`) and are blended by weighted averages of probabilities
(:mod:`~cloudlulc.inference.blend`); only floating-point summation order differs from a one-shot
run. Each tile runs once per computation; tiles whose footprint is all nodata are skipped.

Nodata: a pixel whose optical *and* SAR bands are all NaN is nodata (255 in every product). Missing
optical bands with valid SAR are filled with the model's normalisation mean so that the SAR path
still classifies them; the model always gets finite inputs.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import torch
import xarray as xr

from cloudlulc.classes import CLASS_NAMES, CLASSES, NODATA, S1_BANDS, S2_BANDS
from cloudlulc.cube.quality import INPUT_QUALITY_ATTRS, input_quality_array
from cloudlulc.inference.blend import _combine
from cloudlulc.inference.device import ModelHandle, share_cores_between_forwards
from cloudlulc.inference.graph import _as_bands, _named_input, _products_graph, _run_group_blocks
from cloudlulc.inference.tiles import TileGrid, _plan_group
from cloudlulc.model.inputs import model_stride


def _effective_grid(model: torch.nn.Module, tile: int, overlap: int) -> TileGrid:
    stride = model_stride(model)
    tile_eff = int(math.ceil(tile / stride) * stride)  # tiles must be multiples of the network stride
    return TileGrid(tile_eff, overlap)


def predict_cube(
    cube: xr.Dataset,
    model: torch.nn.Module,
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    halo: int | None = None,
    probabilities: bool = False,
) -> xr.Dataset:
    """Lazily classify a cube chunk by chunk; the result equals a one-shot run (see module docstring).

    Parameters
    ----------
    cube:
        Dataset per :func:`cloudlulc.cube.build_cube`: ``optical`` (band, y, x) reflectance and ``sar``
        (band, y, x) dB, float32 with NaN nodata; ``cloud`` (y, x) uint8 optional (passed through).
    model:
        ``model(optical[B,12,H,W], sar[B,2,H,W]) -> ModelOutput`` in physical units; ``model.stride``
        (default 1) is the divisibility requirement, ``model.config.optical_mean`` / ``sar_mean`` the
        fill values for NaN bands (zeros when absent).
    tile, overlap:
        Tile size (rounded up to a multiple of ``model.stride``) and blending overlap (<= tile/2).
    batch_size:
        Tiles per forward pass.
    device:
        ``"auto"`` (CUDA if available where the task runs, else CPU), ``"cpu"``, ``"cuda:0"``...
    halo:
        Context each chunk reads beyond its border. ``None`` = what the global tile grid needs (the
        tile size, one-sided). A smaller value is refused: it would cut tiles and create seams.
    probabilities:
        Also return ``probabilities`` (class, y, x): each class's calibrated probability in percent.

    Returns
    -------
    xr.Dataset with dask-backed uint8 ``lulc`` (classes, 255 nodata), ``confidence`` (0-100 top-class
    probability), ``optical_reliability`` (0-100, 0 where no optical band has a value; 255 where the
    model has no reliability output), ``cloud`` (passthrough, 255 when the cube has none) and
    ``input_quality`` (:mod:`cloudlulc.cube.quality`), on the cube's grid and (y, x) chunks.
    """
    if "optical" not in cube:
        raise ValueError("cube has no 'optical' variable; build it with cloudlulc.cube.build_cube")
    grid = _effective_grid(model, tile, overlap)
    if halo is not None and halo < grid.tile:
        raise ValueError(
            f"halo={halo} is smaller than the tile ({grid.tile}); chunks would not see every tile touching "
            "them and the mosaic would have seams. Leave halo=None."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    optical = _as_bands(cube["optical"], S2_BANDS, cube["optical"], "optical")
    sar = _as_bands(cube.get("sar"), S1_BANDS, cube["optical"], "sar")
    sar = sar.rechunk((sar.chunks[0],) + optical.chunks[1:])
    # the network's and input_quality's reads of a chunk are one task (one key)
    optical = _named_input(optical.rechunk({0: -1}), "optical")
    sar = _named_input(sar.rechunk({0: -1}), "sar")
    h, w = optical.shape[1:]
    ychunks, xchunks = optical.chunks[1], optical.chunks[2]

    share_cores_between_forwards(device)  # before any forward: the setting is process-wide
    model_handle = ModelHandle(model)
    products = _products_graph(optical, sar, grid, model_handle, batch_size, str(device), probabilities)
    device_arg = str(device)

    coords = {k: v for k, v in cube["optical"].coords.items() if set(v.dims) <= {"y", "x"}}
    dims = ("y", "x")
    out = xr.Dataset(coords=coords)
    attrs_common = {"nodata": NODATA}
    out["lulc"] = xr.DataArray(
        products[0],
        dims=dims,
        attrs={
            **attrs_common,
            "long_name": "land use / land cover class",
            "flag_values": [c.value for c in CLASSES],
            "flag_meanings": " ".join(n.replace("-", "_") for n in CLASS_NAMES),
        },
    )
    out["confidence"] = xr.DataArray(
        products[1], dims=dims, attrs={**attrs_common, "long_name": "top-class probability", "units": "percent"}
    )
    out["optical_reliability"] = xr.DataArray(
        products[2],
        dims=dims,
        attrs={**attrs_common, "long_name": "optical reliability estimated by the model", "units": "percent"},
    )
    if "cloud" in cube:
        cloud = cube["cloud"].transpose("y", "x")
        cdata = cloud.data if isinstance(cloud.data, da.Array) else da.from_array(np.asarray(cloud.values))
        cdata = cdata.astype(np.uint8).rechunk((ychunks, xchunks))
    else:
        cdata = None
    out["cloud"] = xr.DataArray(
        cdata if cdata is not None else da.full((h, w), NODATA, dtype=np.uint8, chunks=(ychunks, xchunks)),
        dims=dims,
        attrs={**attrs_common, "long_name": "cloud or shadow from SCL", "flag_values": [0, 1]},
    )
    has_sar = cube.get("sar") is not None
    out["input_quality"] = xr.DataArray(
        input_quality_array(optical, sar if has_sar else None, cdata), dims=dims, attrs=dict(INPUT_QUALITY_ATTRS)
    )
    if probabilities:
        out["probabilities"] = xr.DataArray(
            products[3:],
            dims=("class", "y", "x"),
            coords={"class": list(CLASS_NAMES)},
            attrs={**attrs_common, "long_name": "class probability (calibrated)", "units": "percent"},
        )
    if "spatial_ref" in cube.coords:
        out = out.assign_coords(spatial_ref=cube["spatial_ref"])
        for v in out.data_vars:
            out[v].attrs["grid_mapping"] = "spatial_ref"
    out.attrs = dict(cube.attrs)
    out.attrs["inference"] = {
        "tile": grid.tile,
        "overlap": grid.overlap,
        "batch_size": batch_size,
        "device": device_arg,
        "model": getattr(getattr(model, "config", None), "name", type(model).__name__),
        # sha256 of the state dict (the weights *file* sha256 is the caller's provenance to add)
        "state_dict_sha256": model_handle.weights_key,
    }
    return out


def predict_arrays(
    optical: np.ndarray,
    sar: np.ndarray | None,
    model: torch.nn.Module,
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    return_probabilities: bool = False,
) -> dict[str, np.ndarray]:
    """One-shot inference on in-memory arrays with the same tiling and blending as :func:`predict_cube`.

    The whole image is one group: this is the reference the chunked run must reproduce, and a
    convenience for small scenes. Returns ``lulc``, ``confidence``, ``optical_reliability`` (uint8)
    and, when asked, ``probabilities`` (float32 [C, H, W], NaN over nodata).
    """
    optical = np.asarray(optical, dtype=np.float32)
    h, w = optical.shape[1:]
    if sar is None:
        sar = np.full((len(S1_BANDS), h, w), np.nan, np.float32)
    sar = np.asarray(sar, dtype=np.float32)
    grid = _effective_grid(model, tile, overlap)
    handle = ModelHandle(model)
    chunk = (0, h, 0, w)
    plan = _plan_group(grid, chunk, (h, w))
    group = _run_group_blocks([[optical]], [[sar]], ([0], [0]), plan, (h, w), handle, grid, batch_size, str(device))
    parts = [(group, plan.extent)]
    products = _combine(chunk, group, parts)
    result = {"lulc": products[0], "confidence": products[1], "optical_reliability": products[2]}
    if return_probabilities:
        result["probabilities"] = _combine(chunk, group, parts, with_probabilities=True)
    return result
