"""Independent expectations for cube pixels: read the source COGs with plain rasterio, no warping."""

from __future__ import annotations

import numpy as np
import rasterio

from cloudlulc.cube import baseline_offset, harmonise_s2


def reflectance_at(items: list[dict], band: str, x: float, y: float) -> float:
    """Harmonised reflectance of ``band`` at map coordinates (x, y) from the first item (mosaic order:
    least cloudy first) whose COG has a valid DN there; NaN where none has."""
    for it in items:
        with rasterio.open(it["assets"][band]["href"]) as src:
            row, col = src.index(x, y)
            if 0 <= row < src.height and 0 <= col < src.width:
                dn = src.read(1, window=((row, row + 1), (col, col + 1)))[0, 0]
                if dn != 0:
                    return float(harmonise_s2(np.array([dn]), baseline_offset(it))[0])
    return float("nan")
