"""Checkpoints: a run killed with SIGKILL resumes to the weights of an uninterrupted run, bit for bit.

Asserted on the CPU in one process: every tensor of ``last`` and ``best`` equal (``torch.equal``), the
optimiser state equal, and the per-step and per-epoch logs equal except their wall-clock seconds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cloudlulc.training import SimulatedDataConfig, TrainConfig, train
from cloudlulc.training.__main__ import main as cli
from cloudlulc.training.checkpoint import load_state, save_state

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(widths=(8, 16, 16, 32), latent_dim=32, decoder_width=16, usmt_heads=4)

KILLER = """
import os, signal, sys
from cloudlulc.training import TrainConfig, train
cfg = TrainConfig.model_validate_json(open(sys.argv[1]).read())
def kill(step):
    if step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: what a pre-empted node does
train(cfg, on_step=kill)
"""


def _cfg(out_dir: Path, **kw) -> TrainConfig:
    base = dict(
        model="cloudlulc-net-tiny",
        model_overrides=SMALL,
        train_data=SimulatedDataConfig(n_patches=8, patch_size=32, seed=0),
        val_data=SimulatedDataConfig(n_patches=4, patch_size=32, seed=9),
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        checkpoint_every=2,
        device="cpu",
        threads=1,
        out_dir=out_dir,
        progress=False,
        tensorboard=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in path.read_text().splitlines()]


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    whole = train(_cfg(tmp_path / "whole"))

    killed = _cfg(tmp_path / "killed")
    (tmp_path / "killed.json").write_text(killed.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path / "killed.json"), "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = load_state(tmp_path / "killed")
    # killed after step 5: the last checkpoint is step 4, one step into the second epoch
    assert (state["step"], state["position"]["epoch"], state["position"]["epoch_step"]) == (4, 1, 1)
    assert [r["step"] for r in _rows(tmp_path / "killed" / "train_log.jsonl")] == [1, 2, 3, 4, 5]

    cli(["--config", str(tmp_path / "killed.json"), "--resume"])

    for name in ("last", "best"):
        a = load_file(str(tmp_path / "whole" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "killed" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    sa, sb = load_state(tmp_path / "whole"), load_state(tmp_path / "killed")
    opt_a, opt_b = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    assert sa["scheduler"] == sb["scheduler"] and sb["step"] == 6
    for log in ("train_log.jsonl", "metrics.jsonl"):  # step 5, logged before the kill, was cut and redone
        assert _rows(tmp_path / "whole" / log) == _rows(tmp_path / "killed" / log), log
    csv_lines = (tmp_path / "killed" / "train_log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,epoch,lr,grad_norm") and [x.split(",")[0] for x in csv_lines[1:]] == list(
        "123456"
    )
    assert len(whole.history) == 2

    with pytest.raises(ValueError, match="trained on other data"):
        train(
            _cfg(tmp_path / "killed", resume=True, train_data=SimulatedDataConfig(n_patches=8, patch_size=32, seed=1))
        )


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    save_state({"format": 2, "step": 1}, tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises, the old file must survive
        save_state({"format": 2, "step": 2, "bad": lambda: None}, tmp_path)
    assert load_state(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-trainer.pt"]
