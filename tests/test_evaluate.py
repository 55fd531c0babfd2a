"""Evaluation path: metrics against hand-computed values, NaN handling, stride padding, weights loading,
reports (JSON, Markdown, HTML with embedded PNGs) and the cloud sweep on SIMULATED scenes."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from cloudlulc.classes import NUM_CLASSES, S1_BANDS, S2_BANDS
from cloudlulc.evaluation import CloudSweepSpec, EvaluationParams, ModelSpec, evaluate, evaluate_model, run_evaluation
from cloudlulc.evaluation.cloud_sweep import run_cloud_sweep
from cloudlulc.evaluation.simulated import SimulatedSplit
from cloudlulc.model import ModelOutput, build_model, save_pretrained

torch.set_num_threads(1)
B08 = S2_BANDS.index("B08")


class EncodedPrediction(nn.Module):
    """A deterministic "model": the class it predicts is written in optical band 0 of the input.

    It refuses non-finite inputs (as the real models do) and inputs not divisible by its stride, so a
    test passing through it also checks that evaluation fills NaN and pads to the stride.
    """

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.seen_shapes: list[tuple[int, ...]] = []

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        assert torch.isfinite(optical).all() and torch.isfinite(sar).all(), "evaluation must fill NaN inputs"
        assert optical.shape[-1] % self.stride == 0 and optical.shape[-2] % self.stride == 0
        self.seen_shapes.append(tuple(optical.shape))
        cls = optical[:, 0].round().long().clamp(0, NUM_CLASSES - 1)
        logits = torch.nn.functional.one_hot(cls, NUM_CLASSES).permute(0, 3, 1, 2).float() * 5.0
        return ModelOutput(logits=logits)


class ListDataset(Dataset):
    def __init__(self, samples: list[dict]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


def _sample(pred: np.ndarray, target: np.ndarray, cloud: np.ndarray, nan_at: tuple[int, int] | None = None) -> dict:
    h, w = target.shape
    optical = np.full((len(S2_BANDS), h, w), 0.1, np.float32)
    optical[0] = pred
    if nan_at is not None:
        optical[3][nan_at] = np.nan
    return {
        "optical": optical,
        "sar": np.full((len(S1_BANDS), h, w), -12.0, np.float32),
        "label": target.astype(np.int64),
        "cloud": cloud.astype(np.uint8),
    }


def hand_dataset() -> ListDataset:
    """Two 4x4 patches whose confusion matrix is worked out by hand below."""
    # patch 1, clear: top half water (0) all right; bottom half forest (1), 2 of 8 predicted water.
    t1 = np.array([[0] * 4] * 2 + [[1] * 4] * 2)
    p1 = t1.copy()
    p1[3, 0] = p1[3, 1] = 0
    c1 = np.zeros((4, 4))
    # patch 2: grassland (2) everywhere; one label ignored (255), one pixel with a NaN input;
    # 4 of the 14 scored pixels predicted forest. Cloud on the top half: 8 cloudy of 14 scored = 57 %.
    t2 = np.full((4, 4), 2)
    t2[3, 3] = 255
    p2 = np.full((4, 4), 2)
    p2[0, :] = 1
    c2 = np.zeros((4, 4))
    c2[:2] = 1
    return ListDataset([_sample(p1, t1, c1), _sample(p2, t2, c2, nan_at=(3, 2))])


@pytest.mark.parametrize("batch_size", [1, 2])
def test_metrics_through_evaluation_path_match_hand_computed(batch_size: int) -> None:
    res = evaluate({"encoded": EncodedPrediction()}, hand_dataset(), batch_size=batch_size, device="cpu")["encoded"]
    total = res["total"]
    # confusion by hand: t0->p0 8 | t1->p0 2, t1->p1 6 | t2->p1 4, t2->p2 10 ; 30 scored pixels
    expected_cm = np.zeros((NUM_CLASSES, NUM_CLASSES), int)
    expected_cm[0, 0], expected_cm[1, 0], expected_cm[1, 1], expected_cm[2, 1], expected_cm[2, 2] = 8, 2, 6, 4, 10
    assert np.array_equal(np.asarray(total["confusion"]), expected_cm)
    assert total["n_pixels"] == 30 and total["n_patches"] == 2
    assert total["oa"] == pytest.approx(24 / 30)
    iou = [8 / 10, 6 / 12, 10 / 14]  # tp / (support + predicted - tp)
    f1 = [16 / 18, 12 / 18, 20 / 24]  # 2 tp / (support + predicted)
    assert [total["iou"][c] for c in ("water", "forest", "grassland")] == pytest.approx(iou)
    assert [total["f1"][c] for c in ("water", "forest", "grassland")] == pytest.approx(f1)
    assert total["iou"]["barren"] is None  # absent from target and prediction: undefined, not 0
    assert total["miou"] == pytest.approx(sum(iou) / 3)
    assert total["macro_f1"] == pytest.approx(sum(f1) / 3)
    # bins: patch 1 at 0 % cloud, patch 2 at 8/14 = 57 % cloud
    assert res["cloud_known"] is True
    assert res["per_bin"]["0-10"]["oa"] == pytest.approx(14 / 16)
    assert res["per_bin"]["30-60"]["oa"] == pytest.approx(10 / 14)
    assert res["per_bin"]["10-30"]["n_pixels"] == res["per_bin"]["60-100"]["n_pixels"] == 0


def test_nan_policy_all_scores_partially_nan_pixels() -> None:
    ds = hand_dataset()
    any_ = evaluate_model(EncodedPrediction(), ds, device="cpu", nan_policy="any")
    all_ = evaluate_model(EncodedPrediction(), ds, device="cpu", nan_policy="all")
    # the pixel with one NaN band is dropped under "any" and scored (filled) under "all"
    assert all_["total"]["n_pixels"] == any_["total"]["n_pixels"] + 1


def test_inputs_are_padded_to_the_model_stride_and_cropped_back() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(0, NUM_CLASSES, (10, 14))
    model = EncodedPrediction(stride=8)
    res = evaluate_model(model, ListDataset([_sample(t, t, np.zeros_like(t))]), device="cpu")
    assert model.seen_shapes[0][-2:] == (16, 16)
    assert res["total"]["n_pixels"] == 140 and res["total"]["oa"] == 1.0


def test_nan_inputs_are_filled_with_the_model_band_means() -> None:
    from cloudlulc.evaluation.runner import fill_values, prepare_batch

    model = build_model("unet-optical", widths=(8, 16))
    sample = hand_dataset()[1]
    batch = {k: torch.as_tensor(v)[None] for k, v in sample.items()}
    optical, _, target, frac = prepare_batch(batch, "any", fill_values(model))
    assert optical[0, 3, 3, 2] == pytest.approx(model.config.optical_mean[3])
    assert target[0, 3, 2] == 255 and target[0, 3, 3] == 255 and int((target != 255).sum()) == 14
    assert frac[0] == pytest.approx(8 / 14)


def test_weights_file_and_in_memory_model_score_the_same(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("unet-early-fusion", widths=(8, 16))
    st_path, _ = save_pretrained(model, tmp_path / "tiny", {"training_data": "none (untrained, test)"})
    split = SimulatedSplit(2, (32, 32), [0.0, 0.5], seed=7)
    from_memory = evaluate_model(model, split, device="cpu")
    from_file = evaluate([ModelSpec(name="file", weights=st_path)], split, device="cpu")["file"]
    assert from_file["total"]["confusion"] == from_memory["total"]["confusion"]
    from cloudlulc.model.io import sha256_file

    assert from_file["model"]["weights_sha256"] == sha256_file(st_path)
    assert from_file["model"]["n_parameters"] == sum(p.numel() for p in model.parameters())


def test_samples_with_unknown_cloud_count_in_total_but_in_no_bin() -> None:
    ds = hand_dataset()
    ds.samples[1]["cloud"][:] = 255  # patch 2's mask unknown (as in the published GeoTIFF set)
    res = evaluate_model(EncodedPrediction(), ds, device="cpu", batch_size=2)
    assert res["total"]["n_pixels"] == 30 and res["n_patches_unknown_cloud"] == 1
    assert res["per_bin"]["0-10"]["n_pixels"] == 16 and res["per_bin"]["30-60"]["n_pixels"] == 0
    assert res["cloud_known"] is True


def test_samples_without_cloud_mask_report_no_bins(tmp_path) -> None:
    ds = hand_dataset()
    for s in ds.samples:
        del s["cloud"]
    res = evaluate_model(EncodedPrediction(), ds, device="cpu")
    assert res["cloud_known"] is False and res["total"]["n_pixels"] == 30
    assert all(res["per_bin"][b]["n_pixels"] == 0 for b in res["bins"])
    from cloudlulc.evaluation.report import write_reports

    paths = write_reports(tmp_path, models={"encoded": res})
    assert "cloud-cover bin" not in paths["markdown"].read_text().split("## ")[1].split("\n")[0]
    assert "no cloud mask" in paths["markdown"].read_text()


def test_params_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="unique"):
        EvaluationParams(models=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="needs `path`"):
        EvaluationParams(models=[{"name": "a"}], dataset={"kind": "zarr"})
    assert ModelSpec(name="unet-sar").model == "unet-sar"
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvaluationParams()
    products_only = EvaluationParams(products={"reference": "truth.tif"})
    assert products_only.dataset is None and products_only.products.collections == [
        "esa-worldcover",
        "io-lulc-annual-v02",
    ]
    with pytest.raises(ValueError, match="levels"):
        run_cloud_sweep({"m": EncodedPrediction()}, CloudSweepSpec(levels=[0.0, 50.0]))


class SarWaterRule(nn.Module):
    """Water where VV < -17 dB, else forest: SAR only, blind to clouds."""

    stride = 1

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        water = sar[:, 0] < -17.0
        return torch.stack([water.float(), (~water).float()] + [torch.zeros_like(water, dtype=torch.float)] * 4, 1)


class OpticalWaterRule(nn.Module):
    """Water where NIR (B08) < 0.1, else forest: optical only, so clouds hide the water."""

    stride = 1

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        water = optical[:, B08] < 0.1
        return torch.stack([water.float(), (~water).float()] + [torch.zeros_like(water, dtype=torch.float)] * 4, 1)


def test_cloud_sweep_keeps_land_fixed_and_shows_optical_degradation() -> None:
    spec = CloudSweepSpec(levels=[0.0, 0.5, 1.0], n_scenes=2, shape=(48, 48), seed=3)
    sweep = run_cloud_sweep({"sar-rule": SarWaterRule(), "optical-rule": OpticalWaterRule()}, spec, device="cpu")
    assert sweep["levels"] == [0.0, 0.5, 1.0] and sweep["simulated"] is True
    sar_runs, opt_runs = sweep["methods"]["sar-rule"], sweep["methods"]["optical-rule"]
    assert len(sar_runs) == len(opt_runs) == 3
    # same land and SAR at every level: the SAR-only method scores identically
    assert sar_runs[0]["total"]["confusion"] == sar_runs[1]["total"]["confusion"] == sar_runs[2]["total"]["confusion"]
    # every scene of a level sits in that level's bin
    assert sar_runs[0]["per_bin"]["0-10"]["n_patches"] == 2 and sar_runs[2]["per_bin"]["60-100"]["n_patches"] == 2
    # clouds hide water from the optical rule: its water IoU falls as cover rises
    water = [r["total"]["iou"]["water"] or 0.0 for r in opt_runs]
    assert water[0] > water[1] > water[2]
    assert water[0] > 0.3  # the rule does find water in clear scenes


def _png_ok(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_report_generation_on_simulated_data(tmp_path) -> None:
    torch.manual_seed(0)
    params = EvaluationParams(
        models=[ModelSpec(name="CloudLULC-Net tiny", model="cloudlulc-net-tiny"), ModelSpec(name="unet-optical")],
        dataset={"kind": "simulated", "n_scenes": 4, "shape": (32, 32), "cloud_covers": [0.0, 0.2, 0.45, 0.8]},
        cloud_sweep={"levels": [0.0, 0.5, 1.0], "n_scenes": 1, "shape": (32, 32)},
        out_dir=tmp_path / "eval",
        title="Test evaluation",
        device="cpu",
    )
    result = run_evaluation(params)
    for p in (result.json_path, result.markdown_path, result.html_path):
        assert p.exists() and p.stat().st_size > 0

    doc = json.loads(result.json_path.read_text())
    assert doc["simulated"] is True and doc["params"]["title"] == "Test evaluation"
    assert set(doc["models"]) == {"CloudLULC-Net tiny", "unet-optical"}
    for name, metrics in result.models.items():
        assert doc["models"][name]["total"]["miou"] == pytest.approx(metrics["total"]["miou"])
        assert metrics["total"]["n_pixels"] == 4 * 32 * 32
        assert [metrics["per_bin"][b]["n_patches"] for b in metrics["bins"]] == [1, 1, 1, 1]
    assert list(doc["cloud_sweep"]["methods"]) == ["CloudLULC-Net tiny", "unet-optical"]

    md = result.markdown_path.read_text()
    assert "SIMULATED" in md and "Data: SIMULATED split of 4 scenes of 32 x 32 px" in md
    assert "| method | OA % | macro F1 % | mIoU % | scored pixels | patches |" in md
    assert "| method | water | forest | grassland | barren | built-up | cropland |" in md
    assert "| method | architecture | parameters | weights |" in md
    assert "| cloud bin | OA % | macro F1 % | mIoU % | IoU water | IoU forest |" in md
    assert "| method | ECE % (all) | ECE % @ 0-10 % cloud |" in md  # calibration per cloud bin
    assert "untrained build_model('cloudlulc-net-tiny')" in md
    miou_tiny = 100 * result.models["CloudLULC-Net tiny"]["total"]["miou"]
    assert re.search(rf"\| CloudLULC-Net tiny \| [\d.]+ \| [\d.]+ \| {miou_tiny:.1f} \| 4,096 \| 4 \|", md)
    assert "mIoU % vs simulated cloud cover" in md and "| method | 0 % | 50 % | 100 % |" in md
    best = max(result.models, key=lambda n: result.models[n]["total"]["miou"])
    best_miou = 100 * result.models[best]["total"]["miou"]
    assert md.index("## Highlights") < md.index("## Models on the evaluation split")
    assert f"- Evaluation split: best mIoU {best_miou:.1f} % ({best})." in md
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert {"figures/models_bins.png", "figures/cloud_sweep.png"} <= set(linked)
    assert sum("confusion_model_" in p for p in linked) == 2
    for rel in linked:
        _png_ok((result.out_dir / rel).read_bytes())

    html = result.html_path.read_text()
    assert html.count("<table>") == md.count("\n|---|")
    assert f"{miou_tiny:.1f}" in html and "CloudLULC-Net tiny" in html
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == len(linked)  # self-contained: every figure embedded
    for b64 in images:
        w, h = _png_ok(base64.b64decode(b64))
        assert w >= 300 and h >= 200
    assert "src='figures" not in html and "http" not in html.split("<body>")[1].split("Generated")[0]


def _write_tif(path, data: np.ndarray, dtype: str, nodata) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=dtype,
        crs="EPSG:32633",
        transform=from_origin(600000, 5000000, 10, 10),
        nodata=nodata,
    ) as dst:
        dst.write(data.astype(dtype))


def test_paper_geotiff_layout_through_run_evaluation(tmp_path) -> None:
    """The paper's folder layout (no Cloud/ folder, DN optical) of SIMULATED patches, read by the dataset
    module's reader: every labelled pixel is scored once and no cloud bins are claimed."""
    split = SimulatedSplit(2, (32, 32), [0.1, 0.7], seed=11)
    root = tmp_path / "paper"
    ids = ["p0", "p1"]
    for pid, i in zip(ids, range(2)):
        s = split[i]
        dn = lambda a: np.clip(np.round(a.numpy() * 10000), 1, 65535)  # noqa: E731
        _write_tif(root / "Opt_S2_cloudy" / f"{pid}.tif", dn(s["optical"]), "uint16", 0)
        _write_tif(root / "Opt_S2_clear" / f"{pid}.tif", dn(s["optical_clear"]), "uint16", 0)
        _write_tif(root / "SAR_S1" / "VV" / f"{pid}.tif", s["sar"][0].numpy(), "float32", None)
        _write_tif(root / "SAR_S1" / "VH" / f"{pid}.tif", s["sar"][1].numpy(), "float32", None)
        _write_tif(root / "Label" / f"{pid}.tif", s["label"].numpy(), "uint8", 255)
    (root / "test.csv").write_text("id\n" + "\n".join(ids) + "\n")

    torch.manual_seed(0)
    model = build_model("unet-early-fusion", widths=(8, 16))
    st_path, _ = save_pretrained(model, tmp_path / "w", {"training_data": "none (untrained, test)"})
    params = EvaluationParams(
        models=[ModelSpec(name="fusion", weights=st_path)],
        dataset={"kind": "geotiff", "path": root, "split": "test"},
        out_dir=tmp_path / "out",
        device="cpu",
    )
    result = run_evaluation(params)
    res = result.models["fusion"]
    assert res["total"]["n_pixels"] == 2 * 32 * 32 and res["cloud_known"] is False
    assert res["n_patches_unknown_cloud"] == 2
    labels = torch.stack([split[i]["label"] for i in range(2)])
    assert (
        np.asarray(res["total"]["confusion"]).sum(1).tolist()
        == torch.bincount(labels.flatten(), minlength=NUM_CLASSES).tolist()
    )
    assert "no cloud mask" in result.markdown_path.read_text()
    assert f"GeoTIFF layout {root}, split 'test', 2 patches" in result.markdown_path.read_text()


