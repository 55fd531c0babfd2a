"""Pydantic configurations for every model in :mod:`cloudlulc.model`.

A config is the complete recipe for rebuilding a network from its weights file: the architecture
hyper-parameters *and* the input contract (band order, normalisation constants, class table). The
models take physical units (reflectance, dB) and normalise internally with the constants stored here,
so the constants travel with the weights and no caller has to know them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudlulc.classes import CLASS_NAMES, NUM_CLASSES, S1_BANDS, S2_BANDS

#: Approximate per-band mean / std of Sentinel-2 L2A surface reflectance (harmonised, 0..1 scale) over
#: mixed land scenes. Only a centring/scaling aid: the network learns the rest, so round values suffice.
S2_MEAN: tuple[float, ...] = (0.11, 0.11, 0.10, 0.10, 0.13, 0.19, 0.21, 0.22, 0.24, 0.24, 0.21, 0.15)
S2_STD: tuple[float, ...] = (0.10, 0.10, 0.10, 0.11, 0.11, 0.11, 0.12, 0.12, 0.12, 0.12, 0.11, 0.10)
#: Approximate mean / std of Sentinel-1 RTC gamma0 in dB (VV, VH) over land.
S1_MEAN: tuple[float, ...] = (-11.0, -18.0)
S1_STD: tuple[float, ...] = (4.0, 4.5)


class ModelConfigBase(BaseModel):
    """Fields shared by all architectures: the input/output contract of the weights."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    name: str = Field(description="registry name, e.g. 'cloudlulc-net-tiny'")
    num_classes: int = NUM_CLASSES
    class_names: tuple[str, ...] = CLASS_NAMES
    s2_bands: tuple[str, ...] = S2_BANDS
    s1_bands: tuple[str, ...] = S1_BANDS
    optical_mean: tuple[float, ...] = S2_MEAN
    optical_std: tuple[float, ...] = S2_STD
    sar_mean: tuple[float, ...] = S1_MEAN
    sar_std: tuple[float, ...] = S1_STD
    ignore_index: int = 255

    @model_validator(mode="after")
    def _check_lengths(self) -> ModelConfigBase:
        if len(self.optical_mean) != len(self.s2_bands) or len(self.optical_std) != len(self.s2_bands):
            raise ValueError(
                f"optical_mean/optical_std need one value per S2 band ({len(self.s2_bands)}), got "
                f"{len(self.optical_mean)}/{len(self.optical_std)}"
            )
        if len(self.sar_mean) != len(self.s1_bands) or len(self.sar_std) != len(self.s1_bands):
            raise ValueError(f"sar_mean/sar_std need one value per S1 band ({len(self.s1_bands)})")
        if any(s <= 0 for s in self.optical_std + self.sar_std):
            raise ValueError("normalisation std values must be > 0")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} entries, num_classes={self.num_classes}")
        return self


class CloudLULCNetConfig(ModelConfigBase):
    """CloudLULC-Net hyper-parameters (see docs/model.md for the design)."""

    arch: Literal["cloudlulc-net"] = "cloudlulc-net"
    name: str = "cloudlulc-net-tiny"
    #: channels of the 4 encoder stages (strides 2, 4, 8, 16), shared by both modalities
    widths: tuple[int, int, int, int] = (16, 32, 48, 64)
    #: residual blocks per stage
    depths: tuple[int, int, int, int] = (1, 1, 1, 1)
    #: HIAA spatial interaction order n (gnConv recursion depth), capped per stage by the width
    hiaa_order: int = 3
    #: USMT transformer layers / heads / latent dimension D
    usmt_layers: int = 1
    usmt_heads: int = 4
    latent_dim: int = 64
    usmt_mlp_ratio: float = 2.0
    decoder_width: int = 32
    dropout: float = 0.0
    #: GroupNorm groups (max; reduced to divide the channel count); 0 = per-pixel channel LayerNorm,
    #: which keeps the map independent of the tile size (the demo weights use it)
    norm_groups: int = Field(8, ge=0)
    #: ablations (docs/model.md): ORM learned, fixed at r = 0.5, or off (optical features pass as they are)
    orm: Literal["learned", "constant", "off"] = "learned"
    #: HIAA (SHOI + CHOI) or a 1x1 convolution over the concatenated modalities
    fusion: Literal["hiaa", "concat"] = "hiaa"
    #: USMT transformer, or only its 1x1 projection to the latent
    usmt: bool = True

    @model_validator(mode="after")
    def _check_arch(self) -> CloudLULCNetConfig:
        if self.latent_dim % self.usmt_heads:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by usmt_heads ({self.usmt_heads})")
        if self.hiaa_order < 1:
            raise ValueError("hiaa_order must be >= 1")
        return self


class UNetConfig(ModelConfigBase):
    """Baseline U-Net fed optical, SAR or both (early fusion: channel concatenation)."""

    arch: Literal["unet"] = "unet"
    name: str = "unet-optical"
    inputs: Literal["optical", "sar", "both"] = "optical"
    #: channels at strides 1, 2, 4, 8, 16
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    norm_groups: int = 8


class ReconstructThenSegmentConfig(ModelConfigBase):
    """Reconstruction-first pipeline: SAR-guided cloud removal U-Net, then an optical-only U-Net."""

    arch: Literal["reconstruct-then-segment"] = "reconstruct-then-segment"
    name: str = "reconstruct-then-segment"
    reconstruction_widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    segmenter_widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    norm_groups: int = 8


AnyModelConfig = CloudLULCNetConfig | UNetConfig | ReconstructThenSegmentConfig

_CONFIG_BY_ARCH: dict[str, type[ModelConfigBase]] = {
    "cloudlulc-net": CloudLULCNetConfig,
    "unet": UNetConfig,
    "reconstruct-then-segment": ReconstructThenSegmentConfig,
}


def config_from_dict(data: dict) -> AnyModelConfig:
    """Rebuild a config from its JSON form, dispatching on the ``arch`` field."""
    arch = data.get("arch")
    if arch not in _CONFIG_BY_ARCH:
        raise ValueError(f"unknown model architecture {arch!r}; known: {sorted(_CONFIG_BY_ARCH)}")
    return _CONFIG_BY_ARCH[arch].model_validate(data)  # type: ignore[return-value]
