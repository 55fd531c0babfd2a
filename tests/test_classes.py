import json

import numpy as np
from pc_fixtures import PC_FIXTURES

from cloudlulc import classes


def test_worldcover_mapping_covers_every_code_in_the_real_item():
    item = json.loads((PC_FIXTURES / "esa-worldcover.json").read_text())
    if "features" in item:
        item = item["features"][0]
    codes = [c["value"] for c in item["assets"]["map"]["classification:classes"] if c["value"] != 0]
    assert set(codes) <= set(classes.WORLDCOVER_TO_LULC)


def test_remap_labels_maps_known_codes_and_sends_everything_else_to_nodata():
    codes = np.array([[10, 80, 50], [70, 0, 255], [40, 60, 95]], dtype=np.uint8)
    out = classes.remap_labels(codes, classes.WORLDCOVER_TO_LULC)
    assert out.tolist() == [[1, 0, 4], [255, 255, 255], [5, 3, 1]]


def test_remap_labels_handles_float_nan_and_negative_codes():
    codes = np.array([1.0, np.nan, -1.0, 11.0, 10.0])
    out = classes.remap_labels(codes, classes.IO_LULC_TO_LULC)
    assert out.tolist() == [0, 255, 255, 2, 255]
    assert out.dtype == np.uint8


def test_class_table_is_the_design_table():
    assert classes.CLASS_NAMES == ("water", "forest", "grassland", "barren", "built-up", "cropland")
    assert [c["value"] for c in classes.class_table()] == list(range(6))
    assert len(classes.S2_BANDS) == 12 and "B10" not in classes.S2_BANDS
