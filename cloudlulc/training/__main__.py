"""``python -m cloudlulc.training``: train a model from a JSON :class:`TrainConfig` or flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cloudlulc.training.config import TrainConfig
from cloudlulc.training.loop import train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a CloudLULC model (default data: SIMULATED patches)")
    ap.add_argument("--config", type=Path, help="JSON file holding a TrainConfig")
    ap.add_argument("--model", help="registry name, e.g. cloudlulc-net-tiny")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--steps-per-epoch", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    data = json.loads(args.config.read_text()) if args.config else {}
    for key in ("model", "epochs", "steps_per_epoch", "batch_size", "out_dir", "device", "threads"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.resume:
        data["resume"] = True
    cfg = TrainConfig.model_validate(data)
    result = train(cfg)
    print(
        json.dumps(
            {"out_dir": str(result.out_dir), "last": result.history[-1] if result.history else None}, default=str
        )[:2000]
    )


if __name__ == "__main__":
    main()
