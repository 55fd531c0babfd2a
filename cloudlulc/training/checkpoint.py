"""Resumable checkpoints and published weights, each written atomically.

``last-trainer.pt`` is everything a run needs to continue bit for bit: model tensors, optimiser,
scheduler and scaler states, the RNG states, the data position (epoch, step within the epoch, global
step) and the running sums of the epoch's losses. It holds tensors and plain containers only and is
read back with ``torch.load(weights_only=True)``, so loading never unpickles code.

``last`` and ``best`` are published as :mod:`cloudlulc.model.io` weights (safetensors + JSON
sidecar). Every file is written beside its target and renamed over it, so a kill mid-write leaves
the previous good file in place; the published weights are rewritten from the trainer state on
resume, so a kill between two renames never leaves a stale pair behind.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from cloudlulc.model.io import save_pretrained

STATE_FILE = "last-trainer.pt"
STATE_FORMAT = 2


def state_path(out_dir: Path) -> Path:
    return Path(out_dir) / STATE_FILE


def _replace(tmp: Path, target: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def save_state(state: dict[str, Any], out_dir: Path) -> Path:
    """Write the trainer state atomically (temp file in the same directory, fsync, rename)."""
    target = state_path(out_dir)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        torch.save(state, tmp)
        _replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_state(out_dir: Path) -> dict[str, Any]:
    """The trainer state of ``out_dir``; a clear error when it is from an older format."""
    path = state_path(out_dir)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{path} is a checkpoint of an older trainer (format {state.get('format')}, expected "
            f"{STATE_FORMAT}); it cannot resume this trainer: train into a new out_dir or set resume=False"
        )
    return state


def publish_weights(model: nn.Module, out_dir: Path, name: str, metadata: dict[str, Any]) -> Path:
    """Write ``<out_dir>/<name>.safetensors`` and ``.json`` (renamed into place; returns the weights path)."""
    out_dir = Path(out_dir)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    try:
        st, js = save_pretrained(model, tmp_dir / name, metadata)
        _replace(st, out_dir / st.name)
        _replace(js, out_dir / js.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir / f"{name}.safetensors"


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors and plain values."""
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, cached = np_state
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Undo :func:`capture_rng` (CUDA states only where this process sees as many GPUs)."""
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete what a run killed mid-write left behind (temp files and directories, never a target)."""
    for p in Path(out_dir).glob(".*"):
        if p.is_dir() and (p.name.startswith(".last-") or p.name.startswith(".best-")):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
