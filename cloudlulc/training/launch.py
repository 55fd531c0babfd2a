"""Start a multi-process training run with ``torchrun`` from Python, and read what it wrote.

The Prefect ``train`` flow (and any script) uses :func:`launch`: it writes the config beside the
run, starts ``python -m torch.distributed.run ... -m cloudlulc.training --config <file>`` as a child
process, streams its output and, once every rank has exited, reads rank 0's files
(:func:`read_outputs`). Multi-node runs start the same command on every node (docs/training.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cloudlulc.errors import CloudLULCError
from cloudlulc.training.config import TrainConfig
from cloudlulc.training.progress import CURVE_PNG, EPOCH_JSONL, STEP_CSV, STEP_JSONL, read_jsonl

CONFIG_FILE = "train-config.json"


class TrainingLaunchError(CloudLULCError, RuntimeError):
    """torchrun failed or could not be started; the message carries the end of its output."""


@dataclass
class RunOutputs:
    """The files rank 0 wrote into ``out_dir`` (None where absent) and the logs' records."""

    out_dir: Path
    history: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    last: Path | None
    best: Path | None
    loss_curve: Path | None
    train_log_csv: Path | None


def read_outputs(out_dir: str | Path) -> RunOutputs:
    """What a finished (or interrupted) run left in ``out_dir``."""
    d = Path(out_dir)

    def present(name: str) -> Path | None:
        return d / name if (d / name).exists() else None

    return RunOutputs(
        out_dir=d,
        history=read_jsonl(d / EPOCH_JSONL),
        steps=read_jsonl(d / STEP_JSONL),
        last=present("last.safetensors"),
        best=present("best.safetensors"),
        loss_curve=present(CURVE_PNG),
        train_log_csv=present(STEP_CSV),
    )


def processes_per_node(processes: int | str) -> int:
    """``processes`` as a count: an int >= 1, or ``"gpus"`` for one per GPU this machine has."""
    if processes == "gpus":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise TrainingLaunchError("processes='gpus' but torch sees no CUDA GPU here; give a process count")
        return n
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise TrainingLaunchError(f"processes must be an integer >= 1 or 'gpus', got {processes!r}")
    return processes


def torchrun_command(
    config_path: str | Path,
    nproc_per_node: int,
    *,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The torchrun command line: ``--standalone`` on one node, c10d rendezvous across nodes."""
    cmd = [python, "-m", "torch.distributed.run"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise TrainingLaunchError(f"nnodes={nnodes} needs rdzv_endpoint (host:port of the rendezvous node)")
        cmd += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
        cmd += ["--rdzv-id", rdzv_id or "cloudlulc-train"]
    cmd += ["--nproc-per-node", str(nproc_per_node), "-m", "cloudlulc.training", "--config", str(config_path)]
    return cmd


def write_config(cfg: TrainConfig) -> Path:
    """Write ``cfg`` as ``<out_dir>/train-config.json`` (the file every rank reads)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(cfg.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)
    return path


def launch(
    cfg: TrainConfig,
    processes: int | str,
    *,
    log: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> RunOutputs:
    """Train ``cfg`` on ``processes`` torchrun processes of this machine; returns rank 0's outputs.

    The children import this very ``cloudlulc`` (its directory leads ``PYTHONPATH``); with
    ``cfg.threads`` each uses that many torch threads (``OMP_NUM_THREADS``).
    """
    n = processes_per_node(processes)
    cmd = torchrun_command(write_config(cfg), n)
    child_env = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, child_env.get("PYTHONPATH", "")) if p)
    if cfg.threads:
        child_env["OMP_NUM_THREADS"] = str(cfg.threads)
    log(f"starting {n} training process(es): {' '.join(cmd[1:])}")
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.Popen(
            cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as exc:
        raise TrainingLaunchError(f"could not start torchrun ({cmd[0]} -m torch.distributed.run): {exc}") from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail.append(line)
        log(line)
    rc = proc.wait()
    if rc != 0:
        raise TrainingLaunchError(
            f"torchrun exited with status {rc} training {cfg.model} into {cfg.out_dir}; its last output:\n"
            + "\n".join(tail)
        )
    return read_outputs(cfg.out_dir)
