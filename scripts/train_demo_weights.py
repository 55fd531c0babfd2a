"""Reproduce the committed demo weights ``cloudlulc/weights/cloudlulc-net-tiny-sim.*`` (SIMULATED data).

Trains the tiny CloudLULC-Net on 256 px windows (the inference tile size) cut from 768 px simulated
scenes, with modality dropout (no SAR, no optical, optical missing beyond an edge, another patch's
radar on clear patches), class weighting
and best-on-validation checkpointing; the temperatures of the confidence calibration are fitted on
the validation windows at the end. Then scores the chosen weights on held-out simulated windows
(disjoint seeds): under heavy cloud, over all covers by cloud bin, and without SAR / without optical.
CPU only, one thread; the budget and wall time of the committed run are in docs/model.md.

    .venv/bin/python scripts/train_demo_weights.py                    # writes the committed weights
    .venv/bin/python scripts/train_demo_weights.py --steps-per-epoch 20 --epochs 1 --no-save   # smoke run
    .venv/bin/python scripts/train_demo_weights.py --recalibrate      # refit the committed weights' temperatures

``--recalibrate`` fits the calibration of the committed weights again on the same validation windows
(when the calibration gains a temperature, say) and rescores them; the weights are not touched.

THE DATA IS SIMULATED: these weights demonstrate the pipeline; they are not a real-world LULC model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cloudlulc.model.io import DEMO_WEIGHTS_STEM, WEIGHTS_DIR, from_pretrained, read_metadata, save_pretrained
from cloudlulc.training import SimulatedDataConfig, SimulatedPatches, TrainConfig, evaluate_model, train
from cloudlulc.training.calibrate import fit_calibration
from cloudlulc.training.config import ModalityDropout

TRAIN_DESCRIPTION = (
    "SIMULATED data only: {n} windows of {p}x{p} px cut from {scenes} scenes of {s}x{s} px rendered by "
    "cloudlulc.simulate.simulate_scene (seed {seed}; cloud cover uniform in [0, 0.95] and crop season in "
    "[0.2, 0.9] per scene; haze from clean L2A to TOA-like, cirrus, Sen2Cor-like SCL errors, S1 0-12 days "
    "off in either orbit), flip/rot90 augmentation, modality dropout (SAR {ds}, optical {do}, optical beyond "
    "an edge {dp}, another patch's SAR on clear patches {dm}), inverse-sqrt class weights, {steps} AdamW "
    "steps of batch {bs} on CPU, best of {epochs} validations. Not a real-world model."
)


def eval_sets(seed: int, n: int, size: int, scene: int) -> dict[str, SimulatedPatches]:
    """Held-out windows (seeds disjoint from training and validation): heavy cloud and all covers."""
    common = {"patch_size": size, "scene_size": scene, "patches_per_scene": 4, "keep_clear": False}
    return {
        "heavy": SimulatedPatches(
            SimulatedDataConfig(n_patches=n, cloud_cover=(0.6, 0.95), seed=10_000 + seed, **common)
        ),
        "mixed": SimulatedPatches(
            SimulatedDataConfig(n_patches=n, cloud_cover=(0.0, 1.0), seed=20_000 + seed, **common)
        ),
    }


def score(model: torch.nn.Module, sets: dict[str, SimulatedPatches]) -> dict[str, Any]:
    """Metrics (with ECE) under heavy cloud, over all covers, and over all covers without each input."""
    return {
        "heavy_cloud_60_95pct": evaluate_model(model, sets["heavy"], batch_size=4),
        "mixed_cloud_0_100pct": evaluate_model(model, sets["mixed"], batch_size=4),
        "mixed_without_sar": evaluate_model(model, sets["mixed"], batch_size=4, missing="sar"),
        "mixed_without_optical": evaluate_model(model, sets["mixed"], batch_size=4, missing="optical"),
    }


def headline(metrics: dict[str, Any]) -> str:
    def f(key: str, field: str) -> str:
        v = metrics[key]["total"][field]
        return "-" if v is None else f"{v:.3f}"

    return (
        f"heavy mIoU {f('heavy_cloud_60_95pct', 'miou')} | mixed mIoU {f('mixed_cloud_0_100pct', 'miou')} "
        f"OA {f('mixed_cloud_0_100pct', 'oa')} ECE {f('mixed_cloud_0_100pct', 'ece')} | no SAR mIoU "
        f"{f('mixed_without_sar', 'miou')} | no optical mIoU {f('mixed_without_optical', 'miou')}"
    )


def windows(args: argparse.Namespace, n_patches: int, seed: int) -> SimulatedDataConfig:
    """Training or validation windows: ``n_patches`` cut from the simulated scenes of ``seed``."""
    return SimulatedDataConfig(
        n_patches=n_patches,
        patch_size=args.patch_size,
        cloud_cover=(0.0, 0.95),
        seed=seed,
        scene_size=args.scene_size,
        patches_per_scene=args.patches_per_scene,
        keep_clear=False,
    )


def val_config(args: argparse.Namespace) -> SimulatedDataConfig:
    """The validation windows: best-checkpoint choice and calibration."""
    return windows(args, args.n_val, 5_000 + args.seed)


def recalibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Refit the committed weights' temperatures on the validation windows, rescore, rewrite the sidecar."""
    path = (WEIGHTS_DIR / DEMO_WEIGHTS_STEM).with_suffix(".safetensors")
    model = from_pretrained(path)
    meta = read_metadata(path)
    cal = fit_calibration(
        model, SimulatedPatches(val_config(args)), description=f"validation data: {val_config(args).model_dump_json()}"
    )
    model.calibration = cal
    print(f"calibration {cal}", flush=True)
    metrics = score(model, eval_sets(args.seed, args.n_eval, args.patch_size, args.scene_size))
    print(f"{args.model}: {headline(metrics)}", flush=True)
    keep = {k: meta[k] for k in ("training_data", "training", "reproduce") if k in meta}
    evaluation = meta.get("metrics", {}).get("evaluation_data")
    save_pretrained(
        model, WEIGHTS_DIR / DEMO_WEIGHTS_STEM, {**keep, "metrics": {"evaluation_data": evaluation, **metrics}}
    )
    return {"calibration": cal.as_dict(), "metrics": metrics}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cloudlulc-net-tiny")
    ap.add_argument("--epochs", type=int, default=5, help="validations (best-on-validation picks one)")
    ap.add_argument("--steps-per-epoch", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=256, help="training windows: the inference tile size")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-val", type=int, default=24)
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--scene-size", type=int, default=768)
    ap.add_argument("--patches-per-scene", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument(
        "--norm-groups", type=int, default=0, help="0: per-pixel channel norm (tile-size independent), else GroupNorm"
    )
    ap.add_argument("--sar-dropout", type=float, default=0.25, help="rate of patches trained without SAR")
    ap.add_argument("--sar-mismatch", type=float, default=0.2, help="rate of another patch's radar on clear patches")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more thrash on a shared CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-weights", type=Path, help="also score these weights (e.g. the previous demo weights)")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/demo-weights"))
    ap.add_argument("--no-save", action="store_true", help="do not overwrite the committed weights")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out-dir (epochs may change)")
    ap.add_argument("--recalibrate", action="store_true", help="refit and rescore the committed weights' calibration")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.recalibrate:
        return recalibrate(args)

    dropout = ModalityDropout(sar=args.sar_dropout, optical=0.1, partial_optical=0.1, sar_mismatch=args.sar_mismatch)
    train_data = windows(args, args.n_train, args.seed)
    val_data = val_config(args)
    steps = args.epochs * args.steps_per_epoch
    description = TRAIN_DESCRIPTION.format(
        n=args.n_train,
        p=args.patch_size,
        s=args.scene_size,
        scenes=-(-args.n_train // args.patches_per_scene),
        seed=args.seed,
        ds=dropout.sar,
        do=dropout.optical,
        dp=dropout.partial_optical,
        dm=dropout.sar_mismatch,
        steps=steps,
        bs=args.batch_size,
        epochs=args.epochs,
    )
    cfg = TrainConfig(
        model=args.model,
        model_overrides={"norm_groups": args.norm_groups},
        train_data=train_data,
        val_data=val_data,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=max(10, steps // 30),
        modality_dropout=dropout,
        class_weights="inverse_sqrt",
        threads=args.threads,
        seed=args.seed,
        device="cpu",
        out_dir=args.out_dir / args.model,
        progress=sys.stderr.isatty(),
        tensorboard=False,
        data_description=description,
        resume=args.resume,
    )
    t0 = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - t0
    chosen = result.best_path or result.weights_path
    assert chosen is not None
    model = from_pretrained(chosen)
    print(
        f"trained {steps} steps in {seconds:.0f} s; chosen {chosen.name}; calibration {model.calibration}", flush=True
    )
    sets = eval_sets(args.seed, args.n_eval, args.patch_size, args.scene_size)
    metrics = score(model, sets)
    print(f"{args.model}: {headline(metrics)}", flush=True)
    results: dict[str, Any] = {
        "train_seconds": round(seconds, 1),
        "steps": steps,
        "chosen": chosen.name,
        "metrics": metrics,
    }
    if args.compare_weights is not None:
        previous = score(from_pretrained(args.compare_weights), sets)
        results["compare"] = {"weights": str(args.compare_weights), "metrics": previous}
        print(f"{args.compare_weights.name}: {headline(previous)}", flush=True)
    if not args.no_save:
        save_pretrained(
            model,
            WEIGHTS_DIR / DEMO_WEIGHTS_STEM,
            {
                "training_data": description,
                "metrics": {
                    "evaluation_data": (
                        f"SIMULATED held-out windows {args.patch_size}x{args.patch_size} cut from "
                        f"{args.scene_size}x{args.scene_size} scenes (seeds disjoint from training and validation)"
                    ),
                    **metrics,
                },
                "training": {"steps": steps, "chosen": chosen.name, "train_seconds": round(seconds, 1)},
                "reproduce": "python scripts/train_demo_weights.py",
            },
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
