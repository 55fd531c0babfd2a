"""Config-driven training of CloudLULC-Net and the baselines (:func:`train`), and the metrics.

One loop for every model in :mod:`cloudlulc.model`, on one process or many (``torchrun``):
:mod:`~cloudlulc.training.config` (what to train), :mod:`~cloudlulc.training.sources` and
:mod:`~cloudlulc.training.data` (datasets, augmentation, batches), :mod:`~cloudlulc.training.sampler`
(global batches split by rank), :mod:`~cloudlulc.training.distributed` (process group),
:mod:`~cloudlulc.training.loss`, :mod:`~cloudlulc.training.loop`, :mod:`~cloudlulc.training.checkpoint`
(resume state, published weights), :mod:`~cloudlulc.training.progress` (logs, loss curve),
:mod:`~cloudlulc.training.validation` and :mod:`~cloudlulc.training.metrics` (metrics by cloud bin),
:mod:`~cloudlulc.training.launch` (``torchrun`` from Python).

CLI: ``python -m cloudlulc.training --config train.json`` or
``python -m cloudlulc.training --model cloudlulc-net-tiny --epochs 2 --out-dir runs/x``; on N processes:
``torchrun --nproc_per_node N -m cloudlulc.training --config train.json`` (docs/training.md).
"""

from cloudlulc.training.config import GeoTiffDataConfig, SimulatedDataConfig, TrainConfig, ZarrDataConfig
from cloudlulc.training.data import Augmented, SimulatedPatches, augment, batch_cloud_fraction, prepare_batch
from cloudlulc.training.launch import RunOutputs, launch, read_outputs, torchrun_command
from cloudlulc.training.loop import TrainResult, seed_everything, train
from cloudlulc.training.loss import compute_loss
from cloudlulc.training.metrics import CLOUD_BINS, ConfusionMatrix, scores_from_confusion
from cloudlulc.training.sampler import ShardedBatchSampler
from cloudlulc.training.sources import data_fingerprint, open_dataset
from cloudlulc.training.validation import evaluate_model

__all__ = [
    "CLOUD_BINS",
    "Augmented",
    "ConfusionMatrix",
    "GeoTiffDataConfig",
    "RunOutputs",
    "ShardedBatchSampler",
    "SimulatedDataConfig",
    "SimulatedPatches",
    "TrainConfig",
    "TrainResult",
    "ZarrDataConfig",
    "augment",
    "batch_cloud_fraction",
    "compute_loss",
    "data_fingerprint",
    "evaluate_model",
    "launch",
    "open_dataset",
    "prepare_batch",
    "read_outputs",
    "scores_from_confusion",
    "seed_everything",
    "torchrun_command",
    "train",
]
