"""Training loop: resume, NaN handling, aligned augmentation, baselines in the same loop."""

from __future__ import annotations

import json

import numpy as np
import torch

from cloudlulc.classes import S2_BANDS
from cloudlulc.model import from_pretrained
from cloudlulc.training import (
    SimulatedDataConfig,
    SimulatedPatches,
    TrainConfig,
    augment,
    batch_cloud_fraction,
    prepare_batch,
    train,
)

torch.set_num_threads(1)  # more threads thrash on a shared, loaded CPU
SMALL = dict(widths=(8, 16, 16, 32), latent_dim=32, decoder_width=16, usmt_heads=4)


def _cfg(tmp_path, **kw):
    base = dict(
        model="cloudlulc-net-tiny",
        model_overrides=SMALL,
        train_data=SimulatedDataConfig(n_patches=8, patch_size=32, seed=0),
        val_data=SimulatedDataConfig(n_patches=4, patch_size=32, seed=9),
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        device="cpu",
        out_dir=tmp_path,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_simulated_patches_are_seeded_and_well_typed():
    a = SimulatedPatches(n_patches=2, patch_size=32, seed=4)[1]
    b = SimulatedPatches(n_patches=2, patch_size=32, seed=4, cache=False)[1]
    assert torch.equal(a["optical"], b["optical"]) and torch.equal(a["label"], b["label"])
    assert a["optical"].shape == (12, 32, 32) and a["optical"].dtype == torch.float32
    assert a["sar"].shape == (2, 32, 32) and a["label"].dtype == torch.int64
    assert a["cloud"].dtype == torch.uint8 and a["optical_clear"].shape == (12, 32, 32)
    assert float(a["cloud_fraction"]) == float(a["cloud"].float().mean())


def test_patches_cut_from_larger_scenes_are_aligned_and_seeded():
    cfg = dict(n_patches=6, patch_size=32, scene_size=96, patches_per_scene=3, cloud_cover=(0.3, 0.6), seed=2)
    cached = SimulatedPatches(**cfg)
    fresh = SimulatedPatches(**cfg, cache=False)
    samples = [cached[i] for i in (5, 0, 1, 2, 3, 4)]  # any order: a scene is rendered once for all its patches
    for i, s in zip((5, 0, 1, 2, 3, 4), samples):
        assert torch.equal(s["optical"], fresh[i]["optical"]) and torch.equal(s["label"], fresh[i]["label"])
        assert s["optical"].shape == (12, 32, 32) and s["label"].shape == (32, 32)
        # one window for every layer: on cloud-free pixels the observed NIR follows the clear surface
        # (haze only adds a smooth path term; a shifted window would not correlate)
        clear = s["cloud"] == 0
        nir = S2_BANDS.index("B08")
        r = np.corrcoef(s["optical"][nir][clear].numpy(), s["optical_clear"][nir][clear].numpy())[0, 1]
        assert clear.sum() > 20 and r > 0.9, float(r)
    # patches of one scene are different windows of it
    assert not torch.equal(cached[0]["label"], cached[1]["label"])


def test_scene_smaller_than_patch_is_refused():
    import pytest

    with pytest.raises(ValueError, match="scene_size 16 is smaller than patch_size 32"):
        SimulatedDataConfig(patch_size=32, scene_size=16)


def test_train_writes_loadable_checkpoints_and_resumes(tmp_path):
    first = train(_cfg(tmp_path, epochs=1))
    assert len(first.history) == 1
    resumed = train(_cfg(tmp_path, epochs=2, resume=True))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and [r["epoch"] for r in resumed.history] == [0, 1]
    assert lines[1]["step"] == 6  # the resumed run continued the step count
    assert {"ce", "anchor", "reliability", "total"} <= set(lines[1]["train"])
    assert 0 <= lines[1]["val"]["total"]["miou"] <= 1
    loaded = from_pretrained(tmp_path / "last.safetensors")
    sd = resumed.model.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())
    # optimizer state is plain tensors/containers: loadable without unpickling arbitrary objects
    state = torch.load(tmp_path / "last-trainer.pt", weights_only=True)
    assert state["step"] == 6 and state["epoch"] == 1


