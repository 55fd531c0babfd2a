"""What a network is fed: finite inputs (NaN filled with the model's band means) at its stride.

The one place where training, evaluation and inference prepare inputs alike: a NaN band value
(nodata, masked clouds, a missing modality) becomes the model's normalisation mean for that band,
which is zero after normalising. Models without normalisation constants (foreign models in
evaluation) get :data:`OPTICAL_FILL` and :data:`SAR_FILL`, plausible "no signal" values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cloudlulc.classes import S1_BANDS, S2_BANDS

__all__ = ["OPTICAL_FILL", "SAR_FILL", "fill_nan", "fill_nan_inplace", "fill_values", "model_stride"]

#: fills of models without normalisation constants: dark reflectance and the dB floor the cube clips to
OPTICAL_FILL = 0.0
SAR_FILL = -50.0


def fill_values(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Per-band fills for non-finite optical and SAR inputs (float32, one value per band)."""
    config = getattr(model, "config", None)
    opt = getattr(config, "optical_mean", None)
    sar = getattr(config, "sar_mean", None)
    opt_arr = np.asarray(opt, np.float32) if opt is not None else np.full(len(S2_BANDS), OPTICAL_FILL, np.float32)
    sar_arr = np.asarray(sar, np.float32) if sar is not None else np.full(len(S1_BANDS), SAR_FILL, np.float32)
    return opt_arr, sar_arr


def fill_nan_inplace(bands: np.ndarray, fills: np.ndarray) -> None:
    """Replace non-finite values of ``bands`` [C, H, W] (float) by ``fills[c]``, band by band, in place:
    one mask, no window-sized temporaries (inference windows are large)."""
    bad = np.empty(bands.shape[1:], dtype=bool)
    for b in range(bands.shape[0]):
        np.logical_not(np.isfinite(bands[b], out=bad), out=bad)
        if bad.any():
            np.copyto(bands[b], fills[b], where=bad)


def fill_nan(x: torch.Tensor, fills: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, C, H, W] with non-finite values replaced by ``fills[c]`` (or one scalar fill), and
    the mask [B, H, W] of pixels where any band was non-finite."""
    x = x.float()
    bad = ~torch.isfinite(x)
    fill = torch.as_tensor(fills, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1).expand_as(x)
    return torch.where(bad, fill, x), bad.any(1)


def model_stride(model: nn.Module) -> int:
    """The divisibility requirement for H and W (``model.stride``; 1 when the model has none)."""
    stride = getattr(model, "stride", 1)
    return int(stride) if stride else 1
