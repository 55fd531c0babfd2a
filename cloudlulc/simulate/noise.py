"""Smooth random fields for the simulator: Gaussian-filtered noise, fractal sums, shifts (SIMULATED DATA)."""

from __future__ import annotations

import numpy as np
import scipy.fft


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


def shift(a: np.ndarray, dy: int, dx: int, fill: float = 0) -> np.ndarray:
    """Shift an array by (dy, dx) pixels without wrap-around."""
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out
