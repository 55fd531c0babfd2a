"""In-memory simulated scenes: land cover, Sentinel-2 reflectance with clouds, Sentinel-1 backscatter.

SIMULATED DATA. Nothing here is a measurement; the generator exists so that the model, the cube
builder and the flows can be trained, tested and demonstrated without network access. It aims
at a task that is *learnable but not trivial*:

- land cover has spatial structure (hills with forest, a meandering river and lakes in the lows,
  towns, Voronoi field parcels of cropland / grassland / barren clustered by region);
- S2 spectra are linear mixtures of a few endmembers (soil, green vegetation, dry vegetation,
  canopy, urban, water) so that classes overlap: grassland vs. cropland at similar greenness,
  bare crop parcels vs. barren land vs. built-up;
- S1 backscatter is class dependent in dB with multiplicative gamma speckle (ENL 4.4, as in the
  Planetary Computer RTC items), which separates water, built-up and forest from the rest only
  partially;
- clouds are smooth, opaque in their cores and thin at the edges, cast shadows offset in one
  direction, and cover a requested fraction; the L2A scene classification (SCL) is consistent.

Every field uses ``numpy`` FFT-smoothed noise and ``scipy.ndimage``; 512 x 512 renders in a
fraction of a second. Output is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from cloudlulc.classes import NUM_CLASSES, S2_BANDS

# Class values (cloudlulc.classes.CLASSES): 0 water, 1 forest, 2 grassland, 3 barren, 4 built-up, 5 cropland.
WATER, FOREST, GRASSLAND, BARREN, BUILT, CROPLAND = range(NUM_CLASSES)

#: Sentinel-2 L2A scene classification values used here.
SCL_NODATA, SCL_DARK, SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_WATER = 0, 2, 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10

#: Endmember surface reflectance spectra in S2_BANDS order (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12).
#: Rough values from typical library spectra; only their relative shapes matter for the task.
ENDMEMBERS: dict[str, tuple[float, ...]] = {
    "soil": (0.080, 0.100, 0.140, 0.180, 0.210, 0.230, 0.250, 0.270, 0.280, 0.270, 0.350, 0.300),
    "green": (0.030, 0.035, 0.070, 0.035, 0.110, 0.300, 0.380, 0.420, 0.440, 0.420, 0.220, 0.100),
    "dry": (0.060, 0.070, 0.100, 0.130, 0.170, 0.210, 0.240, 0.260, 0.280, 0.270, 0.360, 0.260),
    "canopy": (0.020, 0.025, 0.045, 0.025, 0.070, 0.200, 0.260, 0.290, 0.300, 0.290, 0.140, 0.060),
    "urban": (0.090, 0.100, 0.120, 0.130, 0.150, 0.160, 0.170, 0.180, 0.190, 0.180, 0.220, 0.200),
    "water": (0.050, 0.045, 0.040, 0.025, 0.020, 0.012, 0.010, 0.008, 0.007, 0.006, 0.004, 0.003),
}
_EM_NAMES = tuple(ENDMEMBERS)
_EM = np.array([ENDMEMBERS[k] for k in _EM_NAMES], dtype=np.float32)  # [E, 12]

#: Opaque cloud top reflectance (bright, flat in the VNIR, darker in SWIR and B09 water vapour).
CLOUD_SPECTRUM = np.array((0.52, 0.50, 0.49, 0.49, 0.50, 0.51, 0.52, 0.52, 0.52, 0.30, 0.40, 0.29), dtype=np.float32)

#: Mean S1 backscatter in dB (VV, VH) per class; cropland/grassland are modulated by greenness.
SAR_MEAN_DB: dict[int, tuple[float, float]] = {
    WATER: (-21.0, -28.0),
    FOREST: (-7.5, -13.0),
    GRASSLAND: (-11.0, -18.0),
    BARREN: (-14.0, -23.0),
    BUILT: (-4.0, -11.0),
    CROPLAND: (-12.5, -21.0),
}
#: Equivalent number of looks of the speckle (sar:looks_equivalent_number on the PC RTC items).
SAR_ENL = 4.4

assert len(S2_BANDS) == _EM.shape[1] == CLOUD_SPECTRUM.size


@dataclass
class Landscape:
    """The time-invariant part of a simulated area: labels and per-pixel material properties."""

    labels: np.ndarray  # uint8 [H, W] class values 0..5
    parcels: np.ndarray  # int32 [H, W] parcel id (Voronoi cell), used for per-field attributes
    crop_peak: np.ndarray  # float32 [n_parcels] season of maximum greenness of the parcel's crop
    parcel_brightness: np.ndarray  # float32 [n_parcels] multiplicative brightness of the parcel
    parcel_moisture_db: np.ndarray  # float32 [n_parcels] SAR offset (soil moisture / roughness)
    brightness: np.ndarray  # float32 [H, W] smooth multiplicative brightness field
    texture: np.ndarray  # float32 [H, W] fine noise in [-1, 1]-ish, used for built-up/grass texture
    seed: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]


@dataclass
class CloudField:
    """Cloud opacity and shadow strength of one acquisition."""

    opacity: np.ndarray  # float32 [H, W] 0 (clear) .. 1 (opaque)
    shadow: np.ndarray  # float32 [H, W] 0 .. 1 darkening strength (0 under clouds)
    cloud_mask: np.ndarray  # bool [H, W] opacity > 0
    shadow_mask: np.ndarray  # bool [H, W]
    offset: tuple[int, int]  # shadow displacement (rows, cols) from the cloud


@dataclass
class SimScene:
    """One simulated, co-registered S2 + S1 acquisition on a 10 m grid (SIMULATED DATA).

    ``optical`` / ``optical_clear`` are float32 surface reflectance [12, H, W] in ``S2_BANDS``
    order, with and without clouds and shadows; ``sar`` float32 dB [2, H, W] (vv, vh) clipped to
    [-50, 10]; ``scl`` the L2A scene classification; ``cloud`` = SCL in (3, 8, 9, 10).
    """

    labels: np.ndarray
    optical: np.ndarray
    optical_clear: np.ndarray
    sar: np.ndarray
    scl: np.ndarray
    cloud: np.ndarray
    cloud_opacity: np.ndarray
    seed: int
    season: float

    @property
    def cloud_fraction(self) -> float:
        return float(self.cloud.mean())


# --------------------------------------------------------------------------------------------
# noise helpers


def _fft_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise via single-precision FFT on a padded canvas (no wrap-around)."""
    h, w = shape
    pad = int(min(2.0 * sigma, 256))
    ph, pw = scipy.fft.next_fast_len(h + pad, real=True), scipy.fft.next_fast_len(w + pad, real=True)
    white = rng.standard_normal((ph, pw), dtype=np.float32)
    spec = scipy.fft.rfft2(white)
    fy = np.fft.fftfreq(ph).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(pw).astype(np.float32)[None, :]
    spec *= np.exp(np.float32(-2.0 * (np.pi * sigma) ** 2) * (fx * fx + fy * fy))
    return scipy.fft.irfft2(spec, s=(ph, pw))[:h, :w].astype(np.float32)


