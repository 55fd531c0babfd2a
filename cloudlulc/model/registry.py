"""Model registry: one name per architecture/size, shared by training, inference and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cloudlulc.model.baselines import ReconstructThenSegment, UNetSegmenter
from cloudlulc.model.cloudlulc_net import CloudLULCNet
from cloudlulc.model.config import (
    AnyModelConfig,
    CloudLULCNetConfig,
    ReconstructThenSegmentConfig,
    UNetConfig,
)

#: name -> config factory (defaults of that preset)
PRESETS: dict[str, Callable[[], AnyModelConfig]] = {
    "cloudlulc-net-tiny": lambda: CloudLULCNetConfig(name="cloudlulc-net-tiny"),
    "cloudlulc-net-base": lambda: CloudLULCNetConfig(
        name="cloudlulc-net-base",
        widths=(64, 128, 256, 384),
        depths=(2, 2, 3, 2),
        hiaa_order=3,
        usmt_layers=4,
        usmt_heads=8,
        latent_dim=256,
        usmt_mlp_ratio=4.0,
        decoder_width=128,
        dropout=0.1,
        norm_groups=16,
    ),
    # the base shape (depths 2-2-3-2, 4 USMT layers) at widths a CPU can train in minutes
    "cloudlulc-net-small": lambda: CloudLULCNetConfig(
        name="cloudlulc-net-small",
        widths=(24, 48, 64, 96),
        depths=(2, 2, 3, 2),
        hiaa_order=3,
        usmt_layers=4,
        usmt_heads=8,
        latent_dim=96,
        usmt_mlp_ratio=4.0,
        decoder_width=48,
        norm_groups=8,
    ),
    "unet-optical": lambda: UNetConfig(name="unet-optical", inputs="optical"),
    "unet-sar": lambda: UNetConfig(name="unet-sar", inputs="sar"),
    "unet-early-fusion": lambda: UNetConfig(name="unet-early-fusion", inputs="both"),
    "reconstruct-then-segment": lambda: ReconstructThenSegmentConfig(),
}
MODEL_NAMES: tuple[str, ...] = tuple(PRESETS)


def model_from_config(config: AnyModelConfig) -> nn.Module:
    """Instantiate the network a config describes (used by :func:`cloudlulc.model.io.from_pretrained`)."""
    if isinstance(config, CloudLULCNetConfig):
        return CloudLULCNet(config)
    if isinstance(config, UNetConfig):
        return UNetSegmenter(config)
    if isinstance(config, ReconstructThenSegmentConfig):
        return ReconstructThenSegment(config)
    raise TypeError(f"no model for config type {type(config).__name__}")


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace config fields, e.g. ``widths=(8, 16, 24, 32)``."""
    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    base = PRESETS[name]()
    config = type(base).model_validate({**base.model_dump(), **overrides})
    return model_from_config(config)
