"""Saving and loading weights: safetensors + a JSON sidecar, never pickle.

The JSON sidecar carries everything needed to rebuild and to *trust* the network: architecture and
its full config (including the normalisation constants the model applies to physical-unit inputs),
class table, band orders, a description of the training data, its metrics, and the sha256 of the
safetensors file. Loading refuses weights whose band order or class table differ from
:mod:`cloudlulc.classes`, because such a model would silently map the wrong bands to the wrong classes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cloudlulc import classes as C
from cloudlulc.errors import CloudLULCError
from cloudlulc.model.calibration import Calibration, calibration_of
from cloudlulc.model.config import config_from_dict
from cloudlulc.model.registry import build_model, model_from_config

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEMO_WEIGHTS_STEM = "cloudlulc-net-tiny-sim"


class WeightsError(CloudLULCError, ValueError):
    """Weights cannot be used: missing, unreadable, or corrupt; the message names the file."""


class WeightsMismatchError(WeightsError):
    """The weights were trained for another band order or class table, or the file is corrupt."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in {".safetensors", ".json"} else p


def save_pretrained(
    model: nn.Module, path_stem: str | Path, metadata: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; returns both paths.

    ``metadata`` may hold ``training_data`` (str or dict), ``metrics`` (dict) and any other JSON-able
    entries; they are stored verbatim next to the generated fields.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no .config; only cloudlulc.model networks can be saved")
    stem = _stem(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    st_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(st_path), metadata={"format": "pt", "architecture": config.arch, "name": config.name})
    meta = dict(metadata or {})
    doc = {
        "format_version": FORMAT_VERSION,
        "architecture": config.arch,
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "classes": C.class_table(),
        "s2_bands": list(config.s2_bands),
        "s1_bands": list(config.s1_bands),
        "normalisation": {
            "optical_mean": list(config.optical_mean),
            "optical_std": list(config.optical_std),
            "sar_mean": list(config.sar_mean),
            "sar_std": list(config.sar_std),
            "inputs": "optical: surface reflectance (0..1), sar: gamma0 dB; (x - mean) / std inside the model",
        },
        "stride": int(getattr(model, "stride", 1)),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "training_data": meta.pop("training_data", None),
        "metrics": meta.pop("metrics", None),
        "calibration": _calibration_entry(model, meta.pop("calibration", None)),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "weights_file": st_path.name,
        "sha256": sha256_file(st_path),
        **meta,
    }
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return st_path, json_path


def _calibration_entry(model: nn.Module, given: Calibration | dict[str, Any] | None) -> dict[str, Any] | None:
    """The sidecar's ``calibration``: ``given`` (metadata) else the model's own, None when identity."""
    cal = given if isinstance(given, Calibration) else Calibration.from_dict(given) if given else calibration_of(model)
    return None if cal.is_identity else cal.as_dict()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a weights file (path to .safetensors, .json or the common stem)."""
    json_path = _stem(path).with_suffix(".json")
    if not json_path.exists():
        raise WeightsError(f"weights config {json_path} not found (expected next to the .safetensors file)")
    try:
        doc = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"weights config {json_path} is not valid JSON ({exc}); export the weights again") from None
    if not isinstance(doc, dict) or "config" not in doc:
        raise WeightsError(f"weights config {json_path} has no 'config': not a CloudLULC weights sidecar")
    return doc


def check_compatible(doc: dict[str, Any], source: str = "weights") -> None:
    """Raise :class:`WeightsMismatchError` unless band orders and class table match :mod:`cloudlulc.classes`."""
    if tuple(doc.get("s2_bands", ())) != C.S2_BANDS or tuple(doc["config"].get("s2_bands", ())) != C.S2_BANDS:
        raise WeightsMismatchError(
            f"{source}: Sentinel-2 band order {doc.get('s2_bands')} differs from this software's {list(C.S2_BANDS)}; "
            "these weights expect other inputs and would mis-map. Retrain or convert the weights."
        )
    if tuple(doc.get("s1_bands", ())) != C.S1_BANDS or tuple(doc["config"].get("s1_bands", ())) != C.S1_BANDS:
        raise WeightsMismatchError(
            f"{source}: Sentinel-1 band order {doc.get('s1_bands')} differs from this software's {list(C.S1_BANDS)}."
        )
    expected = C.class_table()
    got = doc.get("classes")
    same = got is not None and [(c["value"], c["name"]) for c in got] == [(c["value"], c["name"]) for c in expected]
    if not same or tuple(doc["config"].get("class_names", ())) != C.CLASS_NAMES:
        raise WeightsMismatchError(
            f"{source}: class table {[(c.get('value'), c.get('name')) for c in (got or [])]} differs from "
            f"this software's {[(c['value'], c['name']) for c in expected]}; outputs would be mislabelled."
        )


def from_pretrained(
    path: str | Path, *, map_location: str | torch.device = "cpu", verify_sha256: bool = True
) -> nn.Module:
    """Rebuild a model from ``<stem>.json`` + ``<stem>.safetensors`` (safetensors only, no unpickling).

    The model is returned in eval mode.
    """
    stem = _stem(path)
    doc = read_metadata(stem)
    check_compatible(doc, source=str(stem))
    st_path = stem.with_suffix(".safetensors")
    if not st_path.exists():
        raise WeightsError(f"weights file {st_path} not found (next to its sidecar {stem.with_suffix('.json')})")
    if verify_sha256 and doc.get("sha256") and sha256_file(st_path) != doc["sha256"]:
        raise WeightsMismatchError(f"{st_path}: sha256 differs from the one recorded in {stem.with_suffix('.json')}")
    model = model_from_config(config_from_dict(doc["config"]))
    try:
        state = load_file(str(st_path), device=str(map_location))
    except Exception as exc:  # safetensors raises SafetensorError for any damage to the file
        raise WeightsError(
            f"weights {st_path} cannot be read as safetensors ({type(exc).__name__}: {exc}); the file is damaged "
            "or not a weights file: download or export it again"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsMismatchError(
            f"{st_path}: tensors missing {missing[:5]} / unexpected {unexpected[:5]} for {doc['name']}"
        )
    try:
        # nn.Module.__setattr__ is typed for Tensor | Module values only; a plain attribute is fine at runtime
        model.calibration = Calibration.from_dict(doc.get("calibration"))  # type: ignore[assignment]
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"weights config {stem.with_suffix('.json')}: bad 'calibration' entry ({exc})") from None
    return model.eval()


def demo_weights_path() -> Path:
    """Path of the committed tiny CloudLULC-Net weights (trained on SIMULATED data; see docs/model.md)."""
    path = WEIGHTS_DIR / f"{DEMO_WEIGHTS_STEM}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"demo weights {path} are missing; run scripts/train_demo_weights.py to recreate them")
    return path


@dataclass
class ModelInfo:
    """Which network mapped the run; recorded in the store and the run summary."""

    name: str
    weights_path: str | None
    sha256: str | None
    trained: bool
    #: the temperatures applied to the logits (:mod:`cloudlulc.model.calibration`), None: uncalibrated
    calibration: dict[str, Any] | None = None
    #: trained on simulated data only (the demo weights): its maps show the pipeline, not the world
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights_path": self.weights_path,
            "weights_sha256": self.sha256,
            "trained": self.trained,
            "calibration": self.calibration,
            "simulated": self.simulated,
        }


def load_model(
    weights: str | Path | None = None, *, log_fn: Callable[[str], None] | None = None
) -> tuple[Any, ModelInfo]:
    """Load ``weights``, else the committed demo weights, else an UNTRAINED tiny network (said loudly).

    The untrained fallback exists so the pipeline can run before any weights are committed; its
    maps are meaningless and :class:`ModelInfo` records ``trained=False``.
    """
    say = log_fn or log.warning
    path: Path | None = Path(weights).expanduser() if weights else None
    if path is None:
        try:
            candidate = Path(demo_weights_path())
        except Exception:  # demo weights not committed yet
            candidate = None
        if candidate is not None and _weights_file(candidate).exists():
            path = candidate
    if path is None:
        net = build_model("cloudlulc-net-tiny")
        say(
            "no weights given and no demo weights committed: using an UNTRAINED cloudlulc-net-tiny "
            "(maps are meaningless)"
        )
        return net.eval(), ModelInfo("cloudlulc-net-tiny (untrained)", None, None, trained=False)
    wfile = check_weights_path(path)
    key = _cache_key(wfile)
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
    net = from_pretrained(path)
    doc = read_metadata(wfile)
    name = str(doc.get("name") or wfile.stem)
    cal = calibration_of(net)
    calibration = None if cal.is_identity else cal.as_dict()
    simulated = trained_on_simulated_data(doc)
    info = ModelInfo(name, str(wfile), sha256_file(wfile), trained=True, calibration=calibration, simulated=simulated)
    with _LOADED_LOCK:
        _LOADED[key] = (net.eval(), info)
        while len(_LOADED) > _MAX_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
    return net, info


#: models this process loaded, by file identity: a serving process (``flows.serve``) maps run after
#: run with the same weights, and reading and checking them again cost more than a small run's work
_LOADED: dict[tuple[str, int, int, int], tuple[Any, ModelInfo]] = {}
_LOADED_LOCK = threading.Lock()
_MAX_LOADED = 4


def _cache_key(wfile: Path) -> tuple[str, int, int, int]:
    """Path, size and modification times of the weights and their sidecar: a file replaced in place
    (a new export) is loaded again."""
    st = wfile.stat()
    sidecar = wfile.with_suffix(".json")
    sidecar_time = sidecar.stat().st_mtime_ns if sidecar.exists() else -1  # loading then names it missing
    return (str(wfile.resolve()), st.st_size, st.st_mtime_ns, sidecar_time)


def trained_on_simulated_data(doc: dict[str, Any]) -> bool:
    """Whether a sidecar says its weights saw simulated data only (``simulated_only``, else its
    ``training_data`` description)."""
    if "simulated_only" in doc:
        return bool(doc["simulated_only"])
    return "simulated" in json.dumps(doc.get("training_data") or "").lower()


#: what pickled PyTorch checkpoints are called: never loaded (a pickle runs code when read)
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def check_weights_path(path: str | Path) -> Path:
    """The ``.safetensors`` file of ``path`` (the file, its JSON sidecar or their stem), or a
    :class:`WeightsError` saying what is wrong with it."""
    path = Path(path).expanduser()
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise WeightsError(
            f"weights {path}: a pickled PyTorch checkpoint; CloudLULC reads only .safetensors weights with "
            "their JSON sidecar (pickles can run code when loaded). Export it with "
            "cloudlulc.model.save_pretrained(model, stem)."
        )
    wfile = _weights_file(path)
    if not wfile.exists():
        raise WeightsError(f"weights {path} do not exist (expected {wfile} and its .json sidecar)")
    return wfile


def _weights_file(path: Path) -> Path:
    """The .safetensors file for a path given as the file, its JSON sidecar or the common stem."""
    if path.suffix == ".safetensors":
        return path
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")
