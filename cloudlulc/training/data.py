"""Training data: simulated patches, seeded augmentation, and batches made model-ready.

Datasets yield dicts: ``optical`` [12,H,W] float32 reflectance, ``sar`` [2,H,W] float32 dB,
``label`` [H,W] int64 (255 ignore), optionally ``cloud`` [H,W] uint8 (255 unknown),
``optical_clear`` [12,H,W] and ``cloud_fraction`` (scalar). :class:`SimulatedPatches` renders such
patches on the fly from :func:`cloudlulc.simulate.simulate_scene` (SIMULATED DATA).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cloudlulc.classes import NODATA
from cloudlulc.model.inputs import fill_nan, fill_values
from cloudlulc.training.config import ModalityDropout, SimulatedDataConfig

#: which input a run or an evaluation goes without ("sar": optical only, "optical": SAR only)
Missing = Literal["sar", "optical"]

SPATIAL_KEYS = ("optical", "sar", "label", "cloud", "optical_clear")


class SimulatedPatches(Dataset):
    """Seeded, on-the-fly simulated patches (SIMULATED DATA): patch ``i`` is always the same scene."""

    def __init__(self, config: SimulatedDataConfig | None = None, **kwargs: Any) -> None:
        self.config = config or SimulatedDataConfig(**kwargs)
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.config.n_patches

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        if index in self._cache:
            return self._cache[index]
        c = self.config
        per_scene = c.patches_per_scene if c.scene_size else 1
        scene_index, _ = divmod(index, per_scene)
        first = scene_index * per_scene
        # one render serves every patch of the scene: cut them all now, keep them if caching
        samples = dict(zip(range(first, min(first + per_scene, len(self))), self._render(scene_index)))
        if c.cache:
            self._cache.update(samples)
        return samples[index]

    def _render(self, scene_index: int) -> Iterator[dict[str, torch.Tensor]]:
        from cloudlulc.simulate import simulate_scene  # local: training works without the simulator for other datasets

        c = self.config
        rng = np.random.default_rng([c.seed, scene_index, 0xC10D])
        cover = float(rng.uniform(*c.cloud_cover))
        season = float(rng.uniform(*c.season))
        size = c.scene_size or c.patch_size
        scene = simulate_scene(
            seed=int(c.seed * 1_000_003 + scene_index), shape=(size, size), cloud_cover=cover, season=season
        )
        layers = {
            "optical": scene.optical,
            "sar": scene.sar,
            "label": scene.labels.astype(np.int64),
            "cloud": np.asarray(scene.cloud).astype(np.uint8),
        }
        if c.keep_clear:
            layers["optical_clear"] = scene.optical_clear
        per_scene = c.patches_per_scene if c.scene_size else 1
        for _ in range(per_scene):
            y0, x0 = rng.integers(0, size - c.patch_size + 1, 2) if c.scene_size else (0, 0)
            win = (slice(y0, y0 + c.patch_size), slice(x0, x0 + c.patch_size))
            sample = {
                name: torch.from_numpy(
                    np.ascontiguousarray(arr[(..., *win)], dtype=np.float32 if arr.dtype.kind == "f" else arr.dtype)
                )
                for name, arr in layers.items()
            }
            sample["cloud_fraction"] = torch.tensor(float(sample["cloud"].float().mean()), dtype=torch.float32)
            yield sample


def augment(sample: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random horizontal/vertical flip and rot90, identical for every spatial layer of ``sample``."""
    k, flip_h, flip_v = int(rng.integers(4)), bool(rng.integers(2)), bool(rng.integers(2))
    out = dict(sample)
    for key in SPATIAL_KEYS:
        if key not in out:
            continue
        x = out[key]
        if k:
            x = torch.rot90(x, k, dims=(-2, -1))
        if flip_h:
            x = torch.flip(x, dims=(-1,))
        if flip_v:
            x = torch.flip(x, dims=(-2,))
        out[key] = x.contiguous()
    return out


class Augmented(Dataset):
    """Wrap a dataset with seeded augmentation; call :meth:`set_epoch` so each epoch differs reproducibly."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return augment(self.dataset[index], np.random.default_rng([self.seed, self.epoch, index]))


def prepare_batch(batch: dict[str, torch.Tensor], model: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Move to ``device``; fill NaN inputs with the band means and ignore their labels.

    Returns the batch plus ``valid`` [B,H,W] (no NaN in any optical/SAR band).
    """
    opt_fill, sar_fill = fill_values(model)
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    out["optical"], bad_opt = fill_nan(out["optical"], opt_fill)
    out["sar"], bad_sar = fill_nan(out["sar"], sar_fill)
    valid = ~(bad_opt | bad_sar)
    if "optical_clear" in out:
        out["optical_clear"], bad_clear = fill_nan(out["optical_clear"], opt_fill)
        if bool(bad_clear.any()):
            out["clear_valid"] = ~bad_clear
    label = out["label"].long()
    out["label"] = torch.where(valid, label, torch.full_like(label, NODATA))
    out["valid"] = valid
    return out


