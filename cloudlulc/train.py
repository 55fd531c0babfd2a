"""Config-driven training for CloudLULC-Net and the baselines.

One loop for every model in :mod:`cloudlulc.model` (they all return :class:`ModelOutput`):

* loss = CE(logits, label, ignore 255)
  + ``anchor_weight`` x semantic anchor loss (CloudLULC-Net: latent vs EMA class anchors)
  + ``reliability_weight`` x ORM BCE against 1 - cloud (only where the batch carries ``cloud``)
  + ``reconstruction_weight`` x L1 of the reconstruction-first baseline against ``optical_clear``;
* AdamW, linear warm-up then cosine decay (per step), gradient clipping, AMP on CUDA only;
* flips / rot90 augmentation applied identically to optical, SAR, label and masks;
* NaN inputs (nodata) are filled with the per-band normalisation mean and their labels set to 255;
* checkpoints at every epoch end: ``last.safetensors`` + ``last.json`` (a loadable weights file, see
  :mod:`cloudlulc.model.io`) and ``last-trainer.pt`` (optimizer / scheduler / scaler / RNG state,
  tensors and plain containers only, read back with ``torch.load(weights_only=True)``); ``resume``
  continues from there; metrics per epoch go to ``metrics.jsonl``.

Datasets yield dicts: ``optical`` [12,H,W] float32 reflectance, ``sar`` [2,H,W] float32 dB, ``label``
[H,W] int64 (255 ignore), optionally ``cloud`` [H,W] uint8 (255 unknown), ``optical_clear``
[12,H,W] and ``cloud_fraction`` (scalar). :class:`SimulatedPatches` renders such patches on the fly
from :func:`cloudlulc.simulate.simulate_scene` (SIMULATED DATA).

CLI: ``python -m cloudlulc.train --config train.json`` (a JSON :class:`TrainConfig`) or
``python -m cloudlulc.train --model cloudlulc-net-tiny --epochs 2 --out-dir runs/x``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cloudlulc.classes import NODATA
from cloudlulc.metrics import ConfusionMatrix
from cloudlulc.model.io import save_pretrained
from cloudlulc.model.orm import reliability_loss
from cloudlulc.model.registry import build_model

SPATIAL_KEYS = ("optical", "sar", "label", "cloud", "optical_clear")


# --------------------------------------------------------------------------------------------
# configuration


class SimulatedDataConfig(BaseModel):
    """Patches rendered by :func:`cloudlulc.simulate.simulate_scene` (SIMULATED DATA)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["simulated"] = "simulated"
    n_patches: int = 256
    patch_size: int = 128
    #: cloud cover drawn uniformly from this range per patch
    cloud_cover: tuple[float, float] = (0.0, 0.9)
    #: crop season drawn uniformly from this range per patch
    season: tuple[float, float] = (0.2, 0.9)
    seed: int = 0
    #: render scenes this large and cut ``patches_per_scene`` patches from each, so patches carry the
    #: landscape statistics of a real tile (large forests, lakes, towns) instead of a whole miniature
    #: landscape squeezed into one patch; None = every patch is its own scene of ``patch_size``
    scene_size: int | None = Field(None, ge=8)
    patches_per_scene: int = Field(1, ge=1)
    #: keep rendered patches in memory (rendering is cheap but not free on a busy CPU)
    cache: bool = True

    @model_validator(mode="after")
    def _scene_holds_patch(self) -> SimulatedDataConfig:
        if self.scene_size is not None and self.scene_size < self.patch_size:
            raise ValueError(f"scene_size {self.scene_size} is smaller than patch_size {self.patch_size}")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = "cloudlulc-net-tiny"
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    train_data: SimulatedDataConfig = Field(default_factory=SimulatedDataConfig)
    val_data: SimulatedDataConfig | None = None
    epochs: int = Field(1, ge=1)
    #: optimiser steps per epoch; None = one pass over the training set
    steps_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.02, ge=0, le=1)
    #: max gradient norm; 0 = no clipping
    grad_clip: float = Field(1.0, ge=0)
    anchor_weight: float = Field(0.2, ge=0)
    reliability_weight: float = Field(0.3, ge=0)
    reconstruction_weight: float = Field(1.0, ge=0)
    augment: bool = True
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    num_workers: int = 0
    out_dir: Path = Path("runs/cloudlulc")
    resume: bool = False
    progress: bool = True
    #: free-text description of the training data stored with the weights
    data_description: str | None = None


