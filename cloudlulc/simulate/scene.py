"""In-memory simulated scenes: land cover, Sentinel-2 reflectance with atmosphere and clouds, Sentinel-1.

SIMULATED DATA. Nothing here is a measurement; the generator exists so that the model, the cube
builder and the flows can be trained, tested and demonstrated without network access. It aims at a
task that is *learnable but not trivial*, and realistic where a model trained on it meets real data:

- land cover has spatial structure (hills with forest, a meandering river and lakes in the lows,
  towns, Voronoi field parcels of cropland / grassland / barren clustered by region);
- S2 surface reflectance mixes endmembers from published spectral libraries
  (:mod:`~cloudlulc.simulate.spectra`) with sub-types per class (broadleaf / needleleaf forest, soil /
  sand, concrete / tiled roofs, clear / turbid water), crop phenology and harvests, parcel and pixel
  variability;
- an atmosphere per acquisition (:mod:`~cloudlulc.simulate.atmosphere`): from a clean L2A product to
  hazy, top-of-atmosphere-like data, and thin cirrus;
- clouds with an acquisition-specific spectrum and shadows whose depth varies; the scene
  classification (SCL) misses thin clouds and weak shadows and flags bright surfaces as cloud, as
  Sen2Cor does (:mod:`~cloudlulc.simulate.scl`);
- S1 from another date (0-12 days off by default), either orbit direction, with incidence,
  terrain, soil-moisture and harvest effects and gamma speckle (:mod:`~cloudlulc.simulate.radar`).

Every field uses ``numpy`` FFT-smoothed noise and ``scipy.ndimage``; 512 x 512 renders in a
fraction of a second. Output is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cloudlulc.classes import NUM_CLASSES
from cloudlulc.simulate.atmosphere import Atmosphere, apply_atmosphere, make_atmosphere
from cloudlulc.simulate.noise import fractal_noise, shift, smooth_noise
from cloudlulc.simulate.radar import SAR_ENL, SAR_MEAN_DB, render_sar
from cloudlulc.simulate.scl import (
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MED,
    SCL_DARK,
    SCL_NODATA,
    SCL_NOT_VEG,
    SCL_SHADOW,
    SCL_VEG,
    SCL_WATER,
    cloud_from_scl,
    scene_classification,
)
from cloudlulc.simulate.spectra import CLOUD_SPECTRUM, EM, EM_INDEX, cloud_spectrum

__all__ = [
    "CLOUD_SPECTRUM",
    "SAR_ENL",
    "SAR_MEAN_DB",
    "SCL_CIRRUS",
    "SCL_CLOUD_HIGH",
    "SCL_CLOUD_MED",
    "SCL_DARK",
    "SCL_NODATA",
    "SCL_NOT_VEG",
    "SCL_SHADOW",
    "SCL_VEG",
    "SCL_WATER",
    "Acquisition",
    "CloudField",
    "Landscape",
    "SimScene",
    "apply_clouds",
    "cloud_from_scl",
    "fractal_noise",
    "greenness",
    "harvested",
    "make_clouds",
    "make_landscape",
    "render_acquisition",
    "render_optical",
    "render_sar",
    "scene_classification",
    "simulate_scene",
    "smooth_noise",
]

# Class values (cloudlulc.classes.CLASSES): 0 water, 1 forest, 2 grassland, 3 barren, 4 built-up, 5 cropland.
WATER, FOREST, GRASSLAND, BARREN, BUILT, CROPLAND = range(NUM_CLASSES)

#: Days per unit of ``season`` (the crop calendar): a growing season of about five months.
SEASON_DAYS = 150.0
#: Default range of the S1-S2 gap in days (the pipeline pairs passes up to 12 days off).
MAX_SAR_GAP_DAYS = 12.0


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
    elevation: np.ndarray | None = None  # float32 [H, W] standardised terrain height (SAR terrain residuals)
    harvest_at: np.ndarray | None = None  # float32 [n_parcels] season a crop parcel is harvested
    material: np.ndarray | None = None  # float32 [H, W] 0..1 sub-type share (conifer, sand, roofs, turbidity)

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape


@dataclass
class CloudField:
    """Cloud opacity and shadow strength of one acquisition."""

    opacity: np.ndarray  # float32 [H, W] 0 (clear) .. 1 (opaque)
    shadow: np.ndarray  # float32 [H, W] 0 .. 1 darkening strength (0 under clouds)
    cloud_mask: np.ndarray  # bool [H, W] opacity > 0
    shadow_mask: np.ndarray  # bool [H, W]
    offset: tuple[int, int]  # shadow displacement (rows, cols) from the cloud


@dataclass
class Acquisition:
    """One rendered Sentinel-2 acquisition: what the sensor saw, the SCL, and the truth behind them."""

    optical: np.ndarray  # float32 [12, H, W] observed reflectance (atmosphere, cirrus, clouds, shadows)
    clear: np.ndarray | None  # float32 [12, H, W] surface reflectance (None when composited in place)
    scl: np.ndarray  # uint8 [H, W] scene classification, with Sen2Cor-like errors when asked
    clouds: CloudField
    atmosphere: Atmosphere


@dataclass
class SimScene:
    """One simulated S2 + S1 acquisition pair on a 10 m grid (SIMULATED DATA).

    ``optical`` float32 reflectance [12, H, W] in ``S2_BANDS`` order as observed (atmosphere, cirrus,
    clouds, shadows); ``optical_clear`` the surface reflectance without any of them; ``sar`` float32 dB
    [2, H, W] (vv, vh) of the S1 pass ``sar_gap_days`` away in ``orbit_state``; ``scl`` the L2A scene
    classification (with its errors); ``cloud`` = SCL in (3, 8, 9, 10); ``cloud_true`` the pixels
    really under cloud or shadow; ``changed`` pixels harvested between the S2 and the S1 dates.
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
    cloud_true: np.ndarray | None = None
    sar_gap_days: float = 0.0
    orbit_state: str = "descending"
    changed: np.ndarray | None = None

    @property
    def cloud_fraction(self) -> float:
        return float(self.cloud.mean())


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
    # Drawn after the draws above so that the land cover of a seed is unchanged by them.
    harvest_at = (crop_peak + rng.uniform(0.12, 0.3, n)).astype(np.float32)
    material = np.clip(
        0.5 + 0.3 * smooth_noise(rng, shape, scale / 20) + 0.2 * rng.uniform(-1, 1, n).astype(np.float32)[parcels], 0, 1
    ).astype(np.float32)
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
        elevation=elev,
        harvest_at=harvest_at,
        material=material,
    )


