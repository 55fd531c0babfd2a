"""Haze and thin cirrus over a surface reflectance cube (SIMULATED DATA).

Why: a network trained on perfectly corrected reflectance reads any residual path radiance as a
different material (a hazy forest becomes water or built-up; real L1C top-of-atmosphere data fail
outright). Each acquisition therefore gets an atmosphere drawn from a range that spans a clean L2A
product to an uncorrected top-of-atmosphere one:

``rho_obs = t(lambda) rho_surf + a_r R(lambda) + a_a(x, y) A(lambda)``, then a cirrus layer,

with ``R`` the Rayleigh (lambda^-4) and ``A`` the aerosol (Angstrom 1.3) path-reflectance shapes of
:mod:`~cloudlulc.simulate.spectra`, ``a_a`` a smooth haze field, ``t`` the matching two-way
transmittance, and B09 (water vapour) partly absorbed. Thin cirrus is a smooth, semi-transparent
ice layer (flat in the VNIR, dark in the SWIR) that the scene classification often misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudlulc.simulate.noise import smooth_noise
from cloudlulc.simulate.spectra import AEROSOL, B09, CIRRUS_SPECTRUM, RAYLEIGH


@dataclass
class Atmosphere:
    """One acquisition's atmosphere: Rayleigh strength, haze field, B09 transmittance, cirrus opacity."""

    rayleigh: float  # path reflectance at B01 from molecules
    haze: np.ndarray  # float32 [H, W] aerosol path reflectance at B01
    b09_transmittance: float  # fraction of the surface signal B09 keeps (1 = corrected)
    cirrus: np.ndarray  # float32 [H, W] cirrus opacity 0..~0.15

    @classmethod
    def clear(cls, shape: tuple[int, int]) -> Atmosphere:
        """A perfectly corrected, cirrus-free atmosphere (the ideal L2A product)."""
        zeros = np.zeros(shape, np.float32)
        return cls(rayleigh=0.0, haze=zeros, b09_transmittance=1.0, cirrus=zeros)


def make_atmosphere(rng: np.random.Generator, shape: tuple[int, int], *, scale: float | None = None) -> Atmosphere:
    """Draw an atmosphere: about half the acquisitions are well corrected, the rest hazy up to TOA-like."""
    scale = float(scale or max(shape))
    uncorrected = rng.random() < 0.45
    rayleigh = rng.uniform(0.04, 0.11) if uncorrected else rng.uniform(0.0, 0.015)
    haze_mean = rng.uniform(0.01, 0.08) if uncorrected else rng.uniform(0.0, 0.02)
    field = np.exp(0.35 * smooth_noise(rng, shape, scale / 6)).astype(np.float32)
    haze = (haze_mean * field / float(field.mean())).astype(np.float32)
    b09 = rng.uniform(0.25, 0.6) if uncorrected else rng.uniform(0.85, 1.0)
    cirrus = np.zeros(shape, np.float32)
    if rng.random() < 0.35:  # a cirrus deck over part of the scene
        c = smooth_noise(rng, shape, scale / 10)
        cirrus = (rng.uniform(0.03, 0.15) * np.clip(c - rng.uniform(-0.5, 1.0), 0.0, 1.0)).astype(np.float32)
    return Atmosphere(rayleigh=float(rayleigh), haze=haze, b09_transmittance=float(b09), cirrus=cirrus)


def apply_atmosphere(refl: np.ndarray, atm: Atmosphere, *, in_place: bool = False) -> np.ndarray:
    """``refl`` [12, H, W] seen through ``atm``; band by band (one band of scratch memory)."""
    out = refl if in_place else np.empty_like(refl)
    for b in range(refl.shape[0]):
        path = atm.rayleigh * RAYLEIGH[b] + atm.haze * AEROSOL[b]  # [H, W]
        trans = np.clip(1.0 - 1.2 * path, 0.6, 1.0)
        if b == B09:
            trans = trans * atm.b09_transmittance
        band = np.multiply(refl[b], trans, out=out[b])
        band += path
        if atm.cirrus.any():
            band *= 1.0 - atm.cirrus
            band += atm.cirrus * CIRRUS_SPECTRUM[b]
    return out
