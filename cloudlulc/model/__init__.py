"""CloudLULC-Net, the baselines, and their weights I/O (see docs/model.md)."""

from cloudlulc.model.baselines import ReconstructThenSegment, UNetSegmenter
from cloudlulc.model.cloudlulc_net import CloudLULCNet
from cloudlulc.model.config import CloudLULCNetConfig, ReconstructThenSegmentConfig, UNetConfig
from cloudlulc.model.io import WeightsMismatchError, demo_weights_path, from_pretrained, save_pretrained
from cloudlulc.model.outputs import ModelOutput
from cloudlulc.model.registry import MODEL_NAMES, build_model, model_from_config

__all__ = [
    "MODEL_NAMES",
    "CloudLULCNet",
    "CloudLULCNetConfig",
    "ModelOutput",
    "ReconstructThenSegment",
    "ReconstructThenSegmentConfig",
    "UNetConfig",
    "UNetSegmenter",
    "WeightsMismatchError",
    "build_model",
    "demo_weights_path",
    "from_pretrained",
    "model_from_config",
    "save_pretrained",
]
