"""Sentinel-1 RTC gamma0 of a simulated landscape (SIMULATED DATA).

Backscatter in dB per class (VV, VH), then the effects that make a real pass differ from the
optical date it is paired with:

- crop and grass phenology at the *radar's* date (vegetation raises VH most), and harvests: a parcel
  harvested between the two dates looks bare to one sensor and green to the other;
- soil moisture: a scene-wide offset plus a smooth field (rain between passes), on soil and vegetation;
- incidence angle: IW swaths span about 30-46 deg; gamma0 still falls with incidence, steeply on
  smooth surfaces (water, bare soil) and little on volume scatterers (forest);
- terrain: radiometric terrain correction leaves residuals on slopes facing or turned from the
  sensor; descending passes look west, ascending passes east, so the residual flips with the orbit;
- wind roughening of water, bright corner reflectors in towns;
- multiplicative gamma speckle with the ENL of the Planetary Computer RTC items (4.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cloudlulc.simulate.noise import smooth_noise

if TYPE_CHECKING:
    from cloudlulc.simulate.scene import Landscape

WATER, FOREST, GRASSLAND, BARREN, BUILT, CROPLAND = range(6)

#: Mean S1 backscatter in dB (VV, VH) per class at 37 deg incidence; crops/grass are modulated by greenness.
SAR_MEAN_DB: dict[int, tuple[float, float]] = {
    WATER: (-21.0, -28.0),
    FOREST: (-7.5, -13.0),
    GRASSLAND: (-11.0, -18.0),
    BARREN: (-14.0, -23.0),
    BUILT: (-4.0, -11.0),
    CROPLAND: (-12.5, -21.0),
}
#: dB per degree of incidence (VV, VH) per class: steep on smooth surfaces, flat on volume scatterers.
INCIDENCE_SLOPE_DB: dict[int, tuple[float, float]] = {
    WATER: (-0.45, -0.3),
    FOREST: (-0.05, -0.05),
    GRASSLAND: (-0.15, -0.1),
    BARREN: (-0.25, -0.2),
    BUILT: (-0.1, -0.1),
    CROPLAND: (-0.15, -0.1),
}
#: Equivalent number of looks of the speckle (sar:looks_equivalent_number on the PC RTC items).
SAR_ENL = 4.4
#: Incidence angle the class means refer to.
REFERENCE_INCIDENCE = 37.0


def render_sar(
    land: Landscape,
    season: float,
    rng: np.random.Generator,
    *,
    orbit_state: str = "descending",
    incidence_deg: float = REFERENCE_INCIDENCE,
    moisture_db: float = 0.0,
) -> np.ndarray:
    """S1 RTC gamma0 in dB [2, H, W] (vv, vh), speckled in linear power, clipped to [-50, 10].

    ``season`` is the radar's date on the crop calendar (see :func:`~cloudlulc.simulate.scene.greenness`),
    ``incidence_deg`` the incidence at the scene centre, ``moisture_db`` a scene-wide soil-moisture offset.
    """
    from cloudlulc.simulate.scene import greenness, harvested

    lab = land.labels
    h, w = lab.shape
    vv = np.zeros(lab.shape, np.float32)
    vh = np.zeros(lab.shape, np.float32)
    # incidence grows across the swath (west to east for a right-looking descending pass, reversed ascending)
    ramp = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * np.float32(w * 10 / 250_000 * 16.0)
    theta = incidence_deg + (ramp if orbit_state == "descending" else -ramp) - REFERENCE_INCIDENCE
    for c, (mv, mh) in SAR_MEAN_DB.items():
        m = lab == c
        sv, sh = INCIDENCE_SLOPE_DB[c]
        th = np.broadcast_to(theta, lab.shape)[m]
        vv[m], vh[m] = mv + sv * th, mh + sh * th
    v = greenness(land, season)
    vegmod = (lab == CROPLAND) | (lab == GRASSLAND)
    vv += np.where(vegmod, 3.0 * v, 0.0).astype(np.float32)
    vh += np.where(vegmod, 7.0 * v, 0.0).astype(np.float32)
    stubble = harvested(land, season)
    vv += np.where(stubble, 1.5, 0.0).astype(np.float32)  # rough tilled / stubble surface
    soil = (lab != WATER) & (lab != BUILT)
    moist = land.parcel_moisture_db[land.parcels] + moisture_db + 0.8 * smooth_noise(rng, lab.shape, max(h, w) / 8)
    vv += np.where(soil, moist, 0.0)
    vh += np.where(soil, 0.8 * moist, 0.0)
    if land.elevation is not None:
        # RTC residual on slopes facing the sensor (west for descending, east for ascending)
        facing = np.gradient(land.elevation, axis=1) * (-1.0 if orbit_state == "descending" else 1.0)
        residual = np.clip(facing / (float(np.abs(facing).std()) + 1e-6), -3, 3) * 0.5
        vv += np.where(lab != WATER, residual, 0.0).astype(np.float32)
        vh += np.where(lab != WATER, residual, 0.0).astype(np.float32)
    built = lab == BUILT
    vv += np.where(built, 3.0 * land.texture, 0.0)  # bright corner reflectors, dark streets
    vh += np.where(built, 2.5 * land.texture, 0.0)
    wind = 2.0 * smooth_noise(rng, lab.shape, max(lab.shape) / 15)  # wind roughening of water
    vv += np.where(lab == WATER, wind, 0.0)
    vh += np.where(lab == WATER, 0.6 * wind, 0.0)
    db = np.stack([vv, vh])
    lin = 10.0 ** (db / 10.0) * rng.gamma(SAR_ENL, 1.0 / SAR_ENL, size=db.shape).astype(np.float32)
    return np.clip(10.0 * np.log10(np.maximum(lin, 1e-10)), -50.0, 10.0).astype(np.float32)
