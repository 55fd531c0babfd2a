"""The training loop: one process or many (``torchrun``), resumable at any checkpointed step.

AdamW, warm-up then cosine decay, gradient clipping, gradient accumulation, float16 autocast with a
GradScaler on CUDA. Under ``torchrun`` every process trains a DistributedDataParallel copy on its
shard of each global batch (:mod:`~cloudlulc.training.sampler`); only rank 0 writes.

Why runs are reproducible and resumable bit for bit: the data order is a function of (seed, epoch,
step), each step reseeds torch from (seed, rank, step) before its forward, the loss is normalised by
global counts (:mod:`~cloudlulc.training.loss`), and a checkpoint stores the model, optimiser,
scheduler, scaler, RNG states and the data position (:mod:`~cloudlulc.training.checkpoint`).

Outputs in ``out_dir``: ``last.safetensors``/``.json`` (every checkpoint), ``best.*`` (best validation
score), ``last-trainer.pt`` (the resume point) and the logs of :mod:`~cloudlulc.training.progress`.
With validation data, ``best`` and ``last`` get their confidence calibration fitted at the end
(:mod:`~cloudlulc.training.calibrate`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cloudlulc.classes import NODATA
from cloudlulc.model.io import from_pretrained, read_metadata
from cloudlulc.model.registry import build_model
from cloudlulc.training import checkpoint as ckpt
from cloudlulc.training.calibrate import calibration_summary, fit_calibration
from cloudlulc.training.config import TrainConfig
from cloudlulc.training.data import Augmented, drop_modalities, prepare_batch
from cloudlulc.training.distributed import DistContext, setup, teardown
from cloudlulc.training.loss import compute_loss
from cloudlulc.training.progress import EPOCH_JSONL, RunLog, read_jsonl
from cloudlulc.training.sampler import ShardedBatchSampler, split_batch
from cloudlulc.training.sources import data_fingerprint, open_dataset
from cloudlulc.training.validation import evaluate_model

__all__ = ["TrainResult", "class_weights_of", "cosine_with_warmup", "evaluate_model", "seed_everything", "train"]

#: sidecar entries :func:`~cloudlulc.model.io.save_pretrained` writes itself (not metadata to pass back)
_GENERATED = frozenset(
    {
        "format_version",
        "architecture",
        "name",
        "config",
        "classes",
        "s2_bands",
        "s1_bands",
        "normalisation",
        "stride",
        "n_parameters",
        "calibration",
        "created",
        "weights_file",
        "sha256",
    }
)


@dataclass
class TrainResult:
    model: nn.Module
    #: the per-epoch records of ``metrics.jsonl`` (on ranks > 0: only those of this session)
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    weights_path: Path | None = None
    #: ``best.safetensors`` when validation data was given and scored
    best_path: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one optimiser step on one rank (dropout and any other torch randomness)."""
    digest = hashlib.sha256(f"cloudlulc-train:{seed}:{rank}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def class_weights_of(
    cfg: TrainConfig, dataset: Dataset, num_classes: int, max_samples: int = 64
) -> torch.Tensor | None:
    """Cross-entropy weights of ``cfg.class_weights``; "inverse_sqrt" from the class frequencies of up
    to ``max_samples`` evenly spaced training patches, scaled so the mean weight per pixel is 1."""
    if cfg.class_weights == "none":
        return None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(cfg.class_weights)} values for {num_classes} classes")
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    n = len(dataset)  # type: ignore[arg-type]
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in np.linspace(0, n - 1, min(n, max_samples)).round().astype(int):
        label = torch.as_tensor(dataset[int(i)]["label"]).reshape(-1)
        label = label[(label != NODATA) & (label >= 0) & (label < num_classes)]
        counts += torch.bincount(label.long(), minlength=num_classes).double()
    freq = counts / counts.sum().clamp_min(1)
    w = torch.where(freq > 0, freq.clamp_min(1e-4) ** -0.5, torch.zeros_like(freq))
    return (w / (w * freq).sum().clamp_min(1e-12)).float()


