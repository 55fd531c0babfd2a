"""The training loop: AdamW, warm-up then cosine decay, gradient clipping, AMP on CUDA, checkpoints.

Checkpoints at every epoch end: ``last.safetensors`` + ``last.json`` (a loadable weights file, see
:mod:`cloudlulc.model.io`) and ``last-trainer.pt`` (optimizer / scheduler / scaler / RNG state,
tensors and plain containers only, read back with ``torch.load(weights_only=True)``); ``resume``
continues from there; metrics per epoch go to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cloudlulc.inference.device import resolve_device
from cloudlulc.model.io import save_pretrained
from cloudlulc.model.registry import build_model
from cloudlulc.training.config import TrainConfig
from cloudlulc.training.data import Augmented, SimulatedPatches, batch_cloud_fraction, prepare_batch
from cloudlulc.training.loss import compute_loss
from cloudlulc.training.metrics import ConfusionMatrix


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
    """Stratified metrics (:class:`cloudlulc.training.metrics.ConfusionMatrix`) of ``model`` on a dataset."""
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