# --------------------------------------------------------------------------------------------
# data


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
        samples = {i: s for i, s in zip(range(first, min(first + per_scene, len(self))), self._render(scene_index))}
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
            "optical_clear": scene.optical_clear,
        }
        per_scene = c.patches_per_scene if c.scene_size else 1
        for k in range(per_scene):
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
    cfg = model.config
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    valid = torch.ones(out["label"].shape, dtype=torch.bool, device=device)
    for key, mean in (("optical", cfg.optical_mean), ("sar", cfg.sar_mean)):
        x = out[key].float()
        nan = torch.isnan(x)
        if bool(nan.any()):
            fill = torch.tensor(mean, dtype=x.dtype, device=device).view(1, -1, 1, 1).expand_as(x)
            x = torch.where(nan, fill, x)
            valid &= ~nan.any(1)
        out[key] = x
    if "optical_clear" in out:
        clear = out["optical_clear"].float()
        nan = torch.isnan(clear)
        if bool(nan.any()):
            fill = torch.tensor(cfg.optical_mean, dtype=clear.dtype, device=device).view(1, -1, 1, 1).expand_as(clear)
            out["optical_clear"] = torch.where(nan, fill, clear)
            out["clear_valid"] = ~nan.any(1)
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


# --------------------------------------------------------------------------------------------
# loss


