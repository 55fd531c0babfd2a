"""Prefect flow ``train``: a thin wrapper over :func:`cloudlulc.training.train`.

Parameters are the library's :class:`cloudlulc.training.TrainConfig` (validated before training starts);
the flow records the per-epoch history and the weights path as an artifact. On the Kubernetes work
pool (``deploy/prefect.yaml``) it runs on a GPU node; locally it trains on the CPU.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cloudlulc.training import TrainConfig
from flows.params import run_with_config_file, validate


@flow(name="train", log_prints=True, validate_parameters=False)
def train_flow(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train the model described by ``config``; returns the weights path and the epoch history."""
    from cloudlulc.training import train

    cfg = config if isinstance(config, TrainConfig) else validate(TrainConfig, "train", config)
    get_run_logger().info("training %s for %d epoch(s) into %s", cfg.model, cfg.epochs, cfg.out_dir)
    result = train(cfg)
    history = [{k: v for k, v in h.items() if isinstance(v, (int, float, str))} for h in result.history]
    out = {
        "weights_path": str(result.weights_path) if result.weights_path else None,
        "out_dir": str(result.out_dir) if result.out_dir else None,
        "history": history,
    }
    if history:
        create_table_artifact(table=history, key="train-history", description=f"{cfg.model} training history")
    create_markdown_artifact(
        markdown=f"# Training {cfg.model}\n\nWeights: `{out['weights_path']}`\n\nEpochs: {len(history)}\n",
        key="train-summary",
        description="CloudLULC training run",
    )
    print(f"weights: {out['weights_path']}")
    return out


def main(argv: list[str] | None = None) -> None:
    run_with_config_file(TrainConfig, "train", train_flow, argv)


if __name__ == "__main__":
    main()
