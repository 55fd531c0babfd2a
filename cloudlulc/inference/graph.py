"""The Dask graph of chunked inference: tile-group tasks per chunk, then a combine task per chunk.

Built as one low-level graph rather than per-chunk ``dask.delayed`` calls, so construction stays
linear in the number of chunks. A chunk's tiles are split into groups by the chunk row and column
their footprint reaches, so computing some output chunks runs only the tiles that touch them.
Groups read a copy of a neighbour chunk's first rows or columns (a *halo strip*) rather than the
whole neighbour, so a chunk read only for its halo is freed at once.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from cloudlulc.classes import NUM_CLASSES
from cloudlulc.inference.blend import _chunk_validity, _combine, _run_group
from cloudlulc.inference.device import ModelHandle
from cloudlulc.inference.tiles import GroupPlan, TileGrid, _chunk_bounds, _chunk_plans, _reflect_index

#: tile groups are cut into tasks of at most this many batches (see :func:`_chunk_plans`)
GROUP_BATCHES = 2


#: name prefix of the tile-group tasks (the network runs): what block-wise writers carry between blocks
TILE_GROUP_PREFIX = "cloudlulc-tiles-"


#: name prefix of the input chunks the tile groups read: a block-wise writer carries those that the
#: next block needs too (the chunks just past a block's edge), so no chunk is read from COGs twice
INPUT_PREFIX = "cloudlulc-input-"


def is_shared_work(key: Any) -> bool:
    """Whether a key of an inference graph is worth computing once when neighbouring blocks of a
    write both need it: a tile group (network forwards) or an input chunk (COG reads)."""
    head = key[0] if isinstance(key, tuple) and key else key
    return isinstance(head, str) and head.startswith((TILE_GROUP_PREFIX, INPUT_PREFIX))


def _as_bands(arr: xr.DataArray | None, bands: tuple[str, ...], like: xr.DataArray, name: str) -> da.Array:
    """A (band, y, x) float32 dask array in the contract band order (all-NaN when the layer is absent)."""
    if arr is None:
        ny, nx = like.sizes["y"], like.sizes["x"]
        chunks = like.chunks[-2:] if like.chunks else ((ny,), (nx,))
        return da.full((len(bands), ny, nx), np.nan, dtype=np.float32, chunks=((len(bands),),) + tuple(chunks))
    extra = [d for d in arr.dims if d not in ("y", "x")]
    if len(extra) != 1 or set(arr.dims) - {"y", "x", *extra}:
        raise ValueError(f"cube variable {name!r} must have dims (band, y, x), has {arr.dims}")
    band_dim = extra[0]
    if band_dim in arr.coords:
        names = [str(b) for b in arr[band_dim].values]
        if set(bands) - set(names):
            raise ValueError(f"cube variable {name!r} lacks bands {sorted(set(bands) - set(names))}; needs {bands}")
        if names != list(bands):  # selecting copies every chunk: only when the order differs
            arr = arr.sel({band_dim: list(bands)})
    if arr.sizes[band_dim] != len(bands):
        raise ValueError(f"cube variable {name!r} needs {len(bands)} bands {bands}, has {arr.sizes[band_dim]}")
    arr = arr.transpose(band_dim, "y", "x")
    data = arr.data if isinstance(arr.data, da.Array) else da.from_array(np.asarray(arr.values), chunks=-1)
    return data.astype(np.float32)


def _halo_strip(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A copy of a block's first ``rows`` x ``cols`` pixels: what the tiles of the chunks above and to
    the left read of it. Groups reading a neighbour's halo depend on this copy, not on the block, so
    the block is freed as soon as its own groups have run (in a block-wise write, the chunks just
    past the block's edge are read only for their strips)."""
    return block[:, :rows, :cols].copy()


