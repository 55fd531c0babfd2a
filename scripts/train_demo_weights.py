"""Reproduce the committed demo weights and the comparison table in docs/model.md.

Trains the tiny CloudLULC-Net and the optical-only and early-fusion U-Net baselines on the same
SIMULATED patches (cloudlulc.simulate, cloud cover 0-95 %), with the same loop, steps and seed, then
evaluates all three on held-out simulated patches: one set under heavy cloud (>= 60 %) and one with
cloud cover spread over 0-100 % (reported per cloud bin). CPU only, one thread: about 17 minutes
on a shared 2-core machine (CloudLULC-Net ~8 min, each baseline ~4-5 min).

    .venv/bin/python scripts/train_demo_weights.py            # writes cloudlulc/weights/cloudlulc-net-tiny-sim.*
    .venv/bin/python scripts/train_demo_weights.py --steps 60 --out-dir /tmp/demo --no-save   # smoke run

THE DATA IS SIMULATED: these weights demonstrate the pipeline; they are not a real-world LULC model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cloudlulc.model.io import DEMO_WEIGHTS_STEM, WEIGHTS_DIR, save_pretrained
from cloudlulc.training import SimulatedDataConfig, SimulatedPatches, TrainConfig, evaluate_model, train

MODELS = ("cloudlulc-net-tiny", "unet-optical", "unet-early-fusion")
TRAIN_DESCRIPTION = (
    "SIMULATED data only: {n} patches of {p}x{p} px cut from {scenes} scenes of {s}x{s} px rendered by "
    "cloudlulc.simulate.simulate_scene (seed {seed}, cloud cover uniform in [{c0}, {c1}] per scene, crop season "
    "uniform in [0.2, 0.9]), "
    "flip/rot90 augmentation, {steps} AdamW steps of batch {bs}, CPU. Not a real-world model."
)


def summarise(metrics: dict) -> dict:
    t = metrics["total"]
    return {"miou": t["miou"], "oa": t["oa"], "macro_f1": t["macro_f1"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=768)
    ap.add_argument("--n-eval", type=int, default=48)
    ap.add_argument(
        "--scene-size",
        type=int,
        default=768,
        help="patches are cut from scenes this large, so they look like pieces of a real tile",
    )
    ap.add_argument("--patches-per-scene", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more thrash on a shared CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--out-dir", type=Path, default=Path("runs/demo-weights"))
    ap.add_argument("--no-save", action="store_true", help="do not overwrite the committed weights")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    scenes = {"scene_size": args.scene_size, "patches_per_scene": args.patches_per_scene}
    train_data = SimulatedDataConfig(
        n_patches=args.n_train, patch_size=args.patch_size, cloud_cover=(0.0, 0.95), seed=args.seed, **scenes
    )
    eval_scenes = {"scene_size": args.scene_size, "patches_per_scene": 4}
    heavy = SimulatedPatches(
        SimulatedDataConfig(
            n_patches=args.n_eval, patch_size=128, cloud_cover=(0.6, 0.95), seed=10_000 + args.seed, **eval_scenes
        )
    )
    mixed = SimulatedPatches(
        SimulatedDataConfig(
            n_patches=args.n_eval, patch_size=128, cloud_cover=(0.0, 1.0), seed=20_000 + args.seed, **eval_scenes
        )
    )
    description = TRAIN_DESCRIPTION.format(
        n=args.n_train,
        p=args.patch_size,
        s=args.scene_size,
        scenes=-(-args.n_train // args.patches_per_scene),
        seed=args.seed,
        c0=0.0,
        c1=0.95,
        steps=args.steps,
        bs=args.batch_size,
    )
    results: dict[str, dict] = {}
    for name in args.models:
        cfg = TrainConfig(
            model=name,
            train_data=train_data,
            epochs=1,
            steps_per_epoch=args.steps,
            batch_size=args.batch_size,
            warmup_steps=max(10, args.steps // 20),
            threads=args.threads,
            seed=args.seed,
            device="cpu",
            out_dir=args.out_dir / name,
            progress=sys.stderr.isatty(),
            data_description=description,
        )
        t0 = time.perf_counter()
        result = train(cfg, train_dataset=SimulatedPatches(train_data))
        seconds = time.perf_counter() - t0
        m_heavy = evaluate_model(result.model, heavy, batch_size=8)
        m_mixed = evaluate_model(result.model, mixed, batch_size=8)
        results[name] = {
            "train_seconds": round(seconds, 1),
            "n_parameters": sum(p.numel() for p in result.model.parameters()),
            "heavy_cloud": m_heavy,
            "mixed_cloud": m_mixed,
        }
        print(f"{name}: {seconds:.0f} s, heavy-cloud {summarise(m_heavy)}, mixed {summarise(m_mixed)}", flush=True)
        if name == "cloudlulc-net-tiny" and not args.no_save:
            save_pretrained(
                result.model,
                WEIGHTS_DIR / DEMO_WEIGHTS_STEM,
                {
                    "training_data": description,
                    "metrics": {
                        "evaluation_data": f"SIMULATED held-out patches 128x128 cut from {args.scene_size}x{args.scene_size} scenes (seeds disjoint from training)",  # noqa: E501
                        "heavy_cloud_60_95pct": m_heavy,
                        "mixed_cloud_0_100pct": m_mixed,
                    },
                    "reproduce": "python scripts/train_demo_weights.py",
                },
            )

    print()
    print(
        "| model | params | mIoU, cloud >= 60 % | OA, cloud >= 60 % | mIoU 0-10 % | mIoU 10-30 % | mIoU 30-60 % | mIoU 60-100 % | train s |"  # noqa: E501
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        h, per_bin = r["heavy_cloud"]["total"], r["mixed_cloud"]["per_bin"]
        bins = " | ".join(f"{per_bin[b]['miou']:.3f}" if per_bin[b]["miou"] is not None else "-" for b in per_bin)
        print(
            f"| {name} | {r['n_parameters']:,} | {h['miou']:.3f} | {h['oa']:.3f} | {bins} | {r['train_seconds']:.0f} |"
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
