"""Training-side calibration: ECE, modality dropout, class weights, and temperatures fitted on validation data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cloudlulc.model import build_model, from_pretrained
from cloudlulc.model.calibration import Calibration, scale_logits
from cloudlulc.training import SimulatedDataConfig, SimulatedPatches, TrainConfig, evaluate_model, prepare_batch, train
from cloudlulc.training.calibrate import collect_logits, fit_calibration, fit_temperature
from cloudlulc.training.config import ModalityDropout
from cloudlulc.training.data import batch_cloud_fraction, drop_modalities, remove_modality
from cloudlulc.training.loop import class_weights_of
from cloudlulc.training.metrics import ConfusionMatrix, expected_calibration_error


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_otherwise():
    rng = np.random.default_rng(0)
    conf = np.full(10_000, 0.75)
    correct = rng.random(10_000) < 0.75
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=0.02)
    assert expected_calibration_error(np.full(100, 0.95), np.zeros(100, bool)) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([], bool))


def test_confusion_matrix_reports_ece_per_cloud_bin():
    cm = ConfusionMatrix()
    pred = np.zeros((2, 4, 4), np.int64)
    target = np.zeros((2, 4, 4), np.int64)
    target[1, :2] = 1  # half of the cloudy patch is wrong
    conf = np.full((2, 4, 4), 0.9)
    cm.update(pred, target, [0.0, 0.8], conf)
    out = cm.compute()
    assert out["per_bin"]["0-10"]["ece"] == pytest.approx(0.1)
    assert out["per_bin"]["60-100"]["ece"] == pytest.approx(0.4)
    assert out["per_bin"]["10-30"]["ece"] is None
    assert out["total"]["ece"] == pytest.approx(0.9 - 24 / 32)  # one confidence bin over both patches


def test_modality_dropout_removes_one_input_as_inference_does_and_keeps_labels():
    model = build_model("cloudlulc-net-tiny")
    data = SimulatedPatches(n_patches=8, patch_size=32, seed=1)
    raw = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("optical", "sar", "label", "cloud")}
    batch = prepare_batch(raw, model, torch.device("cpu"))
    torch.manual_seed(0)
    out = drop_modalities(batch, model, ModalityDropout(sar=0.3, optical=0.3, partial_optical=0.3))
    opt_mean = torch.tensor(model.config.optical_mean).reshape(-1, 1)
    sar_mean = torch.tensor(model.config.sar_mean).reshape(-1, 1)
    kinds = set()
    for i in range(8):
        no_sar = torch.equal(out["sar"][i].reshape(2, -1), sar_mean.expand(2, 32 * 32))
        missing = out["optical_missing"][i]
        filled = out["optical"][i][:, missing]
        assert torch.allclose(filled, opt_mean.expand_as(filled))
        assert not (no_sar and missing.all()), "never both inputs"
        assert (out["cloud"][i][missing] == 1).all()
        assert bool(out["sar_missing"][i].all()) == no_sar and bool(out["sar_missing"][i].any()) == no_sar
        kinds.add("sar" if no_sar else "optical" if missing.all() else "partial" if missing.any() else "both")
    assert torch.equal(out["label"], batch["label"])
    assert {"sar", "optical", "partial"} <= kinds
    gone = remove_modality(batch, model, "optical")
    assert gone["optical_missing"].all() and torch.equal(gone["sar"], batch["sar"])
    assert not gone["sar_missing"].any()
    no_radar = remove_modality(batch, model, "sar")
    assert no_radar["sar_missing"].all() and not no_radar["optical_missing"].any()
    assert torch.equal(no_radar["optical"], batch["optical"])


def test_inverse_sqrt_class_weights_favour_rare_classes():
    data = SimulatedPatches(n_patches=4, patch_size=64, seed=2)
    w = class_weights_of(TrainConfig(class_weights="inverse_sqrt"), data, 6)
    labels = torch.cat([data[i]["label"].reshape(-1) for i in range(4)])
    freq = torch.bincount(labels, minlength=6).float() / labels.numel()
    assert w is not None
    rare, common = int(freq[freq > 0].argmin()), int(freq.argmax())
    assert w[rare] > w[common]
    assert float((w * freq).sum()) == pytest.approx(1.0, rel=1e-4)
    assert class_weights_of(TrainConfig(), data, 6) is None


def test_temperature_fit_recovers_a_known_temperature():
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20_000, 6, generator=gen) * 2
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    t = fit_temperature(true_logits * 3.0, labels)  # over-confident by a factor 3
    assert t == pytest.approx(3.0, rel=0.1)


@pytest.mark.slow
def test_training_fits_the_temperatures_and_lowers_ece_on_held_out_data(tmp_path):
    train_data = SimulatedDataConfig(n_patches=32, patch_size=64, seed=3, keep_clear=False)
    val_data = SimulatedDataConfig(n_patches=12, patch_size=64, seed=4, keep_clear=False)
    cfg = TrainConfig(
        model="unet-early-fusion",
        train_data=train_data,
        val_data=val_data,
        steps_per_epoch=40,
        epochs=1,
        batch_size=4,
        modality_dropout=ModalityDropout(sar=0.2, optical=0.2),
        threads=1,
        device="cpu",
        out_dir=tmp_path,
        progress=False,
        tensorboard=False,
    )
    result = train(cfg)
    doc = json.loads((tmp_path / "last.json").read_text())
    cal = Calibration.from_dict(doc["calibration"])
    assert cal.temperature_optical_missing is not None and cal.fitted["optical_missing"]["n_pixels"] > 0
    assert cal.temperature_sar_missing is not None and cal.fitted["sar_missing"]["n_pixels"] > 0
    assert result.model.calibration == cal
    loaded = from_pretrained(tmp_path / "last.safetensors")
    assert loaded.calibration == cal
    # held-out patches (other seed): calibrated confidence has lower ECE than the raw softmax
    held_out = SimulatedPatches(n_patches=12, patch_size=64, seed=5)
    loaded.calibration = Calibration()
    before = evaluate_model(loaded, held_out)["total"]["ece"]
    loaded.calibration = cal
    after = evaluate_model(loaded, held_out)["total"]["ece"]
    assert after < before, (cal.temperature, before, after)
    # the optical-missing temperature is fitted on inputs without optical, as inference feeds them
    logits, labels = collect_logits(loaded, held_out, missing="optical")
    assert logits.shape[0] == labels.shape[0] > 0
    refit = fit_calibration(loaded, held_out, description="held-out patches")
    for key in ("optical_present", "optical_missing", "sar_missing"):
        part = refit.fitted[key]
        assert part["n_pixels"] == labels.shape[0] and 0 < part["temperature"] and part["ece_after"] is not None
    assert refit.fitted["data"] == "held-out patches"


def test_sar_mismatch_swaps_radar_only_on_nearly_clear_patches():
    model = build_model("cloudlulc-net-tiny")
    data = SimulatedPatches(n_patches=6, patch_size=32, cloud_cover=(0.0, 0.0), seed=3)
    raw = {k: torch.stack([data[i][k] for i in range(6)]) for k in ("optical", "sar", "label", "cloud")}
    batch = prepare_batch(raw, model, torch.device("cpu"))
    out = drop_modalities(batch, model, ModalityDropout(sar_mismatch=1.0))
    clear = (batch_cloud_fraction(batch) < 0.1)[:, None, None, None]  # SCL errors may flag a bright patch
    assert clear.sum() >= 3
    expected = torch.where(clear, torch.roll(batch["sar"], 1, dims=0), batch["sar"])
    assert torch.equal(out["sar"], expected)  # every nearly clear patch: another patch's radar
    assert torch.equal(out["optical"], batch["optical"]) and torch.equal(out["label"], batch["label"])
    cloudy = dict(batch, cloud=torch.ones_like(batch["cloud"]))
    kept = drop_modalities(cloudy, model, ModalityDropout(sar_mismatch=1.0))
    assert torch.equal(kept["sar"], batch["sar"])  # under cloud the radar is what is left: never swapped


def test_each_pixel_takes_the_temperature_of_the_inputs_it_has():
    cal = Calibration(temperature=2.0, temperature_optical_missing=4.0, temperature_sar_missing=0.5)
    logits = torch.ones(1, 6, 2, 2)
    optical_missing = torch.tensor([[[True, False], [False, False]]])
    sar_missing = torch.tensor([[[True, True], [False, False]]])
    t = 1 / scale_logits(logits, cal, optical_missing, sar_missing)[0, 0]
    assert t.tolist() == [[4.0, 0.5], [2.0, 2.0]]  # no optical wins over no radar
    assert (1 / scale_logits(logits, cal, None, None)[0, 0] == 2.0).all()
    assert Calibration.from_dict(cal.as_dict()) == cal
    old_sidecar = {"method": "temperature", "temperature": 2.0, "temperature_optical_missing": 4.0}
    assert Calibration.from_dict(old_sidecar).sar_missing == 2.0  # weights fitted before: fused temperature
