"""What a training run is asked to do: :class:`TrainConfig` (JSON-able, validated).

Training data is one of :class:`SimulatedDataConfig` (the default), :class:`ZarrDataConfig` (a store
built by ``build-dataset``) or :class:`GeoTiffDataConfig` (the paper's GeoTIFF layout), told apart by
``kind`` (a config without ``kind`` is simulated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


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
    #: yield ``optical_clear`` (only the reconstruction-first baseline needs it; it doubles the memory)
    keep_clear: bool = True

    @model_validator(mode="after")
    def _scene_holds_patch(self) -> SimulatedDataConfig:
        if self.scene_size is not None and self.scene_size < self.patch_size:
            raise ValueError(f"scene_size {self.scene_size} is smaller than patch_size {self.patch_size}")
        return self


class ZarrDataConfig(BaseModel):
    """One split of the Zarr store written by ``build-dataset`` (:class:`cloudlulc.dataset.ZarrPatchDataset`)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["zarr"] = "zarr"
    #: the build's output directory or its ``dataset.zarr``
    path: Path
    split: Literal["train", "val", "test"] | None = "train"


class GeoTiffDataConfig(BaseModel):
    """One split of the paper's GeoTIFF layout (:class:`cloudlulc.dataset.GeoTiffLayoutDataset`)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["geotiff"] = "geotiff"
    root: Path
    split: Literal["train", "val", "test"] = "train"
    optical_scale: float | None = None
    optical_offset: float | None = None
    #: source label code -> CloudLULC class (JSON keys are strings: {"1": 0, ...})
    label_map: dict[int, int] | None = None
    sar_units: Literal["db", "linear"] = "db"
    #: the files' backscatter: RTC gamma0 (as the pipeline reads) or GRD sigma0 (converted to gamma0)
    sar_backscatter: Literal["gamma0", "sigma0"] = "gamma0"
    #: incidence angle of the sigma0 -> gamma0 conversion (IW mid-swath)
    incidence_deg: float = Field(37.0, gt=0, lt=90)


def _data_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "simulated"))
    return str(getattr(value, "kind", "simulated"))


DataConfig = Annotated[
    Annotated[SimulatedDataConfig, Tag("simulated")]
    | Annotated[ZarrDataConfig, Tag("zarr")]
    | Annotated[GeoTiffDataConfig, Tag("geotiff")],
    Discriminator(_data_kind),
]


class ModalityDropout(BaseModel):
    """Per-patch probabilities of training without an input (:func:`~cloudlulc.training.data.drop_modalities`).

    Why: a network trained only on pairs learns to lean on whichever input is easier and fails when
    the other is missing (no S1 pass in range, an S2 tile dropped, a swath edge). The three rates
    are exclusive and sum to at most 1.
    """

    model_config = ConfigDict(extra="forbid")
    #: SAR replaced by its band means (inference without an S1 pass)
    sar: float = Field(0.0, ge=0, le=1)
    #: optical replaced by its band means over the whole patch (no S2 data)
    optical: float = Field(0.0, ge=0, le=1)
    #: optical removed beyond a straight edge across the patch (tile or swath edge)
    partial_optical: float = Field(0.0, ge=0, le=1)
    #: on a patch with < 10 % cloud: the SAR of another patch of the batch (an unrelated landscape), so
    #: the network learns that a clear optical observation outranks a radar that disagrees with it
    sar_mismatch: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> ModalityDropout:
        if self.sar + self.optical + self.partial_optical + self.sar_mismatch > 1 + 1e-9:
            raise ValueError("modality dropout rates are exclusive: their sum must be <= 1")
        return self


class TrainConfig(BaseModel):
    """A training run: model, data, optimisation, and what to write where.

    ``batch_size`` is the *global* batch of one optimiser step: it is split over the
    ``accumulate_steps`` micro-batches and over the processes of a ``torchrun`` launch, so the same
    config trains the same model on 1 or N processes (see ``docs/training.md``).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = "cloudlulc-net-tiny"
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    train_data: DataConfig = Field(default_factory=SimulatedDataConfig)
    val_data: DataConfig | None = None
    epochs: int = Field(1, ge=1)
    #: optimiser steps per epoch; None = one pass over the training set
    steps_per_epoch: int | None = Field(None, ge=1)
    #: patches per optimiser step over all processes and micro-batches
    batch_size: int = Field(8, ge=1)
    #: micro-batches whose gradients are summed before each optimiser step (small GPUs)
    accumulate_steps: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.02, ge=0, le=1)
    #: max gradient norm; 0 = no clipping
    grad_clip: float = Field(1.0, ge=0)
    anchor_weight: float = Field(0.2, ge=0)
    reliability_weight: float = Field(0.3, ge=0)
    reconstruction_weight: float = Field(1.0, ge=0)
    #: drop inputs during training so the network maps from either one alone
    modality_dropout: ModalityDropout = Field(default_factory=ModalityDropout)
    #: cross-entropy class weights: none, inverse square root of the training-set class frequencies
    #: (estimated on up to 64 training patches), or one weight per class
    class_weights: Literal["none", "inverse_sqrt"] | list[float] = "none"
    #: after training, fit the confidence calibration (temperatures) on the validation data and store it
    #: with ``best`` and ``last`` (:mod:`~cloudlulc.training.calibrate`)
    calibrate: bool = True
    augment: bool = True
    #: mixed precision (float16 autocast + GradScaler) on CUDA; ignored on the CPU
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    num_workers: int = 0
    out_dir: Path = Path("runs/cloudlulc")
    #: continue from ``out_dir/last-trainer.pt`` when it exists
    resume: bool = False
    #: write a resumable checkpoint every this many optimiser steps (0 = at epoch ends only)
    checkpoint_every: int = Field(0, ge=0)
    #: validation score (of ``val.total``) that picks ``best.safetensors``
    best_metric: Literal["miou", "macro_f1", "oa"] = "miou"
    #: also log to TensorBoard (``out_dir/tensorboard``) when ``torch.utils.tensorboard`` imports
    tensorboard: bool = True
    progress: bool = True
    #: free-text description of the training data stored with the weights
    data_description: str | None = None
