"""Spectral constants of the simulator: surface endmembers, atmosphere and cloud spectra (SIMULATED DATA).

All spectra are in :data:`~cloudlulc.classes.S2_BANDS` order (B01 B02 B03 B04 B05 B06 B07 B08 B8A
B09 B11 B12; centres 443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1610, 2190 nm). The surface
endmembers are Sentinel-2 L2A surface reflectances read off published spectral libraries at the band
centres and rounded (USGS Spectral Library v7, ECOSTRESS v1, water optics literature); sources and
ranges are listed in ``docs/model.md`` ("Simulator"). Each class is a *mixture* of several endmembers
with parcel- and pixel-level variation, so the values below are anchors, not class signatures.
"""

from __future__ import annotations

import numpy as np

from cloudlulc.classes import S2_BANDS

#: Band centre wavelengths in nm (ESA Sentinel-2 MSI), S2_BANDS order.
WAVELENGTH_NM = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1610, 2190], dtype=np.float32)

#: Surface reflectance endmembers (L2A, 0..1).
ENDMEMBERS: dict[str, tuple[float, ...]] = {
    # loamy agricultural soil, dry (USGS v7 / ECOSTRESS soils: 0.06-0.12 blue, 0.25-0.35 SWIR1)
    "soil": (0.070, 0.085, 0.125, 0.165, 0.195, 0.215, 0.235, 0.255, 0.265, 0.255, 0.340, 0.290),
    # bright sand / bare rock (ECOSTRESS: 0.15-0.25 blue, 0.4-0.55 SWIR1)
    "sand": (0.140, 0.180, 0.250, 0.310, 0.340, 0.360, 0.380, 0.400, 0.410, 0.400, 0.480, 0.420),
    # green herbaceous canopy, LAI ~3 (crops, pasture): red well < 0.05, NIR 0.35-0.5, SWIR1 ~0.2
    "green": (0.025, 0.030, 0.075, 0.030, 0.110, 0.310, 0.400, 0.440, 0.455, 0.420, 0.210, 0.090),
    # non-photosynthetic vegetation (straw, senescent grass): cellulose/lignin, SWIR1 > NIR
    "dry": (0.060, 0.075, 0.105, 0.135, 0.175, 0.215, 0.245, 0.265, 0.280, 0.270, 0.370, 0.270),
    # broadleaf forest canopy (deciduous, summer): NIR 0.3-0.4, SWIR1 0.13-0.18
    "broadleaf": (0.020, 0.025, 0.050, 0.025, 0.075, 0.230, 0.310, 0.340, 0.350, 0.330, 0.160, 0.065),
    # needleleaf forest canopy: darker everywhere, NIR ~0.2
    "conifer": (0.015, 0.018, 0.035, 0.018, 0.050, 0.140, 0.190, 0.210, 0.220, 0.205, 0.095, 0.040),
    # urban mixture: concrete, asphalt, roofs (USGS v7 man-made materials; flat, 0.1-0.2)
    "urban": (0.090, 0.100, 0.115, 0.125, 0.140, 0.150, 0.160, 0.170, 0.175, 0.170, 0.210, 0.195),
    # clay-tile and metal roofs: red-shifted, bright
    "roof": (0.070, 0.075, 0.100, 0.180, 0.210, 0.230, 0.245, 0.260, 0.270, 0.260, 0.330, 0.290),
    # clear deep water: NIR and SWIR near zero
    "water": (0.045, 0.040, 0.035, 0.015, 0.010, 0.006, 0.005, 0.004, 0.004, 0.003, 0.002, 0.001),
    # turbid / eutrophic water: sediment raises green and red, still dark in SWIR
    "turbid": (0.050, 0.060, 0.085, 0.065, 0.055, 0.030, 0.025, 0.020, 0.020, 0.012, 0.005, 0.003),
}
EM_NAMES: tuple[str, ...] = tuple(ENDMEMBERS)
EM = np.array([ENDMEMBERS[k] for k in EM_NAMES], dtype=np.float32)  # [E, 12]
EM_INDEX = {k: i for i, k in enumerate(EM_NAMES)}

#: Rayleigh path reflectance shape (lambda^-4), 1 at B01.
RAYLEIGH = (WAVELENGTH_NM[0] / WAVELENGTH_NM) ** 4
#: Continental aerosol path reflectance shape (Angstrom exponent 1.3), 1 at B01.
AEROSOL = (WAVELENGTH_NM[0] / WAVELENGTH_NM) ** 1.3
#: B09 is the 945 nm water-vapour band: top-of-atmosphere it keeps only part of the surface signal.
B09 = S2_BANDS.index("B09")

#: Opaque water-cloud top reflectance: bright and flat in the VNIR, darker in B09 and the SWIR.
CLOUD_SPECTRUM = np.array((0.52, 0.50, 0.49, 0.49, 0.50, 0.51, 0.52, 0.52, 0.52, 0.30, 0.40, 0.29), dtype=np.float32)
#: Thin cirrus (ice): nearly flat in the VNIR, ice absorbs strongly in the SWIR.
CIRRUS_SPECTRUM = np.array((0.40, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40, 0.30, 0.16, 0.10), dtype=np.float32)

assert EM.shape[1] == len(S2_BANDS) == CLOUD_SPECTRUM.size == CIRRUS_SPECTRUM.size == WAVELENGTH_NM.size


def cloud_spectrum(rng: np.random.Generator) -> np.ndarray:
    """One acquisition's cloud-top spectrum: brightness, SWIR (phase, droplet size) and B09 vary."""
    spec = CLOUD_SPECTRUM * np.float32(rng.uniform(0.7, 1.45))
    spec[-2:] *= np.float32(rng.uniform(0.55, 1.2))  # ice-topped or large-droplet clouds are darker in SWIR
    spec[B09] *= np.float32(rng.uniform(0.8, 1.4))
    return np.clip(spec, 0.05, 0.95).astype(np.float32)