def test_compare_layers_common_mask_and_window_bins() -> None:
    from cloudlulc.evaluation.products import compare_layers

    rng = np.random.default_rng(1)
    ref = rng.integers(0, NUM_CLASSES, (8, 8)).astype(np.uint8)
    good = ref.copy()
    good[0, 0] = 255  # abstains on one pixel: removed from *every* layer's mask
    bad = ((ref + 1) % NUM_CLASSES).astype(np.uint8)
    cloud = np.zeros((8, 8), np.uint8)
    cloud[:, :4] = 1  # left windows cloudy
    cloud[:4, 4:] = 255  # top-right window: cloud unknown
    res = compare_layers(ref, {"good": good, "bad": bad}, cloud=cloud, window=4)
    for r in res.values():
        assert r["total"]["n_pixels"] == 63 and r["total"]["n_patches"] == 4
        assert r["n_patches_unknown_cloud"] == 1
        assert r["per_bin"]["60-100"]["n_patches"] == 2 and r["per_bin"]["0-10"]["n_patches"] == 1
        assert r["per_bin"]["0-10"]["n_pixels"] == 16 and r["per_bin"]["60-100"]["n_pixels"] == 31
    assert res["good"]["total"]["oa"] == 1.0 and res["bad"]["total"]["oa"] == 0.0


