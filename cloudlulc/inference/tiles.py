"""Where the tiles go: a tile grid anchored to the image, blending weights, and the tile groups of a chunk.

Tiles of ``tile`` pixels sit every ``tile - overlap`` pixels from an origin fixed to the *image*
(``-overlap // 2``, so the image edge lies inside a tile's blending ramp): a chunk never invents its
own tiles, so a chunked run and a one-shot run feed the model exactly the same tile inputs. Tiles
reaching past the image edge are filled by reflection of the image. Pure geometry, no arrays read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``tile`` pixels every ``step = tile - overlap`` pixels, anchored to the image.

    Tile ``k`` along an axis covers ``[origin + k * step, origin + k * step + tile)``. The grid depends
    only on the image size, never on chunking: that is what makes chunked inference seam-free.
    """

    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile <= 0:
            raise ValueError(f"tile must be > 0, got {self.tile}")
        if not 0 <= 2 * self.overlap <= self.tile:
            raise ValueError(
                f"overlap must be in [0, tile/2] so blending ramps of one tile do not cross, got overlap="
                f"{self.overlap} for tile={self.tile}"
            )

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def origin(self) -> int:
        return -(self.overlap // 2)

    def start(self, k: int) -> int:
        return self.origin + k * self.step

    def count(self, n: int) -> int:
        """Number of tiles needed to cover an axis of ``n`` pixels (the last one may overhang)."""
        return max(1, math.ceil((n - self.origin - self.tile) / self.step) + 1)

    def owned(self, a: int, b: int, n: int) -> range:
        """Tiles whose first in-image pixel ``max(start, 0)`` lies in ``[a, b)``: each tile has one owner."""
        ks = [k for k in self._candidates(a, b, n) if a <= max(self.start(k), 0) < b]
        return range(ks[0], ks[-1] + 1) if ks else range(0)

    def _candidates(self, a: int, b: int, n: int) -> range:
        lo = max(0, (a - self.origin) // self.step - 1)
        hi = min(self.count(n), (b - self.origin) // self.step + 2)
        return range(lo, max(lo, hi))


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights: raised-cosine ramps over ``overlap`` pixels at both ends, 1 inside.

    The rising ramp of one tile and the falling ramp of its neighbour (which overlap by exactly
    ``overlap`` pixels) sum to one; every weight is > 0 so every covered pixel is defined.
    """
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / overlap)
        w[:overlap] = ramp
        w[tile - overlap :] = ramp[::-1]
    return w.astype(np.float32)


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Source index of each (possibly out-of-image) global index under mirror reflection (numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


@dataclass(frozen=True)
class GroupPlan:
    """Static geometry of one group task (all indices global, in pixels)."""

    chunk: tuple[int, int, int, int]  # y0, y1, x0, x1 of the output chunk the group belongs to
    tiles_y: tuple[int, ...]  # tile starts (may be < 0 or overhang the image)
    tiles_x: tuple[int, ...]
    window: tuple[int, int, int, int]  # gy0, gy1, gx0, gx1: padded window covering the tiles
    read: tuple[int, int, int, int]  # r0, r1, c0, c1: the in-image rows/cols to read (window, and chunk)
    extent: tuple[int, int, int, int]  # in-image footprint of the group's tiles ((0,0,0,0) if none)
    with_valid: bool = True  # the task also returns the chunk's validity mask (so it reads the chunk)


def _plan_group(
    grid: TileGrid,
    chunk: tuple[int, int, int, int],
    shape: tuple[int, int],
    tiles_y: tuple[int, ...] | None = None,
    tiles_x: tuple[int, ...] | None = None,
    with_valid: bool = True,
) -> GroupPlan:
    """Geometry of a group running tiles ``tiles_y x tiles_x`` (default: all tiles ``chunk`` owns)."""
    h, w = shape
    y0, y1, x0, x1 = chunk
    ty = tuple(grid.start(k) for k in grid.owned(y0, y1, h)) if tiles_y is None else tuple(tiles_y)
    tx = tuple(grid.start(k) for k in grid.owned(x0, x1, w)) if tiles_x is None else tuple(tiles_x)
    if ty and tx:
        gy0, gy1 = ty[0], ty[-1] + grid.tile
        gx0, gx1 = tx[0], tx[-1] + grid.tile
        extent = (max(ty[0], 0), min(ty[-1] + grid.tile, h), max(tx[0], 0), min(tx[-1] + grid.tile, w))
        ys = _reflect_index(np.arange(gy0, gy1), h)
        xs = _reflect_index(np.arange(gx0, gx1), w)
        read = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    else:
        if not with_valid:
            raise ValueError("a group without tiles must at least report its chunk's validity")
        ty, tx = (), ()
        gy0, gy1, gx0, gx1 = y0, y0, x0, x0
        extent = (0, 0, 0, 0)
        read = chunk
    if with_valid:  # the validity mask is taken from the chunk's own inputs, not from a gathered copy
        read = (min(read[0], y0), max(read[1], y1), min(read[2], x0), max(read[3], x1))
    return GroupPlan(chunk, ty, tx, (gy0, gy1, gx0, gx1), read, extent, with_valid)


def _by_reach(grid: TileGrid, starts: tuple[int, ...], chunk_starts: np.ndarray, n: int) -> list[tuple[int, ...]]:
    """Split tile starts along one axis by the chunk holding the tile's last in-image pixel.

    Tiles owned by a chunk either end inside it or reach into the next chunk(s). Keeping those
    classes in separate tasks lets a block of chunks recompute only the neighbour tiles that reach
    into it (see :func:`_chunk_plans`), never a neighbour's interior tiles.
    """
    classes: dict[int, list[int]] = {}
    for s in starts:
        last = min(s + grid.tile, n) - 1
        classes.setdefault(int(np.searchsorted(chunk_starts, last, "right")) - 1, []).append(s)
    return [tuple(classes[k]) for k in sorted(classes)]


def _chunk_plans(
    grid: TileGrid,
    chunk: tuple[int, int, int, int],
    shape: tuple[int, int],
    ystarts: np.ndarray,
    xstarts: np.ndarray,
    max_tiles: int | None = None,
) -> list[GroupPlan]:
    """The group tasks of one chunk: its owned tiles split by the chunk row x column they reach.

    The first plan also carries the chunk's validity mask. Typically (tile <= chunk) there are four:
    tiles ending in the chunk, reaching down, reaching right, reaching down-right. With
    ``max_tiles``, a group holding more tiles is cut into bands of tile rows of at most that many
    tiles: several workers share a large chunk (a one-chunk AOI keeps them all busy) and no single
    long task leaves the others idle at the end of a block. The cut never changes which blocks
    need a tile (all tiles of a group reach the same chunks).
    """
    h, w = shape
    y0, y1, x0, x1 = chunk
    ty = tuple(grid.start(k) for k in grid.owned(y0, y1, h))
    tx = tuple(grid.start(k) for k in grid.owned(x0, x1, w))
    if not (ty and tx):
        return [_plan_group(grid, chunk, shape, (), (), with_valid=True)]
    plans = []
    for a, cy in enumerate(_by_reach(grid, ty, ystarts, h)):
        for b, cx in enumerate(_by_reach(grid, tx, xstarts, w)):
            rows = len(cy) if max_tiles is None else max(1, max_tiles // len(cx))
            for r in range(0, len(cy), rows):
                plans.append(
                    _plan_group(grid, chunk, shape, cy[r : r + rows], cx, with_valid=(a == 0 and b == 0 and r == 0))
                )
    return plans


def _chunk_bounds(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    edges = np.concatenate([[0], np.cumsum(chunks)]).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
