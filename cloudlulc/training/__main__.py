"""``python -m cloudlulc.training``: train a model from a JSON :class:`TrainConfig` or flags.

Under ``torchrun --nproc_per_node N -m cloudlulc.training ...`` every process runs this and joins
the process group; only rank 0 prints the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cloudlulc.training.config import TrainConfig
from cloudlulc.training.loop import train


def _dataset(path: Path, split: str) -> dict[str, Any]:
    """A data config for a built dataset directory: its Zarr store, else its GeoTIFF layout."""
    if (path / "dataset.zarr").exists() or (path / "zarr.json").exists():
        return {"kind": "zarr", "path": str(path), "split": split}
    if (path / "Label").is_dir():
        return {"kind": "geotiff", "root": str(path), "split": split}
    raise SystemExit(f"--dataset {path}: neither a build-dataset output (dataset.zarr) nor a GeoTIFF layout (Label/)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a CloudLULC model (default data: SIMULATED patches)")
    ap.add_argument("--config", type=Path, help="JSON file holding a TrainConfig")
    ap.add_argument("--model", help="registry name, e.g. cloudlulc-net-tiny")
    ap.add_argument("--dataset", type=Path, help="build-dataset output or GeoTIFF layout (train + val splits)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--steps-per-epoch", type=int)
    ap.add_argument("--batch-size", type=int, help="global batch per optimiser step (all processes)")
    ap.add_argument("--accumulate-steps", type=int, help="micro-batches per optimiser step")
    ap.add_argument("--checkpoint-every", type=int, help="optimiser steps between checkpoints (0: epoch ends)")
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--resume", action="store_true", help="continue from out_dir/last-trainer.pt")
    args = ap.parse_args(argv)
    data = json.loads(args.config.read_text()) if args.config else {}
    keys = ("model", "epochs", "steps_per_epoch", "batch_size", "accumulate_steps", "checkpoint_every")
    for key in (*keys, "out_dir", "device", "threads"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.dataset is not None:
        data["train_data"] = _dataset(args.dataset, "train")
        data["val_data"] = _dataset(args.dataset, "val")
    if args.resume:
        data["resume"] = True
    cfg = TrainConfig.model_validate(data)
    result = train(cfg)
    if result.out_dir is not None and _is_rank0():
        last = result.history[-1] if result.history else None
        print(json.dumps({"out_dir": str(result.out_dir), "last": last}, default=str)[:2000])


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    main()