def test_committed_demo_weights_through_the_sweep() -> None:
    """The committed tiny weights (trained on SIMULATED data) load by path and clearly beat chance on
    clear simulated scenes; the sweep records which file was scored."""
    from cloudlulc.model import demo_weights_path
    from cloudlulc.model.io import sha256_file

    path = demo_weights_path()
    sweep = run_cloud_sweep(
        [ModelSpec(name="demo", weights=path)],
        CloudSweepSpec(levels=[0.0, 1.0], n_scenes=2, shape=(64, 64)),
        device="cpu",
    )
    clear, overcast = sweep["methods"]["demo"]
    assert clear["total"]["miou"] > 0.5  # chance level for 6 classes is far below
    assert clear["model"]["weights_sha256"] == sha256_file(path)
    assert overcast["cloud_cover"] == 1.0 and overcast["per_bin"]["60-100"]["n_patches"] == 2


def test_ece_per_cloud_bin_uses_the_models_calibration() -> None:
    """The class map is the same with any temperature; only the confidence, hence the ECE, changes."""
    from cloudlulc.model.calibration import Calibration

    split = SimulatedSplit(n_scenes=4, shape=(32, 32), cloud_covers=[0.0, 0.8], seed=7)
    net = build_model("unet-early-fusion")
    raw = evaluate_model(net, split, device="cpu")
    net.calibration = Calibration(temperature=50.0)  # flattens the softmax towards 1/6
    hot = evaluate_model(net, split, device="cpu")
    assert hot["total"]["miou"] == raw["total"]["miou"]
    assert hot["total"]["ece"] != raw["total"]["ece"]
    assert {b: hot["per_bin"][b]["ece"] is not None for b in ("0-10", "60-100")} == {"0-10": True, "60-100": True}