def test_same_seed_same_result(tmp_path):
    a = train(_cfg(tmp_path / "a", epochs=1, val_data=None)).model.state_dict()
    b = train(_cfg(tmp_path / "b", epochs=1, val_data=None)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_baselines_train_in_the_same_loop(tmp_path):
    r = train(_cfg(tmp_path / "r", model="reconstruct-then-segment", model_overrides={}, epochs=1, steps_per_epoch=2))
    assert "reconstruction" in r.history[0]["train"]
    u = train(_cfg(tmp_path / "u", model="unet-sar", model_overrides={}, epochs=1, steps_per_epoch=2))
    assert set(u.history[0]["train"]) == {"ce", "total"}


def test_nan_inputs_are_filled_and_their_labels_ignored():
    from cloudlulc.model import build_model

    model = build_model("cloudlulc-net-tiny", **SMALL)
    ds = SimulatedPatches(n_patches=2, patch_size=32, seed=2)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    batch = {k: v.clone() for k, v in batch.items()}
    batch["optical"][0, 3, 4, 5] = float("nan")
    batch["sar"][1, 0, 10, 11] = float("nan")
    out = prepare_batch(batch, model, torch.device("cpu"))
    assert torch.isfinite(out["optical"]).all() and torch.isfinite(out["sar"]).all()
    assert out["optical"][0, 3, 4, 5] == model.config.optical_mean[3]
    assert out["sar"][1, 0, 10, 11] == model.config.sar_mean[0]
    assert out["label"][0, 4, 5] == 255 and out["label"][1, 10, 11] == 255
    assert (out["label"] != 255).sum() == 2 * 32 * 32 - 2
    cf = batch_cloud_fraction(out)
    assert torch.allclose(cf, batch["cloud"].float().mean((1, 2)))


def test_augmentation_keeps_layers_aligned():
    h = w = 8
    label = torch.arange(h * w).reshape(h, w) % 6
    sample = {
        "optical": label.float()[None].repeat(12, 1, 1),
        "sar": (label.float() * 2)[None].repeat(2, 1, 1),
        "label": label,
        "cloud": (label % 2).to(torch.uint8),
        "cloud_fraction": torch.tensor(0.5),
    }
    seen = set()
    for seed in range(12):
        out = augment(sample, np.random.default_rng(seed))
        assert torch.equal(out["optical"][5], out["label"].float())
        assert torch.equal(out["sar"][1], out["label"].float() * 2)
        assert torch.equal(out["cloud"], (out["label"] % 2).to(torch.uint8))
        seen.add(tuple(out["label"].flatten().tolist()))
    assert len(seen) > 3  # it does transform


def test_a_run_logs_each_step_draws_the_curve_and_keeps_the_best_weights(tmp_path):
    from cloudlulc.training import data_fingerprint

    cfg = _cfg(tmp_path, epochs=2, steps_per_epoch=2, tensorboard=False)
    result = train(cfg)
    lines = (tmp_path / "train_log.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == ["step", "epoch", "lr", "grad_norm", "seconds", "total"]
    assert [x.split(",")[:2] for x in lines[1:]] == [["1", "0"], ["2", "0"], ["3", "1"], ["4", "1"]]
    steps = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [s["lr"] for s in steps] == sorted(s["lr"] for s in steps) and {"ce", "anchor", "total"} <= set(steps[0])
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = [h["val"]["total"]["miou"] for h in result.history]
    assert set(result.history[0]["val"]["per_bin"]) == {"0-10", "10-30", "30-60", "60-100"}
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["step"] == 2 * (scores.index(max(scores)) + 1) and best["best"]["score"] == max(scores)
    assert best["data_fingerprint"] == data_fingerprint(cfg.train_data)
    assert best["seeds"] == {"train": 0, "data": 0} and best["world_size"] == 1 and best["global_batch_size"] == 4
    assert best["metrics"]["total"]["miou"] == max(scores)
    assert result.best_path == tmp_path / "best.safetensors"
    from_pretrained(result.best_path)  # a loadable weights file, sha256 checked


def test_gradient_accumulation_gives_the_whole_batch_step(tmp_path):
    """Two micro-batches of 2 take the step one batch of 4 takes (no ignored pixel: equal weights).

    Without the anchor term: its EMA anchors move once per forward, so with accumulation they move
    once per micro-batch (docs/training.md).
    """
    rows = []
    for name, acc in (("one", 1), ("two", 2)):
        cfg = _cfg(tmp_path / name, epochs=1, steps_per_epoch=1, val_data=None, accumulate_steps=acc, anchor_weight=0)
        train(cfg)
        rows.append(json.loads((tmp_path / name / "train_log.jsonl").read_text().splitlines()[0]))
    for k in ("total", "ce", "reliability", "grad_norm"):
        assert abs(rows[0][k] - rows[1][k]) <= 1e-5 * abs(rows[0][k]), (k, rows)


def test_data_configs_are_told_apart_by_kind():
    from cloudlulc.training import GeoTiffDataConfig, ZarrDataConfig

    cfg = TrainConfig.model_validate(
        {
            "train_data": {"n_patches": 4},  # no kind: simulated, as before
            "val_data": {"kind": "zarr", "path": "/data/set", "split": "val"},
        }
    )
    assert isinstance(cfg.train_data, SimulatedDataConfig) and isinstance(cfg.val_data, ZarrDataConfig)
    g = TrainConfig.model_validate({"train_data": {"kind": "geotiff", "root": "/p", "label_map": {"1": 0}}})
    assert isinstance(g.train_data, GeoTiffDataConfig) and g.train_data.label_map == {1: 0}
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="zarr"):
        TrainConfig.model_validate({"train_data": {"kind": "zarr"}})  # the store path is required
    with pytest.raises(ValueError, match="batch_size 6 does not split"):
        train(TrainConfig(batch_size=6, accumulate_steps=4, device="cpu", progress=False))
