"""The CloudLULC class table, band orders and label-product mappings.

One module holds these so that the model config, the Zarr mosaic (CF ``flag_values``), the dataset
builder and the evaluation all agree; weights refuse to load when their class table or band order
differs from the one here (see :mod:`cloudlulc.model.io`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Label / mosaic value for nodata and "ignore in the loss".
NODATA: int = 255
IGNORE_INDEX: int = NODATA


@dataclass(frozen=True)
class LulcClass:
    value: int
    name: str
    colour: str  # hex RGB, used for COG colour tables, quicklooks and legends


CLASSES: tuple[LulcClass, ...] = (
    LulcClass(0, "water", "#1f78b4"),
    LulcClass(1, "forest", "#1b7837"),
    LulcClass(2, "grassland", "#b2df8a"),
    LulcClass(3, "barren", "#c2a677"),
    LulcClass(4, "built-up", "#e31a1c"),
    LulcClass(5, "cropland", "#ffd92f"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
NUM_CLASSES: int = len(CLASSES)

#: Sentinel-2 L2A bands fed to the model, in this order (B10 is absent from L2A).
S2_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
#: Sentinel-1 RTC polarisations fed to the model, in this order (Planetary Computer asset keys).
S1_BANDS: tuple[str, ...] = ("vv", "vh")
#: SCL classes counted as cloud or cloud shadow: 3 shadow, 8 medium cloud, 9 high cloud, 10 cirrus.
SCL_CLOUD_CLASSES: tuple[int, ...] = (3, 8, 9, 10)
#: SCL 0 is "no data".
SCL_NODATA: int = 0

#: ESA WorldCover v100/v200 -> CloudLULC.
WORLDCOVER_TO_LULC: dict[int, int] = {
    10: 1,  # tree cover -> forest
    20: 2,  # shrubland -> grassland
    30: 2,  # grassland
    40: 5,  # cropland
    50: 4,  # built-up
    60: 3,  # bare / sparse vegetation -> barren
    70: NODATA,  # snow and ice -> ignore
    80: 0,  # permanent water bodies -> water
    90: 2,  # herbaceous wetland -> grassland
    95: 1,  # mangroves -> forest
    100: 3,  # moss and lichen -> barren
}

#: Impact Observatory annual 9-class (io-lulc-annual-v02) -> CloudLULC.
IO_LULC_TO_LULC: dict[int, int] = {
    1: 0,  # water
    2: 1,  # trees -> forest
    4: 2,  # flooded vegetation -> grassland
    5: 5,  # crops -> cropland
    7: 4,  # built area -> built-up
    8: 3,  # bare ground -> barren
    9: NODATA,  # snow/ice -> ignore
    10: NODATA,  # clouds -> ignore
    11: 2,  # rangeland -> grassland
}

#: Label products by STAC collection id: (asset key, mapping).
LABEL_PRODUCTS: dict[str, tuple[str, dict[int, int]]] = {
    "esa-worldcover": ("map", WORLDCOVER_TO_LULC),
    "io-lulc-annual-v02": ("data", IO_LULC_TO_LULC),
}


def lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 lookup table; codes missing from ``mapping`` map to :data:`NODATA`."""
    lut = np.full(256, NODATA, dtype=np.uint8)
    for source, target in mapping.items():
        lut[source] = target
    return lut


def remap_labels(codes: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map a product's class codes to CloudLULC values (unknown codes and nodata -> 255)."""
    codes = np.asarray(codes)
    valid = (codes >= 0) & (codes <= 255)  # NaN compares False, so float nodata is caught too
    safe = np.where(valid, codes, 0).astype(np.uint8)
    return np.where(valid, lookup_table(mapping)[safe], NODATA).astype(np.uint8)


def class_table() -> list[dict[str, object]]:
    """The class table as plain data, stored in weight configs and Zarr attributes."""
    return [{"value": c.value, "name": c.name, "colour": c.colour} for c in CLASSES]


def colour_rgb(c: LulcClass) -> tuple[int, int, int]:
    h = c.colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