def batch_cloud_fraction(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-patch cloud fraction: the dataset's value, else from the cloud mask, else 0."""
    b = batch["label"].shape[0]
    if "cloud_fraction" in batch:
        return batch["cloud_fraction"].float().reshape(b)
    if "cloud" in batch:
        cloud = batch["cloud"].float()
        known = (cloud <= 1).float()
        return ((cloud.clamp(max=1) * known).sum((1, 2)) / known.sum((1, 2)).clamp_min(1)).reshape(b)
    return torch.zeros(b)


def remove_modality(
    batch: dict[str, torch.Tensor], model: nn.Module, missing: Missing | None
) -> dict[str, torch.Tensor]:
    """A prepared batch with one input removed exactly as inference sees it: all bands at the model's
    fill (its band means, what :func:`~cloudlulc.model.inputs.fill_nan` puts for NaN). Labels stay valid.

    ``batch["optical_missing"]`` and ``batch["sar_missing"]`` [B,H,W] mark pixels without optical data
    and without radar (what the inference calibration keys on); without optical, the cloud mask says
    "unreliable" everywhere.
    """
    out = dict(batch)
    optical_missing = torch.zeros_like(batch["label"], dtype=torch.bool)
    sar_missing = torch.zeros_like(batch["label"], dtype=torch.bool)
    if missing is not None:
        opt_fill, sar_fill = fill_values(model)
        key, fills = ("sar", sar_fill) if missing == "sar" else ("optical", opt_fill)
        out[key] = (
            torch.as_tensor(fills, dtype=batch[key].dtype, device=batch[key].device)
            .reshape(1, -1, 1, 1)
            .expand_as(batch[key])
            .clone()
        )
        if missing == "optical":
            optical_missing[:] = True
            if "cloud" in out:
                out["cloud"] = torch.where(out["cloud"] <= 1, torch.ones_like(out["cloud"]), out["cloud"])
        else:
            sar_missing[:] = True
    out["optical_missing"] = optical_missing
    out["sar_missing"] = sar_missing
    return out


def drop_modalities(
    batch: dict[str, torch.Tensor], model: nn.Module, rates: ModalityDropout, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Modality dropout on a prepared batch: per patch, drop the SAR, the optical, or the optical over
    part of the patch (a swath or tile edge), or (on nearly clear patches) swap in the SAR of another
    patch, at ``rates``; never both inputs. Labels stay valid, so the network learns to map from what
    is left; dropped optical counts as cloud for the ORM loss.
    """
    b = batch["label"].shape[0]
    if b == 0 or not (rates.sar or rates.optical or rates.partial_optical or rates.sar_mismatch):
        out = dict(batch)
        out["optical_missing"] = torch.zeros_like(batch["label"], dtype=torch.bool)
        out["sar_missing"] = torch.zeros_like(batch["label"], dtype=torch.bool)
        return out
    u = torch.rand(b, generator=generator)
    rate = [rates.sar, rates.optical, rates.partial_optical, rates.sar_mismatch]
    edges = torch.tensor(rate).cumsum(0)
    kind = torch.bucketize(u, edges, right=True)  # 0 sar, 1 optical, 2 partial, 3 mismatch, 4 keep
    opt_fill, sar_fill = fill_values(model)
    dev = batch["optical"].device
    h, w = batch["label"].shape[-2:]
    missing = torch.zeros((b, h, w), dtype=torch.bool, device=dev)
    for i in range(b):
        if kind[i] == 2:  # a straight edge across the patch, at a random angle and offset
            ang = float(torch.rand(1, generator=generator)) * 2 * torch.pi
            off = float(torch.rand(1, generator=generator)) * 0.8 - 0.4
            yy = torch.linspace(-0.5, 0.5, h, device=dev)[:, None]
            xx = torch.linspace(-0.5, 0.5, w, device=dev)[None, :]
            missing[i] = (yy * torch.sin(torch.tensor(ang)) + xx * torch.cos(torch.tensor(ang))) > off
        elif kind[i] == 1:
            missing[i] = True
    out = dict(batch)
    opt = torch.as_tensor(opt_fill, dtype=batch["optical"].dtype, device=dev).reshape(1, -1, 1, 1)
    out["optical"] = torch.where(missing[:, None], opt, batch["optical"])
    no_sar = (kind == 0).to(dev)[:, None, None, None]
    sar = torch.as_tensor(sar_fill, dtype=batch["sar"].dtype, device=dev).reshape(1, -1, 1, 1)
    out["sar"] = torch.where(no_sar, sar, batch["sar"])
    if b > 1 and rates.sar_mismatch:
        clear = batch_cloud_fraction(batch).to(dev) < 0.1
        swap = ((kind == 3).to(dev) & clear)[:, None, None, None]
        out["sar"] = torch.where(swap, torch.roll(batch["sar"], 1, dims=0), out["sar"])
    if "cloud" in batch:
        cloud = batch["cloud"]
        out["cloud"] = torch.where(missing & (cloud <= 1), torch.ones_like(cloud), cloud)
    out["optical_missing"] = missing
    out["sar_missing"] = no_sar[:, 0].expand(-1, h, w)
    return out
