"""Prefect flow ``train``: a thin wrapper over :mod:`cloudlulc.training`.

``config`` is the library's :class:`cloudlulc.training.TrainConfig` (validated before training starts).
``processes`` = 1 trains in the flow-run process; N > 1 (or ``"gpus"``: one per GPU of the machine)
starts ``torchrun`` with that many processes (:func:`cloudlulc.training.launch`). Either way the flow
then reads rank 0's files and publishes the epoch history, the loss curve and the weights' paths as
artifacts. On the Kubernetes work pool (``deploy/prefect.yaml``) the run uses the pod's GPUs.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cloudlulc.training import RunOutputs, TrainConfig
from flows.params import run_with_config_file, validate


@flow(name="train", log_prints=True, validate_parameters=False)
def train_flow(
    config: TrainConfig | dict[str, Any], processes: int | Literal["gpus"] = 1, device: str | None = None
) -> dict[str, Any]:
    """Train the model ``config`` describes on ``processes`` processes (``device`` overrides the config's)."""
    from cloudlulc.training import launch, read_outputs, train

    cfg = config if isinstance(config, TrainConfig) else validate(TrainConfig, "train", config)
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    logger = get_run_logger()
    logger.info("training %s for %d epoch(s) into %s on %s process(es)", cfg.model, cfg.epochs, cfg.out_dir, processes)
    if processes == 1:
        train(cfg)
        outputs = read_outputs(cfg.out_dir)
    else:
        outputs = launch(cfg, processes, log=logger.info)
    _publish(cfg, outputs)
    return {
        "weights_path": str(outputs.last) if outputs.last else None,
        "best_path": str(outputs.best) if outputs.best else None,
        "out_dir": str(outputs.out_dir),
        "loss_curve": str(outputs.loss_curve) if outputs.loss_curve else None,
        "history": _history_rows(outputs),
    }


def _history_rows(outputs: RunOutputs) -> list[dict[str, Any]]:
    """One flat row per epoch: step, lr, mean training losses, validation scores overall and per cloud bin."""
    rows = []
    for h in outputs.history:
        row = {k: v for k, v in h.items() if isinstance(v, (int, float, str))}
        row.update({f"train_{k}": round(v, 5) for k, v in h.get("train", {}).items()})
        if h.get("val"):
            row.update({f"val_{k}": h["val"]["total"].get(k) for k in ("oa", "miou", "macro_f1")})
            row.update({f"val_miou_cloud_{b}": s.get("miou") for b, s in h["val"]["per_bin"].items()})
        rows.append(row)
    return rows


def _publish(cfg: TrainConfig, outputs: RunOutputs) -> None:
    rows = _history_rows(outputs)
    if rows:
        create_table_artifact(table=rows, key="train-history", description=f"{cfg.model} training history")
    lines = [
        f"# Training {cfg.model}",
        "",
        f"Steps: {outputs.steps[-1]['step'] if outputs.steps else 0}, epochs: {len(outputs.history)}",
        "",
        f"Last weights: `{outputs.last}`",
        "",
        f"Best on validation: `{outputs.best}`" if outputs.best else "Best on validation: none (no validation data)",
        "",
        f"Logs: `{outputs.train_log_csv}`, `{outputs.out_dir / 'metrics.jsonl'}`",
    ]
    if outputs.loss_curve is not None:
        png = base64.b64encode(outputs.loss_curve.read_bytes()).decode()
        lines += ["", f"![loss curve](data:image/png;base64,{png})", "", f"`{outputs.loss_curve}`"]
    create_markdown_artifact(
        markdown="\n".join(lines) + "\n", key="train-summary", description="CloudLULC training run"
    )
    print(f"weights: {outputs.last}")


def main(argv: list[str] | None = None) -> None:
    run_with_config_file(TrainConfig, "train", train_flow, argv)


if __name__ == "__main__":
    main()
