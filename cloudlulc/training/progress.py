"""What a trainer watches: per-step losses and learning rate, per-epoch validation, a loss curve.

Files in the run directory (written by rank 0 only):

``train_log.jsonl`` / ``train_log.csv``
    one row per optimiser step: ``step``, ``epoch``, ``lr`` (the rate that step used),
    ``grad_norm``, ``seconds`` and the global-batch loss parts (``total``, ``ce``, ...).
``metrics.jsonl``
    one record per epoch: mean training losses and, with validation data, the metrics by cloud bin
    (:class:`~cloudlulc.training.metrics.ConfusionMatrix`).
``loss_curve.png``
    training loss and learning rate against the step, validation score per epoch.
``tensorboard/``
    the same scalars, when ``torch.utils.tensorboard`` (the ``tensorboard`` package) is installed.

A resumed run first cuts every row past its checkpoint's step, so the files read as one run.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

STEP_JSONL, STEP_CSV, EPOCH_JSONL, CURVE_PNG = "train_log.jsonl", "train_log.csv", "metrics.jsonl", "loss_curve.png"
_FIRST_COLUMNS = ["step", "epoch", "lr", "grad_norm", "seconds"]
_LOSS_ORDER = ["total", "ce", "anchor", "reliability", "reconstruction"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLog:
    """Append-only logs of one run; every method is a no-op when ``enabled`` is False (ranks > 0)."""

    def __init__(self, out_dir: Path, *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.out_dir, self.enabled = Path(out_dir), enabled
        self._columns: list[str] | None = None
        self._tb: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: the tensorboard package is not a dependency
                pass
            else:
                self._tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def restart(self, step: int) -> None:
        """Keep only rows up to ``step`` (0: a fresh run, nothing kept)."""
        if not self.enabled:
            return
        if step == 0:
            for name in (STEP_JSONL, STEP_CSV, EPOCH_JSONL, CURVE_PNG):
                (self.out_dir / name).unlink(missing_ok=True)
            return
        for name in (STEP_JSONL, EPOCH_JSONL):
            path = self.out_dir / name
            kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= step]
            if path.exists():
                _rewrite(path, "".join(json.dumps(r) + "\n" for r in kept))
        csv_path = self.out_dir / STEP_CSV
        if csv_path.exists():
            with open(csv_path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                _rewrite(csv_path, _csv_text(rows[0], [r for r in rows[1:] if r and int(r[0]) <= step]))
                self._columns = rows[0]

    def step(self, row: dict[str, Any]) -> None:
        """Append one optimiser step's row."""
        if not self.enabled:
            return
        with open(self.out_dir / STEP_JSONL, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._columns is None:
            losses = [k for k in _LOSS_ORDER if k in row] + sorted(set(row) - set(_FIRST_COLUMNS) - set(_LOSS_ORDER))
            self._columns = _FIRST_COLUMNS + losses
            with open(self.out_dir / STEP_CSV, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)
        with open(self.out_dir / STEP_CSV, "a", newline="") as f:
            csv.writer(f).writerow([_cell(row.get(c)) for c in self._columns])
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, row["step"])

    def epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch's record and redraw the loss curve."""
        if not self.enabled:
            return
        with open(self.out_dir / EPOCH_JSONL, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None and record.get("val"):
            total = record["val"]["total"]
            for k in ("oa", "miou", "macro_f1"):
                if total.get(k) is not None:
                    self._tb.add_scalar(f"val/{k}", total[k], record["step"])
            for name, scores in record["val"]["per_bin"].items():
                if scores.get("miou") is not None:
                    self._tb.add_scalar(f"val_miou_by_cloud/{name}", scores["miou"], record["step"])
        plot_loss_curve(self.out_dir)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _cell(v: Any) -> Any:
    return "" if v is None else v


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def plot_loss_curve(out_dir: Path, metric: str = "miou") -> Path | None:
    """Draw ``loss_curve.png`` from the run's logs (None when no step is logged yet)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    steps = read_jsonl(out_dir / STEP_JSONL)
    if not steps:
        return None
    epochs = read_jsonl(out_dir / EPOCH_JSONL)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    x = [r["step"] for r in steps]
    for k in _LOSS_ORDER:
        if k in steps[0]:
            main = k == "total"
            ax.plot(x, [r.get(k) for r in steps], lw=2 if main else 1, alpha=1 if main else 0.6, label=k)
    ax.set_ylabel("training loss (global batch)")
    ax.legend(loc="upper left", fontsize=8)
    val = [(e["step"], e["val"]["total"].get(metric)) for e in epochs if e.get("val")]
    val = [(s, v) for s, v in val if v is not None]
    if val:
        ax_val = ax.twinx()
        ax_val.plot([s for s, _ in val], [v for _, v in val], "o--", color="black", label=f"val {metric}")
        ax_val.set_ylabel(f"validation {metric}")
        ax_val.legend(loc="upper right", fontsize=8)
    ax_lr.plot(x, [r["lr"] for r in steps], color="tab:gray")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimiser step")
    path = out_dir / CURVE_PNG
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path