def harvested(land: Landscape, season: float) -> np.ndarray:
    """Cropland pixels whose parcel is harvested by ``season`` (bare soil and straw until the next crop)."""
    if land.harvest_at is None:
        return np.zeros(land.shape, bool)
    return (land.labels == CROPLAND) & (season >= land.harvest_at[land.parcels])


def greenness(land: Landscape, season: float) -> np.ndarray:
    """Fraction of green vegetation per pixel at ``season`` (0..1 through the growing season).

    Crops follow a Gaussian phenology around their parcel's peak until harvested; grassland stays
    moderately green.
    """
    lab = land.labels
    crop_v = 0.05 + 0.9 * np.exp(-(((season - land.crop_peak) / 0.2) ** 2))
    v = crop_v.astype(np.float32)[land.parcels]
    v = np.where(harvested(land, season), 0.03, v)
    grass_v = np.clip(0.55 + 0.12 * np.sin(2 * np.pi * season) + 0.12 * land.texture, 0.2, 0.9)
    v = np.where(lab == GRASSLAND, grass_v, v)
    v = np.where(lab == FOREST, 0.9, v)
    v = np.where(lab == BUILT, np.clip(0.15 + 0.15 * land.texture, 0.0, 0.5), v)
    v = np.where((lab == WATER) | (lab == BARREN), 0.0, v)
    return v.astype(np.float32)


# --------------------------------------------------------------------------------------------
# optical


