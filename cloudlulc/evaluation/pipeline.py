"""One evaluation run from :class:`EvaluationParams`: dataset metrics, products, cloud sweep, report."""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Dataset

from cloudlulc.evaluation.params import DatasetSpec, EvaluationParams, EvaluationResult

log = logging.getLogger(__name__)


def open_dataset(spec: DatasetSpec) -> Dataset:
    """The torch Dataset a :class:`DatasetSpec` names (simulated scenes, our Zarr set, the paper's GeoTIFFs)."""
    if spec.kind == "simulated":
        from cloudlulc.evaluation.simulated import SimulatedSplit

        return SimulatedSplit(n_scenes=spec.n_scenes, shape=spec.shape, cloud_covers=spec.cloud_covers, seed=spec.seed)
    from cloudlulc import dataset as ds  # the dataset module's readers

    reader = (
        ds.ZarrPatchDataset(spec.path, spec.split)
        if spec.kind == "zarr"
        else ds.GeoTiffLayoutDataset(spec.path, spec.split)
    )
    if len(reader) == 0:
        raise ValueError(
            f"split {spec.split!r} of {spec.path} holds no patches (small AOIs can leave val/test empty); "
            "pick another split or rebuild with more regions"
        )
    return reader


def describe_dataset(spec: DatasetSpec, dataset: Dataset) -> str:
    """One line saying what was scored, for the report."""
    n = len(dataset)  # type: ignore[arg-type]
    if spec.kind == "simulated":
        covers = ", ".join(f"{round(100 * c)} %" for c in spec.cloud_covers)
        return (
            f"SIMULATED split of {n} scenes of {spec.shape[0]} x {spec.shape[1]} px "
            f"(cloud covers cycling {covers}; seed {spec.seed})"
        )
    what = "Zarr patch store" if spec.kind == "zarr" else "GeoTIFF layout"
    return f"{what} {spec.path}, split {spec.split!r}, {n} patches"


def run_evaluation(params: EvaluationParams) -> EvaluationResult:
    """Run every part ``params`` asks for and write ``results.json``, ``report.md`` and ``report.html``."""
    import torch

    from cloudlulc.evaluation.report import write_reports
    from cloudlulc.evaluation.runner import evaluate

    torch.manual_seed(params.seed)
    models: dict[str, dict[str, Any]] = {}
    description = None
    if params.dataset is not None:
        dataset = open_dataset(params.dataset)
        description = describe_dataset(params.dataset, dataset)
        models = evaluate(
            params.models,
            dataset,
            batch_size=params.batch_size,
            device=params.device,
            num_workers=params.num_workers,
            nan_policy=params.nan_policy,
        )
    products = None
    if params.products is not None:
        from cloudlulc.evaluation.products import compare_products

        products = compare_products(params.products)
    sweep = None
    if params.cloud_sweep is not None:
        from cloudlulc.evaluation.cloud_sweep import run_cloud_sweep

        torch.manual_seed(params.seed)  # the sweep builds the same untrained models as the split did
        sweep = run_cloud_sweep(params.models, params.cloud_sweep, batch_size=params.batch_size, device=params.device)
    paths = write_reports(
        params.out_dir,
        title=params.title,
        models=models,
        products=products,
        cloud_sweep=sweep,
        params=params.model_dump(mode="json"),
        dataset_description=description,
    )
    return EvaluationResult(
        out_dir=params.out_dir,
        json_path=paths["json"],
        markdown_path=paths["markdown"],
        html_path=paths["html"],
        models=models,
        products=products,
        cloud_sweep=sweep,
    )