def _window_refs(
    name: str,
    bounds_y: list[tuple[int, int]],
    bounds_x: list[tuple[int, int]],
    plan: GroupPlan,
    halo: int,
    dsk: dict[Any, Any],
) -> tuple[list[list[tuple]], list[int], list[int]]:
    """Keys of the input pieces covering ``plan.read`` and their origins (one grid of pieces).

    A block outside the group's own chunk row (column) that is read only within its first ``halo``
    rows (columns), and is at least four times that deep, is referenced through a :func:`_halo_strip`
    task (added to ``dsk``); anything else through the whole block. Shallower blocks are not worth a
    copy: within a block of the write the strip would sit next to the whole chunk, which its own
    tiles still need (figures in docs/performance.md).
    """
    r0, r1, c0, c1 = plan.read
    oy0, _, ox0, _ = plan.chunk

    def pieces(bounds: list[tuple[int, int]], lo: int, hi: int, own: int) -> list[tuple[int, int]]:
        out = []
        for i, (a, b) in enumerate(bounds):
            if a < hi and b > lo:
                partial = a != own and lo <= a and hi <= a + halo and 4 * halo <= b - a
                out.append((i, halo if partial else b - a))
        return out

    rows, cols = pieces(bounds_y, r0, r1, oy0), pieces(bounds_x, c0, c1, ox0)
    keys: list[list[tuple[Any, ...]]] = []
    for i, nr in rows:
        row: list[tuple[Any, ...]] = []
        for j, nc in cols:
            full = (name, 0, i, j)
            if (nr, nc) == (bounds_y[i][1] - bounds_y[i][0], bounds_x[j][1] - bounds_x[j][0]):
                row.append(full)
                continue
            key = (f"cloudlulc-halo-{name}", i, j, nr, nc)
            dsk.setdefault(key, (_halo_strip, full, nr, nc))
            row.append(key)
        keys.append(row)
    return keys, [bounds_y[i][0] for i, _ in rows], [bounds_x[j][0] for j, _ in cols]


def _runs(dst: np.ndarray, src: np.ndarray) -> list[tuple[slice, Any]]:
    """Split index pairs into slices where both advance by one (the common, non-reflected case)."""
    if dst.size == 0:
        return []
    breaks = np.nonzero((np.diff(dst) != 1) | (np.diff(src) != 1))[0] + 1
    starts = np.concatenate([[0], breaks]).astype(int)
    ends = np.concatenate([breaks, [dst.size]]).astype(int)
    return [
        (slice(int(dst[a]), int(dst[b - 1]) + 1), slice(int(src[a]), int(src[b - 1]) + 1)) for a, b in zip(starts, ends)
    ]


