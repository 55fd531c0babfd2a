"""``benchmarks/gpu_check.py``: the checks a lent GPU runs (no GPU here, so the checker itself is
tested: it must catch a map that differs, and run end to end with ``--device cpu``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from cloudlulc.classes import NODATA

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _products(lulc: np.ndarray, confidence: np.ndarray, reliability: np.ndarray) -> xr.Dataset:
    dims = ("y", "x")
    return xr.Dataset(
        {"lulc": (dims, lulc), "confidence": (dims, confidence), "optical_reliability": (dims, reliability)}
    )


def test_compare_maps_catches_nodata_class_and_confidence_differences():
    compare_maps = _load().compare_maps
    rng = np.random.default_rng(0)
    lulc = rng.integers(0, 6, (40, 50)).astype(np.uint8)
    lulc[:5] = NODATA
    conf = rng.integers(30, 100, lulc.shape).astype(np.uint8)
    rel = rng.integers(1, 101, lulc.shape).astype(np.uint8)
    ref = _products(lulc, conf, rel)

    assert compare_maps(ref, ref.copy(deep=True), 0.995) == []
    rounding = _products(lulc, conf + 2, rel - 1)  # AMP rounding: a couple of points
    assert compare_maps(ref, rounding, 0.995) == []

    gap = lulc.copy()
    gap[10, 10] = NODATA
    assert any("nodata differs at 1 pixels" in f for f in compare_maps(ref, _products(gap, conf, rel), 0.995))
    flipped = lulc.copy()
    flipped[5:8] = (flipped[5:8] + 1) % 6  # 150 of 1750 valid pixels change class
    assert any("lulc agreement" in f for f in compare_maps(ref, _products(flipped, conf, rel), 0.995))
    shifted = conf.copy()
    shifted[20:] = np.minimum(shifted[20:].astype(int) + 10, 100).astype(np.uint8)
    assert any(f.startswith("confidence") for f in compare_maps(ref, _products(lulc, shifted, rel), 0.995))


def test_gpu_check_runs_end_to_end_on_the_cpu():
    """The whole script with the CPU as the device under test: both maps equal, one model copy."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--size", "256", "--runs", "2", "--dask-workers", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lulc: 100.0000% of" in out.stdout
    assert "device copies of the model in this process after 2 runs: 1" in out.stdout
    assert out.stdout.rstrip().endswith("gpu_check: OK")