def cosine_with_warmup(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@dataclass
class _Position:
    """Where the run stands: the resume point a checkpoint stores."""

    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    best_score: float | None = None
    best_step: int | None = None


def train(
    cfg: TrainConfig,
    train_dataset: Dataset | None = None,
    val_dataset: Dataset | None = None,
    *,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model``; datasets default to the ones ``cfg.train_data``/``cfg.val_data`` describe.

    Under ``torchrun`` the process group is joined here (and left at the end). ``on_step(step)`` is
    called after each optimiser step and its checkpoint, e.g. to stop a run from a test.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = setup(cfg.device)
    ok = False
    try:
        result = _Trainer(cfg, ctx, train_dataset, val_dataset).run(on_step)
        ok = True
        return result
    finally:
        if ok:
            teardown(ctx)
        elif ctx.owns_group:  # a failed rank: leave without a barrier the others may never reach
            torch.distributed.destroy_process_group()


class _Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistContext, train_dataset: Dataset | None, val_dataset: Dataset | None):
        self.cfg, self.ctx = cfg, ctx
        seed_everything(cfg.seed)
        self.device = ctx.device
        self.out_dir = Path(cfg.out_dir)
        if ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.out_dir)
        self.net = build_model(cfg.model, **cfg.model_overrides).to(self.device)
        self.fingerprint = data_fingerprint(cfg.train_data) if train_dataset is None else None
        self.train_dataset = train_dataset if train_dataset is not None else open_dataset(cfg.train_data)
        if val_dataset is None and cfg.val_data is not None:
            val_dataset = open_dataset(cfg.val_data)
        self.val_dataset = val_dataset
        self.data = Augmented(self.train_dataset, seed=cfg.seed) if cfg.augment else self.train_dataset
        self.per_rank = split_batch(cfg.batch_size, ctx.world_size, cfg.accumulate_steps)
        self.n_train = len(self.train_dataset)  # type: ignore[arg-type]
        self.steps_per_epoch = cfg.steps_per_epoch or max(1, self.n_train // cfg.batch_size)
        self.class_weights = class_weights_of(cfg, self.train_dataset, int(self.net.config.num_classes))  # type: ignore[union-attr,arg-type]

        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        total = cfg.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(cfg.warmup_steps, total, cfg.min_lr_ratio)
        )
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.log = RunLog(self.out_dir, enabled=ctx.is_main, tensorboard=cfg.tensorboard)
        self.pos = _Position()
        self.history: list[dict[str, Any]] = []
        self.last_meta: dict[str, Any] = {}
        if cfg.resume and ckpt.state_path(self.out_dir).exists():
            self._resume()
        else:
            self.log.restart(0)
        # DDP copies rank 0's weights to every rank here, after a resume has loaded them everywhere
        self.model: nn.Module = self.net
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)

    # -- resume -----------------------------------------------------------------------------------
    def _resume(self) -> None:
        cfg, state = self.cfg, ckpt.load_state(self.out_dir)
        if state["data_fingerprint"] != self.fingerprint:
            raise ValueError(
                f"{ckpt.state_path(self.out_dir)} was trained on other data (fingerprint "
                f"{str(state['data_fingerprint'])[:12]} != {str(self.fingerprint)[:12]}); resume with the same "
                "train_data, or train into a new out_dir"
            )
        if state["batch_size"] != cfg.batch_size:
            raise ValueError(
                f"{ckpt.state_path(self.out_dir)} was trained with batch_size {state['batch_size']}, not "
                f"{cfg.batch_size}; the data position counts global batches: resume with the same batch_size"
            )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng(state["rng"])
        p = state["position"]
        self.pos = _Position(
            epoch=int(p["epoch"]),
            epoch_step=int(p["epoch_step"]),
            step=int(state["step"]),
            sums={k: float(v) for k, v in p["sums"].items()},
            best_score=p["best_score"],
            best_step=p["best_step"],
        )
        if self.pos.epoch_step >= self.steps_per_epoch:  # a finished epoch: start the next one
            self.pos.epoch, self.pos.epoch_step, self.pos.sums = self.pos.epoch + 1, 0, {}
        self.last_meta = json.loads(state["last_metadata"])
        self.log.restart(self.pos.step)
        if self.ctx.is_main:
            self.history = read_jsonl(self.out_dir / EPOCH_JSONL)
            ckpt.publish_weights(self.net, self.out_dir, "last", self.last_meta)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, on_step: Callable[[int], None] | None) -> TrainResult:
        cfg = self.cfg
        self.model.train()
        for epoch in range(self.pos.epoch, cfg.epochs):
            self.pos.epoch = epoch
            self._epoch(epoch, on_step)
            self.pos.epoch_step, self.pos.sums = 0, {}
        if cfg.calibrate and self.val_dataset is not None and self.ctx.is_main:
            self._calibrate()
        self.log.close()
        best = self.out_dir / "best.safetensors"
        return TrainResult(
            model=self.net,
            history=self.history,
            out_dir=self.out_dir,
            weights_path=self.out_dir / "last.safetensors",
            best_path=best if self.pos.best_step is not None else None,
        )

    def _epoch(self, epoch: int, on_step: Callable[[int], None] | None) -> None:
        cfg, ctx, pos = self.cfg, self.ctx, self.pos
        if isinstance(self.data, Augmented):
            self.data.set_epoch(epoch)
        sampler = ShardedBatchSampler(
            self.n_train,
            batch_size=cfg.batch_size,
            steps=self.steps_per_epoch,
            seed=cfg.seed,
            epoch=epoch,
            rank=ctx.rank,
            world_size=ctx.world_size,
            accumulate_steps=cfg.accumulate_steps,
            start_step=pos.epoch_step,
        )
        loader = DataLoader(
            self.data,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch),
        )
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=pos.epoch_step,
            desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and ctx.is_main),
            leave=False,
        )
        t0, it = time.perf_counter(), iter(loader)
        for _ in range(pos.epoch_step, self.steps_per_epoch):
            t_step = time.perf_counter()
            row = self._step(it)
            pos.step += 1
            pos.epoch_step += 1
            for k, v in row.items():
                pos.sums[k] = pos.sums.get(k, 0.0) + v
            self.log.step({"step": pos.step, "epoch": epoch, **row, "seconds": round(time.perf_counter() - t_step, 4)})
            bar.set_postfix(loss=f"{row['total']:.3f}")
            bar.update()
            every = cfg.checkpoint_every
            if every and pos.step % every == 0 and pos.epoch_step < self.steps_per_epoch:
                self._checkpoint()  # the epoch's last step is checkpointed after validation, below
            if on_step is not None:
                on_step(pos.step)
        bar.close()
        n = max(pos.epoch_step, 1)
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": pos.step,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
            "train": {k: v / n for k, v in pos.sums.items() if k not in ("lr", "grad_norm", "skipped")},
            #: optimiser steps skipped for non-finite gradients
            "skipped_steps": int(pos.sums.get("skipped", 0.0)),
        }
        improved = False
        if self.val_dataset is not None:
            record["val"] = evaluate_model(
                self.net,
                self.val_dataset,
                device=self.device,
                batch_size=self.per_rank * cfg.accumulate_steps,
                amp=self.use_amp,
                dist=ctx,
            )
            score = record["val"]["total"].get(cfg.best_metric)
            if score is not None and (pos.best_score is None or score > pos.best_score):
                pos.best_score, pos.best_step, improved = float(score), pos.step, True
        self.history.append(record)
        self.log.epoch(record)
        self._checkpoint(record, improved)

    def _step(self, it: Any) -> dict[str, float]:
        """One optimiser step over ``accumulate_steps`` micro-batches; returns the global-batch losses."""
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(step_seed(cfg.seed, ctx.rank, self.pos.step))
        self.optimizer.zero_grad(set_to_none=True)
        parts: dict[str, float] = {}
        a_steps = cfg.accumulate_steps
        for a in range(a_steps):
            batch = drop_modalities(prepare_batch(next(it), self.net, self.device), self.net, cfg.modality_dropout)
            # gradients are all-reduced once, on the last micro-batch
            ddp = self.model if isinstance(self.model, DistributedDataParallel) else None
            with ddp.no_sync() if ddp is not None and a < a_steps - 1 else nullcontext():
                with torch.autocast(device_type="cuda", enabled=self.use_amp):
                    out = self.model(batch["optical"], batch["sar"])
                if not bool(torch.isfinite(out.logits).all()):
                    raise FloatingPointError(
                        f"{cfg.model}: non-finite logits at step {self.pos.step + 1}: training diverged; "
                        f"lower lr ({cfg.lr}) or raise warmup_steps ({cfg.warmup_steps})"
                    )
                loss, micro = compute_loss(self.net, out, batch, cfg, ctx, self.class_weights)
                self.scaler.scale(loss / a_steps).backward()
            for k, v in micro.items():
                parts[k] = parts.get(k, 0.0) + v / a_steps
        self.scaler.unscale_(self.optimizer)
        norm = nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip or math.inf)
        lr = self.scheduler.get_last_lr()[0]
        skipped = not bool(torch.isfinite(norm))
        if skipped and not self.use_amp:
            # GradScaler skips such steps on CUDA; do the same on the CPU: a deep encoder fed a constant
            # (dropped) input can overflow its GroupNorm gradients, and one NaN update ruins the weights
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"lr": float(lr), "grad_norm": float(norm), "skipped": float(skipped), **parts}

    # -- calibration ------------------------------------------------------------------------------
    def _calibrate(self) -> None:
        """Fit the temperatures of ``best`` and ``last`` on the validation data and republish them."""
        assert self.val_dataset is not None
        description = (
            self.cfg.val_data.model_dump_json() if self.cfg.val_data is not None else type(self.val_dataset).__name__
        )
        fits: dict[str, Any] = {}
        for name in ("best", "last"):
            path = self.out_dir / f"{name}.safetensors"
            if not path.exists():
                continue
            model = from_pretrained(path, map_location=self.device)
            cal = fit_calibration(
                model, self.val_dataset, description=f"validation data: {description}", device=self.device
            )
            setattr(model, "calibration", cal)  # noqa: B010 (nn.Module typing rejects plain attributes)
            meta = {k: v for k, v in read_metadata(path).items() if k not in _GENERATED}
            ckpt.publish_weights(model, self.out_dir, name, meta)
            fits[name] = {**calibration_summary(cal), **cal.fitted}
            if name == "last":
                setattr(self.net, "calibration", cal)  # noqa: B010
        (self.out_dir / "calibration.json").write_text(json.dumps(fits, indent=1) + "\n")

    # -- checkpoints ------------------------------------------------------------------------------
    def _metadata(self, record: dict[str, Any] | None) -> dict[str, Any]:
        cfg, pos = self.cfg, self.pos
        seeds = {"train": cfg.seed}
        if hasattr(cfg.train_data, "seed"):
            seeds["data"] = cfg.train_data.seed
        return {
            "training_data": cfg.data_description or cfg.train_data.model_dump(mode="json"),
            "data_fingerprint": self.fingerprint,
            "metrics": record.get("val") if record else self.last_meta.get("metrics"),
            "train_config": cfg.model_dump(mode="json"),
            "epoch": pos.epoch,
            "step": pos.step,
            "seeds": seeds,
            "world_size": self.ctx.world_size,
            "global_batch_size": cfg.batch_size,
            "accumulate_steps": cfg.accumulate_steps,
            "best": {"metric": cfg.best_metric, "score": pos.best_score, "step": pos.best_step},
        }

    def _checkpoint(self, record: dict[str, Any] | None = None, improved: bool = False) -> None:
        """Rank 0 writes best (if improved), last, then the resume state; other ranks write nothing."""
        if not self.ctx.is_main:
            return
        meta = self._metadata(record)
        if improved:
            ckpt.publish_weights(self.net, self.out_dir, "best", meta)
        ckpt.publish_weights(self.net, self.out_dir, "last", meta)
        self.last_meta = meta
        pos = self.pos
        state = {
            "format": ckpt.STATE_FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.capture_rng(),
            "epoch": pos.epoch,
            "step": pos.step,
            "position": {
                "epoch": pos.epoch,
                "epoch_step": pos.epoch_step,
                "sums": dict(pos.sums),
                "best_score": pos.best_score,
                "best_step": pos.best_step,
            },
            "data_fingerprint": self.fingerprint,
            "batch_size": self.cfg.batch_size,
            "world_size": self.ctx.world_size,
            "last_metadata": json.dumps(meta),
        }
        ckpt.save_state(state, self.out_dir)