def compute_loss(
    model: nn.Module, out: Any, batch: dict[str, torch.Tensor], cfg: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total training loss and its parts (see module docstring)."""
    label = batch["label"]
    ce = F.cross_entropy(out.logits.float(), label, ignore_index=NODATA)
    if not torch.isfinite(ce):  # an all-ignore batch
        ce = out.logits.sum() * 0.0
    total, parts = ce, {"ce": float(ce.detach())}
    anchors = getattr(model, "anchors", None)
    if anchors is not None and out.latent is not None and cfg.anchor_weight > 0:
        la = anchors(out.latent, label)
        total = total + cfg.anchor_weight * la
        parts["anchor"] = float(la.detach())
    if out.reliability_pyramid and "cloud" in batch and cfg.reliability_weight > 0:
        lr_ = reliability_loss(out.reliability_pyramid, batch["cloud"], batch.get("valid"))
        total = total + cfg.reliability_weight * lr_
        parts["reliability"] = float(lr_.detach())
    if out.reconstruction is not None and "optical_clear" in batch and cfg.reconstruction_weight > 0:
        target = model.norm_optical(batch["optical_clear"])
        err = (out.reconstruction.float() - target).abs().mean(1)
        mask = batch.get("clear_valid", batch["valid"]).float()
        l1 = (err * mask).sum() / mask.sum().clamp_min(1)
        total = total + cfg.reconstruction_weight * l1
        parts["reconstruction"] = float(l1.detach())
    parts["total"] = float(total.detach())
    return total, parts


# --------------------------------------------------------------------------------------------
# loop


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    weights_path: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cosine_with_warmup(warmup: int, total: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    amp: bool = False,
) -> dict[str, Any]:
    """Stratified metrics (:class:`cloudlulc.metrics.ConfusionMatrix`) of ``model`` on a dataset."""
    device = torch.device(device) if not isinstance(device, torch.device) else device
    loader = (
        dataset_or_loader
        if isinstance(dataset_or_loader, DataLoader)
        else DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=False)
    )
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes=model.config.num_classes, class_names=model.config.class_names)
    for raw in loader:
        batch = prepare_batch(raw, model, device)
        with torch.autocast(device_type="cuda", enabled=amp and device.type == "cuda"):
            out = model(batch["optical"], batch["sar"])
        pred = out.logits.argmax(1)
        cm.update(pred, batch["label"], batch_cloud_fraction(batch).cpu())
    model.train(was_training)
    return cm.compute()


def _trainer_state_path(out_dir: Path) -> Path:
    return out_dir / "last-trainer.pt"


def train(cfg: TrainConfig, train_dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> TrainResult:
    """Train ``cfg.model``; datasets default to the simulated ones described in ``cfg``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg.model, **cfg.model_overrides).to(device)
    train_dataset = train_dataset if train_dataset is not None else SimulatedPatches(cfg.train_data)
    if val_dataset is None and cfg.val_data is not None:
        val_dataset = SimulatedPatches(cfg.val_data)
    data = Augmented(train_dataset, seed=cfg.seed) if cfg.augment else train_dataset
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_dataset) // cfg.batch_size)  # type: ignore[arg-type]
    total_steps = cfg.epochs * steps_per_epoch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, step, history = 0, 0, []
    state_path = _trainer_state_path(out_dir)
    if cfg.resume and state_path.exists():
        model.load_state_dict(load_file(str(out_dir / "last.safetensors"), device=str(device)))
        state = torch.load(state_path, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        history = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]

    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        if isinstance(data, Augmented):
            data.set_epoch(epoch)
        loader = DataLoader(
            data,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(data) >= cfg.batch_size,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch),
        )
        sums: dict[str, float] = {}
        n, t0 = 0, time.perf_counter()
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
        )
        it = iter(loader)
        for _ in range(steps_per_epoch):
            try:
                raw = next(it)
            except StopIteration:
                it = iter(loader)
                raw = next(it)
            batch = prepare_batch(raw, model, device)
            with torch.autocast(device_type="cuda", enabled=use_amp):
                out = model(batch["optical"], batch["sar"])
            loss, parts = compute_loss(model, out, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            n += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['total']:.3f}")
            bar.update()
        bar.close()
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
            "train": {k: v / max(n, 1) for k, v in sums.items()},
        }
        if val_dataset is not None:
            record["val"] = evaluate_model(model, val_dataset, device=device, batch_size=cfg.batch_size, amp=use_amp)
        history.append(record)
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        _save_checkpoint(model, optimizer, scheduler, scaler, epoch, step, cfg, out_dir, record)
    return TrainResult(model=model, history=history, out_dir=out_dir, weights_path=out_dir / "last.safetensors")


def _save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    epoch: int,
    step: int,
    cfg: TrainConfig,
    out_dir: Path,
    record: dict[str, Any],
) -> None:
    """Weights as a loadable safetensors + JSON pair; optimizer/scheduler state as plain tensors."""
    metrics = record.get("val")
    save_pretrained(
        model,
        out_dir / "last",
        {
            "training_data": cfg.data_description or cfg.train_data.model_dump(mode="json"),
            "metrics": metrics,
            "train_config": cfg.model_dump(mode="json"),
            "epoch": epoch,
            "step": step,
        },
    )
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "step": step,
        },
        _trainer_state_path(out_dir),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a CloudLULC model (default data: SIMULATED patches)")
    ap.add_argument("--config", type=Path, help="JSON file holding a TrainConfig")
    ap.add_argument("--model", help="registry name, e.g. cloudlulc-net-tiny")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--steps-per-epoch", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    data = json.loads(args.config.read_text()) if args.config else {}
    for key in ("model", "epochs", "steps_per_epoch", "batch_size", "out_dir", "device", "threads"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.resume:
        data["resume"] = True
    cfg = TrainConfig.model_validate(data)
    result = train(cfg)
    print(
        json.dumps(
            {"out_dir": str(result.out_dir), "last": result.history[-1] if result.history else None}, default=str
        )[:2000]
    )


if __name__ == "__main__":
    main()
