"""What a training run is asked to do: :class:`TrainConfig` (JSON-able, validated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
