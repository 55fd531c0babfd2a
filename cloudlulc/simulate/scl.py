"""The L2A scene classification (SCL) of a simulated acquisition, with Sen2Cor's typical errors.

Why errors: a model or metric that trusts SCL as a perfect cloud mask learns nothing about what
real masks do. Sen2Cor's known failure modes (Main-Knorn et al. 2017; Baetens et al. 2019, Remote
Sensing 11, 433; CloudSEN12, Aybar et al. 2022) are simulated per acquisition:

- thin cloud edges below an acquisition-specific opacity are missed (labelled as the surface);
- weak shadows are missed; only those darker than a threshold become class 3;
- bright surfaces (sand, concrete, roofs) are flagged as medium or high probability cloud in blobs;
- thin cirrus is class 10 only where it is thick enough.

Without an atmosphere and a random stream the classification is exact (every cloudy pixel flagged).
"""

from __future__ import annotations

import numpy as np

from cloudlulc.classes import S2_BANDS
from cloudlulc.simulate.atmosphere import Atmosphere
from cloudlulc.simulate.noise import smooth_noise

#: Sentinel-2 L2A scene classification values used here.
SCL_NODATA, SCL_DARK, SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_WATER = 0, 2, 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
WATER, BARREN, BUILT = 0, 3, 4


def scene_classification(
    labels: np.ndarray,
    surface: np.ndarray,
    clouds: object,
    atmosphere: Atmosphere | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """An SCL layer (ESA L2A class values) for the observed cloud-free ``surface`` [12, H, W] under ``clouds``.

    Clear land is split on NDVI like Sen2Cor (4 vegetation / 5 not vegetated), water is 6, shadows 3,
    cloud cores 9, medium clouds 8 and thin edges 10. ``clouds`` is a
    :class:`~cloudlulc.simulate.scene.CloudField`. With ``rng`` (and ``atmosphere``) the errors of the
    module docstring are drawn; without, the classification is exact.
    """
    red, nir = surface[S2_BANDS.index("B04")], surface[S2_BANDS.index("B08")]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.where(ndvi > 0.4, SCL_VEG, SCL_NOT_VEG).astype(np.uint8)
    scl[labels == WATER] = SCL_WATER
    op = clouds.opacity  # type: ignore[attr-defined]
    shadow = clouds.shadow  # type: ignore[attr-defined]
    if rng is None:
        scl[clouds.shadow_mask] = SCL_SHADOW  # type: ignore[attr-defined]
        scl[(op > 0) & (op <= 0.2)] = SCL_CIRRUS
        scl[(op > 0.2) & (op <= 0.6)] = SCL_CLOUD_MED
        scl[op > 0.6] = SCL_CLOUD_HIGH
        return scl
    miss_below = rng.uniform(0.03, 0.3)  # thin cloud edges below this opacity go unflagged
    scl[shadow > rng.uniform(0.15, 0.4)] = SCL_SHADOW
    blue = surface[S2_BANDS.index("B02")]
    bright = ((labels == BARREN) | (labels == BUILT)) & (blue > rng.uniform(0.11, 0.17))
    blobs = smooth_noise(rng, labels.shape, 6.0) > rng.uniform(0.3, 1.2)
    scl[bright & blobs] = SCL_CLOUD_MED
    if atmosphere is not None and atmosphere.cirrus.any():
        scl[atmosphere.cirrus > rng.uniform(0.04, 0.1)] = SCL_CIRRUS
    scl[(op > miss_below) & (op <= 0.2)] = SCL_CIRRUS
    scl[(op > max(miss_below, 0.2)) & (op <= 0.6)] = SCL_CLOUD_MED
    scl[op > 0.6] = SCL_CLOUD_HIGH
    return scl


def cloud_from_scl(scl: np.ndarray) -> np.ndarray:
    """Boolean cloud/shadow mask from SCL (classes 3, 8, 9, 10)."""
    return np.isin(scl, (SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS))
