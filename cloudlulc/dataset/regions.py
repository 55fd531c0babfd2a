"""Regions (spatial split blocks) and patch windows on the AOI grid.

Why regions: neighbouring patches of one place are strongly correlated, so splitting patches at random
leaks test information into training. The AOI grid is cut into square blocks; every patch lies wholly
inside one block and a whole block goes to one split. With ``stride < patch_size`` patches of one block
overlap each other, never a patch of another block, so train/val/test share no pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Region:
    """A pixel window ``[row0:row0+nrows, col0:col0+ncols]`` of the AOI grid (row 0 = north)."""

    id: str
    row0: int
    col0: int
    nrows: int
    ncols: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row0, self.row0 + self.nrows), slice(self.col0, self.col0 + self.ncols)


@dataclass(frozen=True)
class PatchWindow:
    """A patch's pixel offset in the AOI grid and its size."""

    row: int
    col: int
    size: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.size), slice(self.col, self.col + self.size)

    def local(self, region: Region) -> tuple[slice, slice]:
        """Slices of this patch inside an array holding only ``region``."""
        r, c = self.row - region.row0, self.col - region.col0
        return slice(r, r + self.size), slice(c, c + self.size)


def patch_windows(region: Region, patch_size: int, stride: int, buffer: int = 0) -> list[PatchWindow]:
    """Patch origins stepping by ``stride`` inside ``region`` (minus ``buffer``), patches fully inside."""
    out: list[PatchWindow] = []
    r_end = region.row0 + region.nrows - buffer
    c_end = region.col0 + region.ncols - buffer
    for r in range(region.row0 + buffer, r_end - patch_size + 1, stride):
        for c in range(region.col0 + buffer, c_end - patch_size + 1, stride):
            out.append(PatchWindow(r, c, patch_size))
    return out


def make_regions(
    grid_shape: tuple[int, int], region_size: int, patch_size: int, stride: int, buffer: int = 0
) -> list[Region]:
    """Square blocks of ``region_size`` pixels covering the grid; edge blocks may be smaller and are
    kept only when at least one patch fits in them."""
    ny, nx = grid_shape
    regions: list[Region] = []
    for i, r0 in enumerate(range(0, ny, region_size)):
        for j, c0 in enumerate(range(0, nx, region_size)):
            reg = Region(f"r{i:03d}c{j:03d}", r0, c0, min(region_size, ny - r0), min(region_size, nx - c0))
            if patch_windows(reg, patch_size, stride, buffer):
                regions.append(reg)
    return regions


def assign_splits(region_ids: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Seeded assignment of whole regions to train/val/test.

    Counts follow ``fractions`` by largest remainder; every split with a non-zero fraction gets at least
    one region when there are enough regions (taken from the largest split), so a small AOI still has a
    validation and a test block. The result depends only on the sorted ids and the seed, so a resumed
    build assigns exactly as the first attempt did.
    """
    ids = sorted(region_ids)
    n = len(ids)
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    wanted = [k for k, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[k] += 1
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    pos = 0
    for k, split in enumerate(SPLITS):
        for idx in order[pos : pos + counts[k]]:
            out[ids[idx]] = split
        pos += counts[k]
    return out