def render_optical(land: Landscape, season: float, rng: np.random.Generator) -> np.ndarray:
    """Cloud-free, atmosphere-free S2 surface reflectance [12, H, W] float32 of a landscape at ``season``."""
    lab = land.labels
    h, w = lab.shape
    v = greenness(land, season)
    sub = land.material if land.material is not None else np.full(lab.shape, 0.5, np.float32)
    frac = np.zeros((EM.shape[0], h, w), np.float32)
    idx = EM_INDEX
    pix_noise = 0.05 * rng.standard_normal((h, w), dtype=np.float32)

    # cropland: green crop over soil with a little residue; a harvested parcel is straw over soil
    crop = lab == CROPLAND
    cut = harvested(land, season)[crop]
    frac[idx["green"]][crop] = v[crop]
    frac[idx["dry"]][crop] = np.where(cut, 0.5, 0.15 * (1 - v[crop]))
    frac[idx["soil"]][crop] = np.where(cut, 0.5, 0.85 * (1 - v[crop]))
    # grassland: green + dry grass + some soil, heterogeneous
    g = lab == GRASSLAND
    frac[idx["green"]][g] = v[g]
    frac[idx["dry"]][g] = 0.75 * (1 - v[g])
    frac[idx["soil"]][g] = 0.25 * (1 - v[g])
    # forest: broadleaf and needleleaf canopy (share from the material field) with green understory
    f = lab == FOREST
    cf = np.clip(0.8 + 0.1 * land.texture[f], 0.6, 1.0)
    conifer = np.clip(1.6 * sub[f] - 0.5, 0.0, 1.0)
    frac[idx["broadleaf"]][f] = cf * (1 - conifer)
    frac[idx["conifer"]][f] = cf * conifer
    frac[idx["green"]][f] = 1 - cf
    # barren: soil or sand/rock with sparse dry vegetation
    b = lab == BARREN
    dv = np.clip(0.12 + 0.1 * land.texture[b], 0.0, 0.4)
    sand = np.clip(1.5 * sub[b] - 0.45, 0.0, 1.0)
    frac[idx["soil"]][b] = (1 - dv) * (1 - sand)
    frac[idx["sand"]][b] = (1 - dv) * sand
    frac[idx["dry"]][b] = dv
    # built-up: paved/concrete and tiled roofs, gardens, bright/dark materials via texture
    u = lab == BUILT
    mat = (1 - v[u]) * np.clip(1 + 0.35 * land.texture[u], 0.4, 1.8)
    roof = np.clip(sub[u] + 0.3 * land.texture[u] - 0.2, 0.0, 1.0)
    frac[idx["urban"]][u] = mat * (1 - roof)
    frac[idx["roof"]][u] = mat * roof
    frac[idx["green"]][u] = v[u]
    # water: clear to turbid
    wt = lab == WATER
    turb = np.clip(1.2 * sub[wt] - 0.3, 0.0, 0.9)
    frac[idx["water"]][wt] = 1 - turb
    frac[idx["turbid"]][wt] = turb

    gain = land.brightness * land.parcel_brightness[land.parcels] * (1 + pix_noise)
    frac *= np.where(wt, 1.0, gain).astype(np.float32)[None]
    # Sensor point-spread: neighbouring pixels mix a little (mixed pixels at parcel edges); blurring
    # the abundances instead of the 12 bands gives the same result (mixing is linear) at less cost.
    ndimage.gaussian_filter(frac, sigma=(0, 0.6, 0.6), truncate=2.0, output=frac)  # line-buffered: safe in place
    refl = np.tensordot(EM.T, frac, axes=(1, 0))  # [12, H, W]
    del frac
    # Band by band: per-band gain (spectral variability within a material) and sensor noise.
    for band in refl:
        band *= np.float32(1.0 + 0.04 * rng.standard_normal())
        band += 0.003 * rng.standard_normal(band.shape, dtype=np.float32)
    return np.clip(refl, 0.0001, 1.0, out=refl).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# clouds


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
        shadow = shift(opacity, dy, dx)
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
    clear: np.ndarray,
    clouds: CloudField,
    rng: np.random.Generator,
    *,
    in_place: bool = False,
    spectrum: np.ndarray | None = None,
    shadow_depth: float = 0.7,
) -> np.ndarray:
    """Composite clouds (top reflectance ``spectrum``, default :data:`CLOUD_SPECTRUM`) over shadowed ``clear``.

    Band by band, so a large scene needs one band of scratch memory; ``in_place`` overwrites
    ``clear`` (float32) instead of allocating the cloudy cube beside it. Shadows darken by up to
    ``shadow_depth``, a little less in the blue bands (diffuse skylight).
    """
    out = clear if in_place else np.empty(clear.shape, np.float32)
    top_spec = CLOUD_SPECTRUM if spectrum is None else spectrum
    tex = np.exp(0.08 * smooth_noise(rng, clouds.opacity.shape, 3.0))
    for b in range(clear.shape[0]):
        depth = shadow_depth * (0.8 if b < 3 else 1.0)
        dim = (1.0 - depth * clouds.shadow).astype(np.float32)
        # out = (1 - a) * shadowed + a * cloud top
        shadowed = np.multiply(clear[b], dim, out=out[b])
        top = top_spec[b] * tex
        top -= shadowed
        top *= clouds.opacity
        shadowed += top
    return out


