"""Weights I/O: safetensors + JSON round trip, refusal of incompatible weights, demo weights."""

from __future__ import annotations

import json

import pytest
import torch

from cloudlulc.classes import CLASS_NAMES, S2_BANDS
from cloudlulc.model import WeightsMismatchError, build_model, demo_weights_path, from_pretrained, save_pretrained
from cloudlulc.model.io import read_metadata

torch.set_num_threads(1)  # more threads thrash on a shared, loaded CPU


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 12, 32, 32, generator=g) * 0.3, torch.randn(1, 2, 32, 32, generator=g) * 4 - 14


@pytest.mark.parametrize("name", ["cloudlulc-net-tiny", "unet-early-fusion", "reconstruct-then-segment"])
def test_round_trip_is_bit_exact(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    if hasattr(model, "anchors"):  # non-trivial buffers must travel too
        model.anchors.anchors.normal_()
        model.anchors.initialised.fill_(True)
    st, js = save_pretrained(model, tmp_path / "m", {"training_data": "unit test", "metrics": {"miou": 0.5}})
    assert st.suffix == ".safetensors" and js.suffix == ".json"
    assert not st.read_bytes().startswith(b"\x80")  # not a pickle
    loaded = from_pretrained(st)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(model(*_inputs()).logits, loaded(*_inputs()).logits)
    meta = read_metadata(js)
    assert meta["architecture"] == model.config.arch and meta["s2_bands"] == list(S2_BANDS)
    assert [c["name"] for c in meta["classes"]] == list(CLASS_NAMES)
    assert meta["normalisation"]["optical_mean"] == list(model.config.optical_mean)
    assert meta["training_data"] == "unit test" and meta["metrics"] == {"miou": 0.5}
    assert len(meta["sha256"]) == 64
    # loads from the stem and from the JSON path as well
    assert type(from_pretrained(tmp_path / "m")) is type(model)
    assert type(from_pretrained(js)) is type(model)


def _saved(tmp_path):
    st, js = save_pretrained(build_model("unet-optical"), tmp_path / "w", {})
    return st, js, json.loads(js.read_text())


def test_refuses_mismatched_band_order(tmp_path):
    st, js, doc = _saved(tmp_path)
    swapped = list(S2_BANDS)
    swapped[1], swapped[3] = swapped[3], swapped[1]
    doc["s2_bands"] = swapped
    doc["config"]["s2_bands"] = swapped
    js.write_text(json.dumps(doc))
    with pytest.raises(WeightsMismatchError, match="band order"):
        from_pretrained(st)


def test_refuses_mismatched_class_table(tmp_path):
    st, js, doc = _saved(tmp_path)
    doc["classes"][0]["name"], doc["classes"][1]["name"] = doc["classes"][1]["name"], doc["classes"][0]["name"]
    js.write_text(json.dumps(doc))
    with pytest.raises(WeightsMismatchError, match="class table"):
        from_pretrained(st)


def test_refuses_tampered_weights(tmp_path):
    st, js, doc = _saved(tmp_path)
    data = bytearray(st.read_bytes())
    data[-1] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(WeightsMismatchError, match="sha256"):
        from_pretrained(st)


def test_committed_demo_weights_load_and_say_simulated():
    path = demo_weights_path()
    assert path.stat().st_size < 5 * 1024 * 1024
    model = from_pretrained(path)
    meta = read_metadata(path)
    assert meta["name"] == "cloudlulc-net-tiny" and "SIMULATED" in meta["training_data"]
    assert meta["metrics"]["heavy_cloud_60_95pct"]["total"]["miou"] > 0
    with torch.no_grad():
        out = model(*_inputs())
    assert out.logits.shape == (1, 6, 32, 32)


def test_calibration_travels_in_the_sidecar_not_the_weights(tmp_path):
    from cloudlulc.model.calibration import Calibration, calibration_of
    from cloudlulc.model.io import WeightsError, load_model

    model = build_model("cloudlulc-net-tiny").eval()
    st, _ = save_pretrained(model, tmp_path / "plain")
    cal = Calibration(1.7, 3.2, fitted={"on": "unit test"})
    st_cal, js_cal = save_pretrained(model, tmp_path / "calibrated", {"calibration": cal})
    from safetensors.torch import load_file

    plain, calibrated = load_file(str(st)), load_file(str(st_cal))  # the calibration is not a tensor
    assert plain.keys() == calibrated.keys() and all(torch.equal(plain[k], calibrated[k]) for k in plain)
    assert calibration_of(from_pretrained(st)).is_identity
    loaded = from_pretrained(st_cal)
    assert calibration_of(loaded) == cal and calibration_of(loaded).fitted == {"on": "unit test"}
    _, info = load_model(st_cal)
    assert info.calibration is not None and info.calibration["temperature_optical_missing"] == 3.2
    doc = json.loads(js_cal.read_text())
    doc["calibration"]["temperature"] = -1
    js_cal.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="calibration"):
        from_pretrained(st_cal)


def test_a_serving_process_loads_the_same_weights_once(tmp_path):
    """load_model keeps what it loaded: a served deployment maps run after run without re-reading
    and re-hashing the weights; a file exported again in place is loaded again."""
    import os

    from cloudlulc.model.io import load_model

    model = build_model("cloudlulc-net-tiny").eval()
    st, js = save_pretrained(model, tmp_path / "w")
    first, info = load_model(st)
    again, info_again = load_model(st)
    assert again is first and info_again == info
    stat = st.stat()
    os.utime(st, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new export in place
    fresh, _ = load_model(st)
    assert fresh is not first
