"""Cloud-sweep experiment: the same simulated land under 0..100 % cloud cover, every method scored.

Each level reuses the land-cover seeds of the others (see :mod:`cloudlulc.evaluation.simulated`:
land, clear reflectance and SAR stay identical and the clouds are nested as cover grows), so the
curves isolate the effect of clouds from the effect of different scenes. SIMULATED DATA.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cloudlulc.evaluation.params import CloudSweepSpec, ModelSpec
from cloudlulc.evaluation.runner import ModelLike, describe_model, evaluate_model, load_model
from cloudlulc.evaluation.simulated import SimulatedSplit

log = logging.getLogger(__name__)


def run_cloud_sweep(
    models: Mapping[str, ModelLike] | Sequence[ModelSpec],
    spec: CloudSweepSpec | None = None,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """``{"levels": [...], "simulated": True, "methods": {name: [metrics per level]}}``.

    Each model is loaded once and scored on ``spec.n_scenes`` scenes per level, every scene of one
    level having exactly that cloud cover.
    """
    spec = spec or CloudSweepSpec()
    bad = [lv for lv in spec.levels if not 0.0 <= lv <= 1.0]
    if bad or not spec.levels:
        raise ValueError(f"cloud sweep levels must be fractions in [0, 1] (10 % = 0.1), got {spec.levels}")
    items = list(models.items()) if isinstance(models, Mapping) else [(m.name, m) for m in models]
    splits = [SimulatedSplit(spec.n_scenes, spec.shape, [lv], spec.seed) for lv in spec.levels]
    methods: dict[str, list[dict[str, Any]]] = {}
    for name, model in items:
        net = load_model(model)
        methods[name] = []
        for level, split in zip(spec.levels, splits):
            log.info("cloud sweep: %s at %.0f %% cloud", name, 100 * level)
            metrics = evaluate_model(net, split, batch_size=batch_size, device=device)
            metrics["model"] = describe_model(model, net)  # the spec knows the weights file, the module not
            metrics["cloud_cover"] = level
            methods[name].append(metrics)
    return {
        "levels": list(spec.levels),
        "n_scenes": spec.n_scenes,
        "shape": list(spec.shape),
        "seed": spec.seed,
        "simulated": True,
        "methods": methods,
    }