def _gather_window(
    blocks: list[list[np.ndarray]], origins_y: list[int], origins_x: list[int], ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """``out[:, a, b] = image[:, ys[a], xs[b]]`` assembled from the image's blocks in one allocation.

    ``ys``/``xs`` are the (reflected) source rows/columns of the padded window; contiguous runs are
    copied as slices, so only the reflected margins cost index arithmetic.
    """
    nb = blocks[0][0].shape[0]
    out = np.empty((nb, ys.size, xs.size), dtype=np.float32)
    pos_y, pos_x = np.arange(ys.size), np.arange(xs.size)
    for row, by0 in zip(blocks, origins_y):
        by1 = by0 + row[0].shape[1]
        in_y = (ys >= by0) & (ys < by1)
        if not in_y.any():
            continue
        runs_y = _runs(pos_y[in_y], ys[in_y] - by0)
        for block, bx0 in zip(row, origins_x):
            bx1 = bx0 + block.shape[2]
            in_x = (xs >= bx0) & (xs < bx1)
            if not in_x.any():
                continue
            runs_x = _runs(pos_x[in_x], xs[in_x] - bx0)
            for dy, sy in runs_y:
                for dx, sx in runs_x:
                    out[:, dy, dx] = block[:, sy, sx]
    return out


def _run_group_blocks(
    optical_blocks: list[list[np.ndarray]],
    sar_blocks: list[list[np.ndarray]],
    origins: tuple[list[int], list[int]],
    plan: GroupPlan,
    shape: tuple[int, int],
    *args: Any,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gather the group's padded window from the input blocks, then :func:`_run_group`; the chunk's
    validity mask (``plan.with_valid``) comes straight from the blocks."""
    h, w = shape
    valid = _chunk_validity(optical_blocks, sar_blocks, origins, plan.chunk) if plan.with_valid else None
    if not plan.tiles_y:
        return None, valid
    gy0, gy1, gx0, gx1 = plan.window
    ys = _reflect_index(np.arange(gy0, gy1), h)
    xs = _reflect_index(np.arange(gx0, gx1), w)
    optical = _gather_window(optical_blocks, origins[0], origins[1], ys, xs)
    sar = _gather_window(sar_blocks, origins[0], origins[1], ys, xs)
    return _run_group(optical, sar, plan, shape, *args), valid


def _combine_keys(
    chunk: tuple[int, int, int, int], group: Any, parts: list[Any], extents: list[Any], class_percent: bool = False
) -> np.ndarray:
    return _combine(chunk, group, [(p, tuple(e)) for p, e in zip(parts, extents)], class_percent=class_percent)


def _same(block: np.ndarray) -> np.ndarray:
    return block


def _named_input(arr: da.Array, what: str) -> da.Array:
    """``arr`` under a name starting with :data:`INPUT_PREFIX` (fused with the read when Dask
    optimises, so it costs no task of its own); ``arr`` itself when it has such a name already."""
    if arr.name.startswith(INPUT_PREFIX):
        return arr
    return da.map_blocks(_same, arr, name=f"{INPUT_PREFIX}{what}-{dask.base.tokenize(arr.name)}", dtype=arr.dtype)


def _products_graph(
    optical: da.Array,
    sar: da.Array,
    grid: TileGrid,
    handle: ModelHandle,
    batch_size: int,
    device: str,
    class_percent: bool = False,
) -> da.Array:
    """The (3, y, x) uint8 product array as an explicit two-stage graph (group tasks, combine tasks);
    (3 + classes, y, x) with ``class_percent`` (each class's probability in percent after the three).

    Built as one low-level graph rather than per-chunk ``dask.delayed`` calls, so construction stays
    linear in the number of chunks.
    """

    optical = _named_input(optical.rechunk({0: -1}), "optical")
    sar = _named_input(sar.rechunk({0: -1}), "sar")
    h, w = optical.shape[1:]
    ybounds, xbounds = _chunk_bounds(optical.chunks[1]), _chunk_bounds(optical.chunks[2])
    token = dask.base.tokenize(optical, sar, grid, handle, batch_size, device, class_percent)
    hname, gname, cname = f"cloudlulc-model-{token}", f"{TILE_GROUP_PREFIX}{token}", f"cloudlulc-products-{token}"
    dsk: dict[Any, Any] = {hname: handle}
    ystarts = np.array([a for a, _ in ybounds])
    xstarts = np.array([a for a, _ in xbounds])
    plans: dict[tuple[int, int, int], GroupPlan] = {}
    for i, (y0, y1) in enumerate(ybounds):
        for j, (x0, x1) in enumerate(xbounds):
            for k, plan in enumerate(
                _chunk_plans(grid, (y0, y1, x0, x1), (h, w), ystarts, xstarts, max_tiles=GROUP_BATCHES * batch_size)
            ):
                plans[i, j, k] = plan
                okeys, oy, ox = _window_refs(optical.name, ybounds, xbounds, plan, grid.tile, dsk)
                skeys, _, _ = _window_refs(sar.name, ybounds, xbounds, plan, grid.tile, dsk)
                dsk[(gname, i, j, k)] = (
                    _run_group_blocks,
                    okeys,
                    skeys,
                    [oy, ox],
                    plan,
                    [h, w],
                    hname,
                    grid,
                    batch_size,
                    device,
                )

    # which groups' footprints touch which chunks (linear: search the chunk edges per footprint)
    touching: dict[tuple[int, int], list[tuple[int, int, int]]] = {
        (i, j): [] for i in range(len(ybounds)) for j in range(len(xbounds))
    }
    for key in sorted(plans):
        ey0, ey1, ex0, ex1 = plans[key].extent
        if ey1 <= ey0 or ex1 <= ex0:
            continue
        for i in range(int(np.searchsorted(ystarts, ey0, "right")) - 1, int(np.searchsorted(ystarts, ey1, "left"))):
            for j in range(int(np.searchsorted(xstarts, ex0, "right")) - 1, int(np.searchsorted(xstarts, ex1, "left"))):
                touching[i, j].append(key)
    for (i, j), keys in touching.items():
        y0, y1 = ybounds[i]
        x0, x1 = xbounds[j]
        dsk[(cname, 0, i, j)] = (
            _combine_keys,
            (y0, y1, x0, x1),
            (gname, i, j, 0),  # the chunk's first group carries its validity mask
            [(gname, *key) for key in keys],
            [list(plans[key].extent) for key in keys],
            class_percent,
        )
    graph = HighLevelGraph.from_collections(cname, dsk, dependencies=[optical, sar])  # type: ignore[list-item]
    layers = 3 + (NUM_CLASSES if class_percent else 0)
    return da.Array(graph, cname, chunks=((layers,), optical.chunks[1], optical.chunks[2]), dtype=np.uint8)
