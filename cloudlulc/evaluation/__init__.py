"""Evaluate CloudLULC-Net and baselines: dataset metrics, product comparison, cloud sweep, reports.

The work lives in the modules of this package (``runner`` scores models on a split, ``products`` scores global LULC
products and our mosaic on one grid, ``cloud_sweep`` varies simulated cloud cover over fixed land
cover, ``report`` writes JSON, Markdown and a self-contained HTML page).

Entry points:

- :func:`run_evaluation` ``(params: EvaluationParams) -> EvaluationResult``: the whole run, one object.
- :func:`evaluate` ``(models, dataset, ...) -> dict[name, metrics]``: score models on any torch Dataset.

CLI: ``python -m cloudlulc.evaluation params.json`` (an :class:`EvaluationParams` document).
"""

from __future__ import annotations

from cloudlulc.evaluation.params import (
    CloudSweepSpec,
    DatasetSpec,
    EvaluationParams,
    EvaluationResult,
    ModelSpec,
    ProductComparisonSpec,
)
from cloudlulc.evaluation.pipeline import run_evaluation
from cloudlulc.evaluation.runner import evaluate, evaluate_model, load_model

__all__ = [
    "CloudSweepSpec",
    "DatasetSpec",
    "EvaluationParams",
    "EvaluationResult",
    "ModelSpec",
    "ProductComparisonSpec",
    "evaluate",
    "evaluate_model",
    "load_model",
    "run_evaluation",
]
