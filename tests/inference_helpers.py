"""Real (small) torch models and lazy cubes that follow the project contracts, for the inference,
mosaic and export tests. Nothing here is a mock: the models are trainable torch modules obeying the
``model(optical, sar) -> ModelOutput`` contract, and the cubes are dask-backed xarray Datasets with
the schema of :func:`cloudlulc.cube.build_cube` (CRS written with rioxarray).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from cloudlulc.classes import NUM_CLASSES, S1_BANDS, S2_BANDS
from cloudlulc.model.config import S1_MEAN, S1_STD, S2_MEAN, S2_STD
from cloudlulc.model.outputs import ModelOutput


class ContextNet(nn.Module):
    """A small fusion CNN with spatial context (3x3 convs at two scales) and stride 4.

    Its receptive field crosses tile borders, so blending and tile placement matter; it normalises
    its physical-unit inputs with constants in ``config`` like CloudLULC-Net and refuses NaN.
    """

    stride = 4

    def __init__(self, seed: int = 5, width: int = 8) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            name="context-net-test", optical_mean=S2_MEAN, sar_mean=S1_MEAN, optical_std=S2_STD, sar_std=S1_STD
        )
        self.register_buffer("o_mean", torch.tensor(S2_MEAN).view(1, -1, 1, 1))
        self.register_buffer("o_std", torch.tensor(S2_STD).view(1, -1, 1, 1))
        self.register_buffer("s_mean", torch.tensor(S1_MEAN).view(1, -1, 1, 1))
        self.register_buffer("s_std", torch.tensor(S1_STD).view(1, -1, 1, 1))
        g = torch.Generator().manual_seed(seed)
        self.enc = nn.Conv2d(len(S2_BANDS) + len(S1_BANDS), width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(2 * width, NUM_CLASSES, 1)
        self.rel = nn.Conv2d(len(S2_BANDS), 1, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.head.bias.zero_()  # no class dominates by its bias: varied maps test blending better

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        if not (torch.isfinite(optical).all() and torch.isfinite(sar).all()):
            raise ValueError("ContextNet needs finite inputs (the inference must fill NaN)")
        h, w = optical.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"input {h}x{w} not divisible by stride {self.stride}")
        o = (optical - self.o_mean) / self.o_std
        s = (sar - self.s_mean) / self.s_std
        f = torch.relu(self.enc(torch.cat([o, s], 1)))
        coarse = F.avg_pool2d(f, self.stride)
        coarse = torch.relu(self.mid(coarse))
        up = F.interpolate(coarse, scale_factor=self.stride, mode="nearest")
        logits = self.head(torch.cat([f, up], 1)) * 0.5
        return ModelOutput(logits=logits, reliability=torch.sigmoid(self.rel(o)))


class PointwiseNet(nn.Module):
    """1x1 convolutions only: tiling cannot change its output, so blended tiles must equal one forward."""

    stride = 1

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Conv2d(len(S2_BANDS) + len(S1_BANDS), 16, 1)
        self.b = nn.Conv2d(16, NUM_CLASSES, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        x = torch.cat([optical * 10, sar / 10], 1)
        logits = self.b(torch.tanh(self.a(x)))
        return ModelOutput(logits=logits, reliability=torch.sigmoid(optical.mean(1, keepdim=True) * 5))


#: forward-call counters of CountingNet instances, by name (process-wide: the inference runs a private
#: device copy of the model, so the count cannot live on the instance the test holds)
CALLS: dict[str, int] = {}
_CALLS_LOCK = threading.Lock()


class CountingNet(ContextNet):
    """ContextNet that counts its forward calls in ``CALLS[name]`` and raises once it has made
    ``fail_after`` of them: a real model crashing part-way through a run."""

    def __init__(self, name: str, seed: int = 5, fail_after: int | None = None) -> None:
        super().__init__(seed)
        self.name = name
        self.fail_after = fail_after
        CALLS[name] = 0

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        with _CALLS_LOCK:
            CALLS[self.name] += 1
            n = CALLS[self.name]
        if self.fail_after is not None and n > self.fail_after:
            raise RuntimeError(f"simulated crash at forward call {n}")
        return super().forward(optical, sar)


#: forwards running right now and the most seen at once, per ConcurrencyNet name
ACTIVE: dict[str, int] = {}
PEAK: dict[str, int] = {}


class ConcurrencyNet(CountingNet):
    """CountingNet that records in ``PEAK[name]`` how many of its forwards ever ran at the same time
    (module-level counters: a Dask cluster pickles the model, even in-process)."""

    def __init__(self, name: str, seed: int = 5) -> None:
        super().__init__(name, seed)
        ACTIVE[name] = PEAK[name] = 0

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        with _CALLS_LOCK:
            ACTIVE[self.name] += 1
            PEAK[self.name] = max(PEAK[self.name], ACTIVE[self.name])
        try:
            return super().forward(optical, sar)
        finally:
            with _CALLS_LOCK:
                ACTIVE[self.name] -= 1


def random_scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spatially smooth reflectance [12,h,w], SAR dB [2,h,w] and a cloud mask {0,1} [h,w]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(yy / (7 + b) + b) * np.cos(xx / (11 + 2 * b)) for b in range(len(S2_BANDS))])
    optical = (0.15 + 0.1 * base + 0.02 * rng.standard_normal((len(S2_BANDS), h, w))).astype(np.float32)
    sar = np.stack([-11 + 3 * np.sin(xx / 9 + yy / 13), -18 + 3 * np.cos(yy / 8)]).astype(np.float32)
    sar += rng.standard_normal(sar.shape).astype(np.float32)
    cloud = (np.sin(xx / 15) * np.cos(yy / 12) > 0.5).astype(np.uint8)
    return optical, sar, cloud


def make_cube(
    optical: np.ndarray,
    sar: np.ndarray,
    cloud: np.ndarray,
    chunks: int | tuple[int, int],
    *,
    epsg: int = 32633,
    x0: float = 500000.0,
    y0: float = 4500000.0,
    res: float = 10.0,
) -> xr.Dataset:
    """A dask-backed cube with the build_cube schema on a 10 m UTM grid."""
    h, w = optical.shape[1:]
    cy, cx = (chunks, chunks) if isinstance(chunks, int) else chunks
    x = x0 + res / 2 + res * np.arange(w)
    y = y0 - res / 2 - res * np.arange(h)
    ds = xr.Dataset(
        {
            "optical": (("band", "y", "x"), da.from_array(optical, chunks=(1, cy, cx))),
            "sar": (("sar_band", "y", "x"), da.from_array(sar, chunks=(1, cy, cx))),
            "cloud": (("y", "x"), da.from_array(cloud, chunks=(cy, cx))),
        },
        coords={"x": x, "y": y, "time": np.datetime64("2024-04-19T10:06:31", "ns")},
    )
    ds = ds.assign_coords(band=("band", list(S2_BANDS)), sar_band=("sar_band", list(S1_BANDS)))
    return ds.rio.write_crs(epsg)


def assert_matches_reference(products: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Chunked products equal one-shot products (``predict_arrays`` with probabilities) up to the float
    summation order of the blending: same class wherever the top two probabilities are not a tie,
    confidence and reliability within one percent (rounding of 100 * p at x.5)."""
    probs = ref["probabilities"]
    top2 = np.sort(probs, axis=0)[-2:]
    decisive = (top2[1] - top2[0]) > 1e-4
    lulc = products["lulc"]
    assert np.array_equal(lulc[decisive], ref["lulc"][decisive])
    assert (lulc != ref["lulc"]).sum() <= (~decisive).sum()
    for name in ("confidence", "optical_reliability"):
        diff = np.abs(products[name].astype(int) - ref[name].astype(int))
        assert diff.max() <= 1, name
