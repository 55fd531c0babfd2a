"""Evaluate CloudLULC-Net and baselines: dataset metrics, product comparison, cloud sweep, reports.

The facade the Prefect flow (``flows/evaluate.py``) and Python callers use; the work lives in
:mod:`cloudlulc.evaluation` (``runner`` scores models on a split, ``products`` scores global LULC
products and our mosaic on one grid, ``cloud_sweep`` varies simulated cloud cover over fixed land
cover, ``report`` writes JSON, Markdown and a self-contained HTML page).

Entry points:

- :func:`run_evaluation` ``(params: EvaluationParams) -> EvaluationResult``: the whole run, one object.
- :func:`evaluate` ``(models, dataset, ...) -> dict[name, metrics]``: score models on any torch Dataset.

CLI: ``python -m cloudlulc.evaluate params.json`` (an :class:`EvaluationParams` document).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cloudlulc.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("params", type=Path, help="JSON file holding cloudlulc.evaluate.EvaluationParams")
    ap.add_argument("--out-dir", type=Path, default=None, help="override params.out_dir")
    args = ap.parse_args(argv)
    doc = json.loads(args.params.read_text())
    if args.out_dir is not None:
        doc["out_dir"] = str(args.out_dir)
    result = run_evaluation(EvaluationParams.model_validate(doc))
    print(f"results: {result.json_path}\nreport:  {result.html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