def render_acquisition(
    land: Landscape,
    season: float,
    cloud_cover: float,
    seeds: tuple[int, ...],
    *,
    realistic: bool = True,
    keep_clear: bool = True,
) -> Acquisition:
    """Render one S2 acquisition of ``land``: surface, atmosphere, clouds, shadows and SCL.

    ``seeds`` seed independent streams for the surface, the clouds and the atmosphere, so for one
    ``seeds`` only the cloud threshold depends on ``cloud_cover`` (nested masks across covers).
    ``realistic=False`` renders an ideal product: no haze or cirrus, one cloud spectrum, an exact SCL.
    """
    r_surface, r_cloud, r_atm = (np.random.default_rng([*seeds, k]) for k in (1, 2, 3))
    clear = render_optical(land, season, r_surface)
    clouds = make_clouds(r_cloud, land.shape, cloud_cover)
    spectrum = cloud_spectrum(r_cloud) if realistic else None
    depth = float(r_cloud.uniform(0.5, 0.8)) if realistic else 0.7
    atm = make_atmosphere(r_atm, land.shape) if realistic else Atmosphere.clear(land.shape)
    observed = apply_atmosphere(clear, atm, in_place=not keep_clear)
    scl = scene_classification(land.labels, observed, clouds, atm, r_atm if realistic else None)
    optical = apply_clouds(observed, clouds, r_cloud, in_place=True, spectrum=spectrum, shadow_depth=depth)
    return Acquisition(optical=optical, clear=clear if keep_clear else None, scl=scl, clouds=clouds, atmosphere=atm)


def simulate_scene(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    cloud_cover: float = 0.3,
    *,
    season: float = 0.5,
    sar_season: float | None = None,
    sar_gap_days: float | None = None,
    parcel_size: float = 36.0,
    landscape: Landscape | None = None,
    realistic: bool = True,
) -> SimScene:
    """Simulate one S2 + S1 acquisition pair (SIMULATED DATA), entirely in memory.

    ``seed`` fixes the landscape, clouds, atmosphere, noise and speckle; ``cloud_cover`` is the
    fraction of pixels truly under cloud or shadow (``cloud_true``; the SCL-based ``cloud`` differs
    by the SCL's errors); ``season`` in [0, 1] sets crop greenness (crops peak at 0.3, 0.5, 0.7 or 0.9,
    one season unit is :data:`SEASON_DAYS` days). The S1 pass is ``sar_gap_days`` before or after the
    S2 date (default: drawn in 0-12 days, either orbit direction); ``sar_season`` sets its date on the
    crop calendar directly. ``realistic=False`` gives the ideal case: no haze, cirrus or SCL errors,
    S1 on the S2 date. Pass a precomputed ``landscape`` to render several acquisitions of one area.

    Guarantee relied on by the cloud sweep (``cloudlulc.evaluation``): for one ``seed`` and
    ``season``, everything but the cloud threshold is drawn independently of ``cloud_cover`` —
    same labels, clear reflectance, atmosphere, SAR and cloud field — so higher covers give nested masks.
    """
    if landscape is not None:
        land = landscape
    else:
        h, w = shape  # a list works too
        land = make_landscape(seed, (h, w), parcel_size=parcel_size)
    seeds = (seed, 0x5CE4E, int(round(season * 1000)))
    acq = render_acquisition(land, season, cloud_cover, seeds, realistic=realistic)
    assert acq.clear is not None
    r_sar = np.random.default_rng([*seeds, 4])
    gap = float(r_sar.uniform(0.0, MAX_SAR_GAP_DAYS)) if sar_gap_days is None else float(sar_gap_days)
    after = bool(r_sar.random() < 0.5)
    orbit = "ascending" if r_sar.random() < 0.5 else "descending"
    incidence = float(r_sar.uniform(30.0, 45.0))
    moisture = float(r_sar.normal(0.0, 1.0))
    if not realistic:
        gap, orbit, incidence, moisture = (0.0 if sar_gap_days is None else gap), "descending", 37.0, 0.0
    if sar_season is None:
        sar_season = season + (gap if after else -gap) / SEASON_DAYS
    sar = render_sar(land, sar_season, r_sar, orbit_state=orbit, incidence_deg=incidence, moisture_db=moisture)
    true_cloud = acq.clouds.cloud_mask | acq.clouds.shadow_mask
    return SimScene(
        labels=land.labels.copy(),
        optical=acq.optical,
        optical_clear=acq.clear,
        sar=sar,
        scl=acq.scl,
        cloud=cloud_from_scl(acq.scl),
        cloud_opacity=acq.clouds.opacity,
        seed=seed,
        season=season,
        cloud_true=true_cloud,
        sar_gap_days=gap,
        orbit_state=orbit,
        changed=harvested(land, season) != harvested(land, sar_season),
    )
