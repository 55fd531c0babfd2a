"""Config-driven training of CloudLULC-Net and the baselines (:func:`train`), and the metrics.

One loop for every model in :mod:`cloudlulc.model`: :mod:`~cloudlulc.training.config` (what to
train), :mod:`~cloudlulc.training.data` (patches, augmentation, batches), :mod:`~cloudlulc.training.loss`,
:mod:`~cloudlulc.training.loop`, :mod:`~cloudlulc.training.metrics` (confusion matrices by cloud bin).

CLI: ``python -m cloudlulc.training --config train.json`` or
``python -m cloudlulc.training --model cloudlulc-net-tiny --epochs 2 --out-dir runs/x``.
"""

from cloudlulc.training.config import SimulatedDataConfig, TrainConfig
from cloudlulc.training.data import Augmented, SimulatedPatches, augment, batch_cloud_fraction, prepare_batch
from cloudlulc.training.loop import TrainResult, evaluate_model, seed_everything, train
from cloudlulc.training.loss import compute_loss
from cloudlulc.training.metrics import CLOUD_BINS, ConfusionMatrix, scores_from_confusion

__all__ = [
    "CLOUD_BINS",
    "Augmented",
    "ConfusionMatrix",
    "SimulatedDataConfig",
    "SimulatedPatches",
    "TrainConfig",
    "TrainResult",
    "augment",
    "batch_cloud_fraction",
    "compute_loss",
    "evaluate_model",
    "prepare_batch",
    "scores_from_confusion",
    "seed_everything",
    "train",
]
