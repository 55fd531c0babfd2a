"""Cloud-stratified confusion matrix against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cloudlulc.training.metrics import CLOUD_BINS, ConfusionMatrix


def test_matches_hand_computed_confusion_matrix():
    cm = ConfusionMatrix(num_classes=3, class_names=["a", "b", "c"])
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])  # the 255 pixel is ignored whatever is predicted
    cm.update(pred, target, 0.05)
    out = cm.compute()
    # rows = target, cols = prediction
    assert out["total"]["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    t = out["total"]
    assert t["n_pixels"] == 5 and t["n_patches"] == 1
    assert t["oa"] == pytest.approx(4 / 5)
    # IoU: a 1/(1+1+0)=0.5, b 2/(2+1)=2/3, c 1
    assert t["iou"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1.0})
    # F1: a 2*1/(2+1)=2/3, b 2*2/(2+3)=0.8, c 1
    assert t["f1"] == pytest.approx({"a": 2 / 3, "b": 0.8, "c": 1.0})
    assert t["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert t["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert out["per_bin"]["0-10"]["confusion"] == t["confusion"]
    assert out["per_bin"]["60-100"]["n_pixels"] == 0 and out["per_bin"]["60-100"]["miou"] is None


def test_patches_go_to_their_cloud_bin_and_total_sums_bins():
    cm = ConfusionMatrix()
    rng = np.random.default_rng(0)
    fractions = [0.0, 0.1, 0.29, 0.3, 0.59, 0.6, 1.0]
    expected_bins = ["0-10", "10-30", "10-30", "30-60", "30-60", "60-100", "60-100"]
    pred = torch.from_numpy(rng.integers(0, 6, (len(fractions), 8, 8)))
    target = torch.from_numpy(rng.integers(0, 6, (len(fractions), 8, 8)))
    cm.update(pred, target, torch.tensor(fractions))  # torch inputs, one fraction per patch
    out = cm.compute()
    assert out["bins"] == [f"{lo}-{hi}" for lo, hi in CLOUD_BINS]
    counts = {b: out["per_bin"][b]["n_patches"] for b in out["bins"]}
    assert counts == {b: expected_bins.count(b) for b in out["bins"]}
    summed = sum(np.array(out["per_bin"][b]["confusion"]) for b in out["bins"])
    assert (summed == np.array(out["total"]["confusion"])).all()
    assert out["total"]["n_pixels"] == len(fractions) * 64


def test_absent_class_is_none_and_output_is_strict_json():
    cm = ConfusionMatrix()
    cm.update(np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8), 0.5)
    out = cm.compute()
    json.dumps(out, allow_nan=False)
    assert out["total"]["iou"]["water"] == 1.0 and out["total"]["iou"]["forest"] is None
    assert out["total"]["miou"] == 1.0  # only defined classes are averaged


def test_invalid_inputs_are_rejected():
    cm = ConfusionMatrix()
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 2), int), 35.0)
    with pytest.raises(ValueError, match="outside 0..5"):
        cm.update(np.zeros((2, 2), int), np.full((2, 2), 7), 0.1)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int), 0.1)