def _upsample_linear(coarse: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Separable linear interpolation of ``coarse`` by a factor ``k``, cropped to ``shape``.

    Two gathers and blends; unlike ``ndimage.zoom`` or a BLAS product it stays fast on a busy
    machine (no thread pool to oversubscribe).
    """

    def axis_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.arange(n_out, dtype=np.float64) / k
        i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
        return i0, (pos - i0).astype(np.float32)

    h, w = shape
    r0, rf = axis_weights(h, coarse.shape[0])
    rows = coarse[r0] * (1 - rf)[:, None] + coarse[r0 + 1] * rf[:, None]  # [h, cw]
    c0, cf = axis_weights(w, coarse.shape[1])
    return rows[:, c0] * (1 - cf)[None, :] + rows[:, c0 + 1] * cf[None, :]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise, standardised to mean 0 / std 1 (float32).

    Broad fields are generated on a grid coarser by ``sigma / 3`` and interpolated bilinearly:
    the field has no detail at that scale, and the cost stays a few milliseconds per field.
    """
    h, w = shape
    k = max(1, int(sigma // 3))
    if k == 1:
        field = _fft_noise(rng, shape, sigma)
    else:
        coarse = _fft_noise(rng, (-(-h // k) + 2, -(-w // k) + 2), sigma / k)
        field = _upsample_linear(coarse, k, shape)
    field = field - field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigmas: tuple[float, ...], weights: tuple[float, ...]
) -> np.ndarray:
    """A weighted sum of :func:`smooth_noise` octaves, standardised."""
    out = np.zeros(shape, np.float32)
    for s, wgt in zip(sigmas, weights, strict=True):
        out += np.float32(wgt) * smooth_noise(rng, shape, max(s, 0.5))
    out -= out.mean()
    return out / max(float(out.std()), 1e-6)


def _shift(a: np.ndarray, dy: int, dx: int, fill: float = 0) -> np.ndarray:
    """Shift an array by (dy, dx) pixels without wrap-around."""
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


# --------------------------------------------------------------------------------------------
# landscape


def make_landscape(seed: int, shape: tuple[int, int], *, parcel_size: float = 36.0) -> Landscape:
    """Generate the land-cover map and material properties of an area (deterministic in ``seed``).

    ``parcel_size`` is the typical field parcel width in pixels.
    """
    h, w = shape
    if h < 8 or w < 8:
        raise ValueError(f"simulated scenes need at least 8 x 8 pixels, got {shape}")
    rng = np.random.default_rng([seed, 0x1A5D])
    scale = float(max(h, w))
    yy = np.arange(h, dtype=np.float32)[:, None]  # pixel coordinates, broadcast where used
    xx = np.arange(w, dtype=np.float32)[None, :]

    # Terrain: forest on the hills, lakes in the lows.
    elev = fractal_noise(rng, shape, (scale / 7, scale / 25, scale / 80), (1.0, 0.45, 0.2))
    region = fractal_noise(rng, shape, (scale / 5, scale / 18), (1.0, 0.4))  # farming vs. pasture
    labels = np.full(shape, CROPLAND, np.uint8)

    # Field parcels: Voronoi cells around jittered seed points.
    n_parcels = max(4, int(h * w / parcel_size**2))
    seeds = np.zeros(shape, bool)
    py = rng.integers(0, h, n_parcels)
    px = rng.integers(0, w, n_parcels)
    seeds[py, px] = True
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    flat_id = np.full(h * w, -1, np.int64)
    uniq = np.flatnonzero(seeds.ravel())
    flat_id[uniq] = np.arange(uniq.size)
    parcels = flat_id[iy.ravel() * w + ix.ravel()].reshape(shape).astype(np.int32)
    n = uniq.size

    # Per-parcel class: the regional field makes cropland and grassland cluster.
    region_at = region.ravel()[uniq]
    u = rng.random(n)
    p_grass = 1.0 / (1.0 + np.exp(-2.0 * (region_at - 0.6)))  # more pasture where region is high
    p_barren = 0.06 + 0.06 * (region_at < -1.0)
    parcel_class = np.where(u < p_barren, BARREN, np.where(u < p_barren + p_grass, GRASSLAND, CROPLAND))
    # Small scenes have few parcels: make sure each parcel class occurs (on distinct parcels).
    spare = rng.permutation(n)
    for i, cls in enumerate((BARREN, GRASSLAND, CROPLAND)):
        if not (parcel_class == cls).any() and n >= 3:
            parcel_class[spare[i]] = cls
    labels = parcel_class.astype(np.uint8)[parcels]

    # Forest on high ground, with a ragged edge.
    forest = elev + 0.25 * smooth_noise(rng, shape, 3.0) > np.quantile(elev, 0.78)
    labels[forest] = FOREST

    # Towns: a few blobs of irregular outline plus their road axes.
    n_towns = max(1, int(round(h * w / 110_000.0 * rng.uniform(0.7, 1.3))))
    fine = smooth_noise(rng, shape, 4.0)
    # How far the noise can push a town's outline beyond its radius: each town is drawn in the window
    # that can hold it, so the cost grows with the area, not with area x number of towns.
    reach = 1.0 + 0.35 * max(0.0, -float(fine.min()))
    for _ in range(n_towns):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        r = rng.uniform(20.0, 45.0) * (scale / 512) ** 0.25
        stretch = rng.uniform(0.7, 1.4)
        half = max(r * max(1.0, stretch) * reach, 3.5 * r + 1.0) + 2.0
        win = (
            slice(max(0, int(cy - half)), min(h, int(cy + half) + 1)),
            slice(max(0, int(cx - half)), min(w, int(cx + half) + 1)),
        )
        wy, wx = yy[win[0]], xx[:, win[1]]
        d = np.hypot((wy - cy) / r, (wx - cx) / (r * stretch))
        town = d + 0.35 * fine[win] < 1.0
        labels[win][town] = BUILT
        # a road leaving the town in a random direction (2 px wide built-up line)
        ang = rng.uniform(0, np.pi)
        dist_line = np.abs((wy - cy) * np.cos(ang) - (wx - cx) * np.sin(ang))
        along = np.abs((wy - cy) * np.sin(ang) + (wx - cx) * np.cos(ang))
        labels[win][(dist_line < 1.0) & (along < 3.5 * r)] = BUILT

    # Water: a meandering river across the scene and lakes in the lowest terrain.
    t = np.arange(w, dtype=np.float32)
    meander = rng.standard_normal(w + 200).astype(np.float32)
    meander = ndimage.gaussian_filter1d(meander, sigma=max(w / 12, 2), mode="wrap")[100 : w + 100]
    meander = meander / max(float(np.abs(meander).max()), 1e-6)
    centre = h * rng.uniform(0.3, 0.7) + 0.18 * h * meander + 0.04 * h * np.sin(t / max(w / 9, 1) + rng.uniform(0, 6))
    width = np.clip(scale * rng.uniform(0.006, 0.012) * (1 + 0.3 * np.sin(t / 37.0)), 1.5, None)
    river = np.abs(yy - centre[None, :]) < width[None, :] / 2
    lakes = elev < np.quantile(elev, 0.035)
    labels[river | lakes] = WATER

    crop_peak = rng.choice(np.array([0.3, 0.5, 0.7, 0.9], np.float32), n).astype(np.float32)
    parcel_brightness = rng.lognormal(0.0, 0.12, n).astype(np.float32)
    parcel_moisture_db = rng.normal(0.0, 1.2, n).astype(np.float32)
    brightness = np.exp(0.07 * smooth_noise(rng, shape, scale / 30)).astype(np.float32)
    texture = (0.6 * rng.standard_normal(shape, dtype=np.float32) + 0.8 * smooth_noise(rng, shape, 1.5)).astype(
        np.float32
    )
    return Landscape(
        labels=labels,
        parcels=parcels,
        crop_peak=crop_peak,
        parcel_brightness=parcel_brightness,
        parcel_moisture_db=parcel_moisture_db,
        brightness=brightness,
        texture=texture,
        seed=seed,
    )


def greenness(land: Landscape, season: float) -> np.ndarray:
    """Fraction of green vegetation per pixel at ``season`` (0..1 through the growing season).

    Crops follow a Gaussian phenology around their parcel's peak; grassland stays moderately green.
    """
    lab = land.labels
    crop_v = 0.05 + 0.9 * np.exp(-(((season - land.crop_peak) / 0.2) ** 2))
    v = crop_v.astype(np.float32)[land.parcels]
    grass_v = np.clip(0.55 + 0.12 * np.sin(2 * np.pi * season) + 0.12 * land.texture, 0.2, 0.9)
    v = np.where(lab == GRASSLAND, grass_v, v)
    v = np.where(lab == FOREST, 0.9, v)
    v = np.where(lab == BUILT, np.clip(0.15 + 0.15 * land.texture, 0.0, 0.5), v)
    v = np.where((lab == WATER) | (lab == BARREN), 0.0, v)
    return v.astype(np.float32)


# --------------------------------------------------------------------------------------------
# sensors


def render_optical(land: Landscape, season: float, rng: np.random.Generator) -> np.ndarray:
    """Cloud-free S2 surface reflectance [12, H, W] float32 of a landscape at ``season``."""
    lab = land.labels
    h, w = lab.shape
    v = greenness(land, season)
    frac = np.zeros((len(_EM_NAMES), h, w), np.float32)
    idx = {k: i for i, k in enumerate(_EM_NAMES)}
    pix_noise = 0.05 * rng.standard_normal((h, w), dtype=np.float32)

    # cropland: green crop over soil with a little residue, homogeneous within the parcel
    crop = lab == CROPLAND
    frac[idx["green"]][crop] = v[crop]
    frac[idx["dry"]][crop] = 0.15 * (1 - v[crop])
    frac[idx["soil"]][crop] = 0.85 * (1 - v[crop])
    # grassland: green + dry grass + some soil, heterogeneous
    g = lab == GRASSLAND
    frac[idx["green"]][g] = v[g]
    frac[idx["dry"]][g] = 0.75 * (1 - v[g])
    frac[idx["soil"]][g] = 0.25 * (1 - v[g])
    # forest: canopy with some green understory
    f = lab == FOREST
    cf = np.clip(0.8 + 0.1 * land.texture[f], 0.6, 1.0)
    frac[idx["canopy"]][f] = cf
    frac[idx["green"]][f] = 1 - cf
    # barren: soil with sparse dry vegetation
    b = lab == BARREN
    dv = np.clip(0.12 + 0.1 * land.texture[b], 0.0, 0.4)
    frac[idx["soil"]][b] = 1 - dv
    frac[idx["dry"]][b] = dv
    # built-up: urban materials, gardens, bright/dark roofs via texture
    u = lab == BUILT
    frac[idx["urban"]][u] = (1 - v[u]) * np.clip(1 + 0.35 * land.texture[u], 0.4, 1.8)
    frac[idx["green"]][u] = v[u]
    # water: clear water with some turbidity
    wt = lab == WATER
    turb = np.clip(0.05 + 0.05 * land.brightness[wt] - 0.05, 0.0, 0.2)
    frac[idx["water"]][wt] = 1 - turb
    frac[idx["soil"]][wt] = turb

    gain = land.brightness * land.parcel_brightness[land.parcels] * (1 + pix_noise)
    frac *= np.where(wt, 1.0, gain).astype(np.float32)[None]
    # Sensor point-spread: neighbouring pixels mix a little (mixed pixels at parcel edges); blurring
    # the 6 abundances instead of the 12 bands gives the same result (mixing is linear) at half the cost.
    ndimage.gaussian_filter(frac, sigma=(0, 0.6, 0.6), truncate=2.0, output=frac)  # line-buffered: safe in place
    refl = np.tensordot(_EM.T, frac, axes=(1, 0))  # [12, H, W]
    del frac
    # Band by band: the same random stream as one [12, H, W] draw, without a second cube in memory.
    for band in refl:
        band += 0.003 * rng.standard_normal(band.shape, dtype=np.float32)
    return np.clip(refl, 0.0001, 1.0, out=refl).astype(np.float32, copy=False)


def render_sar(land: Landscape, season: float, rng: np.random.Generator) -> np.ndarray:
    """S1 RTC gamma0 in dB [2, H, W] (vv, vh) with gamma speckle applied in linear power."""
    lab = land.labels
    vv = np.zeros(lab.shape, np.float32)
    vh = np.zeros(lab.shape, np.float32)
    for c, (mv, mh) in SAR_MEAN_DB.items():
        m = lab == c
        vv[m], vh[m] = mv, mh
    v = greenness(land, season)
    vegmod = (lab == CROPLAND) | (lab == GRASSLAND)
    vv += np.where(vegmod, 3.0 * v, 0.0).astype(np.float32)
    vh += np.where(vegmod, 7.0 * v, 0.0).astype(np.float32)
    moist = land.parcel_moisture_db[land.parcels]
    nonwater = lab != WATER
    vv += np.where(nonwater, moist, 0.0)
    vh += np.where(nonwater, 0.8 * moist, 0.0)
    built = lab == BUILT
    vv += np.where(built, 3.0 * land.texture, 0.0)  # bright corner reflectors, dark streets
    vh += np.where(built, 2.5 * land.texture, 0.0)
    wind = 2.0 * smooth_noise(rng, lab.shape, max(lab.shape) / 15)  # wind roughening of water
    vv += np.where(lab == WATER, wind, 0.0)
    vh += np.where(lab == WATER, 0.6 * wind, 0.0)
    db = np.stack([vv, vh])
    lin = 10.0 ** (db / 10.0) * rng.gamma(SAR_ENL, 1.0 / SAR_ENL, size=db.shape).astype(np.float32)
    return np.clip(10.0 * np.log10(np.maximum(lin, 1e-10)), -50.0, 10.0).astype(np.float32)


def make_clouds(
    rng: np.random.Generator, shape: tuple[int, int], cloud_cover: float, *, scale: float | None = None
) -> CloudField:
    """Clouds plus shadows whose union covers ``cloud_cover`` of the scene (to within a pixel or so).

    The cloud field is smooth fractal noise; opacity ramps from 0 at the edge to 1 in the core.
    The threshold is found by bisection on the union of cloud and shadow, which is monotonic in it.
    """
    if not 0.0 <= cloud_cover <= 1.0:
        raise ValueError(f"cloud_cover must be within [0, 1], got {cloud_cover}")
    h, w = shape
    scale = float(scale or max(h, w))
    field = fractal_noise(rng, shape, (scale / 14, scale / 45, scale / 140), (1.0, 0.5, 0.25))
    ramp = 0.8
    az = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.02, 0.04) * scale + 3
    dy, dx = int(round(dist * np.sin(az))), int(round(dist * np.cos(az)))

    def build(thr: float) -> tuple[np.ndarray, np.ndarray]:
        opacity = np.clip((field - thr) / ramp, 0.0, 1.0)
        shadow = _shift(opacity, dy, dx)
        shadow[opacity > 0] = 0.0
        return opacity, shadow

    def cover(thr: float) -> float:
        opacity, shadow = build(thr)
        return float(((opacity > 0) | (shadow > 0.15)).mean())

    if cloud_cover <= 0.0:
        thr = float(field.max()) + 1.0
    elif cloud_cover >= 1.0:
        thr = float(field.min()) - 1.0
    else:
        lo, hi = float(field.min()) - 1.0, float(field.max()) + 1.0  # cover(lo) = 1, cover(hi) = 0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if cover(mid) > cloud_cover:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-4:
                break
        thr = hi
    opacity, shadow = build(thr)
    # Thick clouds have internal texture; thin edges stay thin.
    return CloudField(
        opacity=opacity.astype(np.float32),
        shadow=shadow.astype(np.float32),
        cloud_mask=opacity > 0,
        shadow_mask=shadow > 0.15,
        offset=(dy, dx),
    )


def apply_clouds(
    clear: np.ndarray, clouds: CloudField, rng: np.random.Generator, *, in_place: bool = False
) -> np.ndarray:
    """Composite clouds over (shadowed) clear reflectance.

    Band by band, so a large scene needs one band of scratch memory; ``in_place`` overwrites
    ``clear`` (float32) instead of allocating the cloudy cube beside it.
    """
    out = clear if in_place else np.empty(clear.shape, np.float32)
    dim = (1.0 - 0.7 * clouds.shadow).astype(np.float32)
    tex = np.exp(0.08 * smooth_noise(rng, clouds.opacity.shape, 3.0))
    for b in range(clear.shape[0]):
        # out = (1 - a) * shadowed + a * cloud top
        shadowed = np.multiply(clear[b], dim, out=out[b])
        top = CLOUD_SPECTRUM[b] * tex
        top -= shadowed
        top *= clouds.opacity
        shadowed += top
    return out


def scene_classification(labels: np.ndarray, clear: np.ndarray, clouds: CloudField) -> np.ndarray:
    """An SCL layer consistent with the surface and the clouds (the ESA L2A class values).

    Clear land is split on NDVI like Sen2Cor (4 vegetation / 5 not vegetated), water is 6,
    shadows 3, cloud cores 9, medium clouds 8 and thin edges 10 (thin cirrus).
    """
    red, nir = clear[S2_BANDS.index("B04")], clear[S2_BANDS.index("B08")]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.where(ndvi > 0.4, SCL_VEG, SCL_NOT_VEG).astype(np.uint8)
    scl[labels == WATER] = SCL_WATER
    scl[clouds.shadow_mask] = SCL_SHADOW
    op = clouds.opacity
    scl[(op > 0) & (op <= 0.2)] = SCL_CIRRUS
    scl[(op > 0.2) & (op <= 0.6)] = SCL_CLOUD_MED
    scl[op > 0.6] = SCL_CLOUD_HIGH
    return scl


def cloud_from_scl(scl: np.ndarray) -> np.ndarray:
    """Boolean cloud/shadow mask from SCL (classes 3, 8, 9, 10)."""
    return np.isin(scl, (SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS))


def simulate_scene(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    cloud_cover: float = 0.3,
    *,
    season: float = 0.5,
    sar_season: float | None = None,
    parcel_size: float = 36.0,
    landscape: Landscape | None = None,
) -> SimScene:
    """Simulate one co-registered S2 + S1 acquisition (SIMULATED DATA), entirely in memory.

    ``seed`` fixes the landscape, clouds, noise and speckle; ``cloud_cover`` is the fraction of
    pixels under cloud or shadow (SCL 3/8/9/10); ``season`` in [0, 1] sets crop greenness (crops
    peak at 0.3, 0.5, 0.7 or 0.9), ``sar_season`` the same for the S1 pass (default = ``season``).
    Pass a precomputed ``landscape`` to render several acquisitions of one area.

    Guarantee relied on by the cloud sweep (``cloudlulc.evaluation``): for one ``seed`` and
    ``season``, everything but the cloud threshold is drawn independently of ``cloud_cover`` —
    same labels, clear reflectance, SAR and cloud field — so higher covers give nested masks.
    """
    land = landscape if landscape is not None else make_landscape(seed, tuple(shape), parcel_size=parcel_size)
    shape = land.shape
    rng = np.random.default_rng([seed, 0x5CE4E, int(round(season * 1000))])
    clear = render_optical(land, season, rng)
    clouds = make_clouds(rng, shape, cloud_cover)
    optical = apply_clouds(clear, clouds, rng)
    scl = scene_classification(land.labels, clear, clouds)
    sar = render_sar(land, season if sar_season is None else sar_season, rng)
    return SimScene(
        labels=land.labels.copy(),
        optical=optical,
        optical_clear=clear,
        sar=sar,
        scl=scl,
        cloud=cloud_from_scl(scl),
        cloud_opacity=clouds.opacity,
        seed=seed,
        season=season,
    )
