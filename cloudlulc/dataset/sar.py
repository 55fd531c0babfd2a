"""Sentinel-1 backscatter conventions of training data: RTC gamma0 (what the pipeline reads) or GRD sigma0.

The pipeline maps from Planetary Computer ``sentinel-1-rtc``: radiometrically terrain-corrected
gamma0 in dB. The published CloudLULC-Set ships GRD (ellipsoid-referenced sigma0). A network trained
on one and applied to the other sees a bias that grows with incidence angle, so GRD inputs are
converted to gamma0 on the ellipsoid before training:

``gamma0 = sigma0 / cos(theta)``, i.e. ``gamma0_dB = sigma0_dB - 10 log10(cos theta)``,

with ``theta`` the incidence angle (per pixel when the product ships it, else the IW mid-swath
37 deg: +0.98 dB). This removes the incidence dependence of the reference area, not the terrain: RTC
also normalises by the local illuminated area from a DEM, which a GRD file cannot give back, so
slopes keep their GRD brightening/darkening (a few dB on steep terrain).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

#: IW swath mid-range incidence angle, used when a GRD file carries no per-pixel angle
IW_MID_INCIDENCE_DEG = 37.0

Backscatter = Literal["gamma0", "sigma0"]


def sigma0_to_gamma0_db(sigma0_db: np.ndarray, incidence_deg: float | np.ndarray = IW_MID_INCIDENCE_DEG) -> np.ndarray:
    """GRD sigma0 in dB -> gamma0 (ellipsoid) in dB: ``sigma0_dB - 10 log10(cos(incidence))``; NaN stays NaN."""
    cos = np.cos(np.deg2rad(np.asarray(incidence_deg, dtype=np.float64)))
    if np.any(cos <= 0):
        raise ValueError(f"incidence angle must be below 90 degrees, got {incidence_deg}")
    return (np.asarray(sigma0_db, dtype=np.float32) - np.float32(10.0) * np.log10(cos).astype(np.float32)).astype(
        np.float32
    )
