"""Write evaluation results as ``results.json``, ``report.md`` and a self-contained ``report.html``.

Tables are built once (:class:`Table`) and rendered to Markdown and HTML, so both reports always show
the same numbers; figures are PNG files under ``figures/`` (linked from Markdown) and embedded as base64
in the HTML so the page can be mailed or attached to a Prefect artifact on its own.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cloudlulc.classes import CLASS_NAMES
from cloudlulc.evaluation import metrics_view as mv


@dataclass
class Table:
    """A titled table of pre-formatted cells, rendered identically to Markdown and HTML."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(self.headers) - 1)) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.note:
            lines += ["", f"_{self.note}_"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return f"<h4>{html.escape(self.title)}</h4>{table}{note}"


@dataclass
class Figure:
    title: str
    path: Path  # PNG on disk, relative links in Markdown


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal; missing or NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.1f}"


# ----------------------------------------------------------------------------------------------
# tables


def summary_table(results: Mapping[str, Mapping[str, Any]], title: str, label: str = "method") -> Table:
    rows = []
    for name, m in results.items():
        rows.append(
            [name, pct(mv.oa(m)), pct(mv.macro_f1(m)), pct(mv.miou(m)), f"{mv.n_pixels(m):,}", f"{mv.n_patches(m):,}"]
        )
    return Table(title, [label, "OA %", "macro F1 %", "mIoU %", "scored pixels", "patches"], rows)


def methods_table(results: Mapping[str, Mapping[str, Any]]) -> Table:
    rows = []
    for name, m in results.items():
        info = m.get("model") or {}
        sha = info.get("weights_sha256")
        weights = str(info.get("weights") or "–") + (f" (sha256 {sha[:12]}…)" if sha else "")
        rows.append([name, str(info.get("architecture", "–")), f"{int(info.get('n_parameters') or 0):,}", weights])
    return Table("Methods", ["method", "architecture", "parameters", "weights"], rows)


def per_class_table(results: Mapping[str, Mapping[str, Any]], kind: str, title: str) -> Table:
    getter = mv.class_iou if kind == "iou" else mv.class_f1
    rows = [[name] + [pct(v) for v in getter(m)] for name, m in results.items()]
    return Table(title, ["method", *CLASS_NAMES], rows)


def per_bin_table(results: Mapping[str, Mapping[str, Any]], title: str) -> Table:
    bins = mv.bin_names(next(iter(results.values())))
    rows = []
    for name, m in results.items():
        cells = [name]
        for b in bins:
            bm = mv.bin_metrics(m, b)
            cells.append(pct(mv.miou(bm)) if bm is not None and mv.n_pixels(bm) > 0 else "–")
        rows.append(cells)
    return Table(
        title,
        ["method", *[f"mIoU % @ {b} % cloud" for b in bins]],
        rows,
        note="bins by the cloud fraction of each patch (SCL cloud/shadow); – = no patch in the bin",
    )


def calibration_table(results: Mapping[str, Mapping[str, Any]]) -> Table:
    """Expected calibration error (10 confidence bins) of each model, in total and per cloud bin."""
    bins = mv.bin_names(next(iter(results.values())))
    rows = []
    for name, m in results.items():
        cells = [name, pct(mv.ece(m))]
        for b in bins:
            bm = mv.bin_metrics(m, b)
            cells.append(pct(mv.ece(bm)) if bm is not None and mv.n_pixels(bm) > 0 else "–")
        rows.append(cells)
    return Table(
        "Calibration: expected calibration error (ECE) %",
        ["method", "ECE % (all)", *[f"ECE % @ {b} % cloud" for b in bins]],
        rows,
        note="ECE over 10 equal-width confidence bins of the top-class probability, with the model's calibration",
    )


def bin_detail_table(name: str, metrics: Mapping[str, Any]) -> Table:
    rows = []
    for b in mv.bin_names(metrics):
        bm = mv.bin_metrics(metrics, b)
        if bm is None:
            continue
        rows.append(
            [f"{b} %", pct(mv.oa(bm)), pct(mv.macro_f1(bm)), pct(mv.miou(bm))]
            + [pct(v) for v in mv.class_iou(bm)]
            + [f"{mv.n_pixels(bm):,}", f"{mv.n_patches(bm):,}"]
        )
    return Table(
        f"{name}: metrics per cloud-cover bin",
        ["cloud bin", "OA %", "macro F1 %", "mIoU %", *[f"IoU {c}" for c in CLASS_NAMES], "scored pixels", "patches"],
        rows,
        note="per-class F1 per bin is in results.json (per_bin.<bin>.f1)",
    )


def sweep_table(sweep: Mapping[str, Any]) -> Table:
    levels = sweep["levels"]
    rows = [[name] + [pct(mv.miou(m)) for m in runs] for name, runs in sweep["methods"].items()]
    return Table(
        "mIoU % vs simulated cloud cover",
        ["method", *[f"{round(100 * lv)} %" for lv in levels]],
        rows,
        note=(
            f"SIMULATED scenes: {sweep.get('n_scenes')} per level, same land cover at every level "
            f"(seed {sweep.get('seed')})"
        ),
    )


# ----------------------------------------------------------------------------------------------
# figures (matplotlib, Agg backend: no display needed)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_bin_curves(results: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path:
    plt = _pyplot()
    bins = mv.bin_names(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    x = np.arange(len(bins))
    for name, m in results.items():
        ys = []
        for b in bins:
            bm = mv.bin_metrics(m, b)
            ys.append(100 * mv.miou(bm) if bm is not None and mv.n_pixels(bm) > 0 else np.nan)
        ax.plot(x, ys, marker="o", label=name)
    ax.set_xticks(x, [f"{b} %" for b in bins])
    ax.set_xlabel("patch cloud cover")
    ax.set_ylabel("mIoU %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_confusion(name: str, metrics: Mapping[str, Any], path: Path) -> Path | None:
    """Row-normalised confusion heatmap (rows = reference); None when the metrics carry no matrix."""
    cm = mv.confusion(metrics)
    if cm is None:
        return None
    plt = _pyplot()
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    n = len(CLASS_NAMES)
    ax.set_xticks(range(n), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(n), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title(f"{name}: confusion (row-normalised)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_sweep(sweep: Mapping[str, Any], path: Path) -> Path:
    plt = _pyplot()
    levels = 100 * np.asarray(sweep["levels"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, runs in sweep["methods"].items():
        ax.plot(levels, [100 * mv.miou(m) for m in runs], marker="o", label=name)
    ax.set_xlabel("simulated cloud cover %")
    ax.set_ylabel("mIoU %")
    ax.set_ylim(0, 100)
    ax.set_xlim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title("Degradation with cloud cover (simulated)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_product_bars(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    names = list(results)
    keys = [("OA", mv.oa), ("macro F1", mv.macro_f1), ("mIoU", mv.miou)]
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for k, (label, fn) in enumerate(keys):
        ax.bar(x + (k - 1) * width, [100 * fn(results[n]) for n in names], width, label=label)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Products vs reference (common valid mask)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# sections


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "method"


def dataset_section(models: Mapping[str, Mapping[str, Any]], fig_dir: Path, description: str | None = None) -> Section:
    sec = Section(
        "Models on the evaluation split",
        (f"Data: {description}. " if description else "")
        + "Overall accuracy, macro F1 and mean IoU over all scored pixels, then per class and per "
        "cloud-cover bin. Pixels with label 255 or non-finite inputs are not scored (same mask for every model).",
    )
    sec.tables += [
        methods_table(models),
        summary_table(models, "Summary"),
        per_class_table(models, "iou", "IoU % per class"),
        per_class_table(models, "f1", "F1 % per class"),
    ]
    if any(not mv.is_nan(mv.ece(m)) for m in models.values()):
        sec.tables.append(calibration_table(models))
    if any(mv.bin_miou(m) for m in models.values()):
        table = per_bin_table(models, "mIoU % per cloud-cover bin")
        unknown = max(int(m.get("n_patches_unknown_cloud") or 0) for m in models.values())
        if unknown:
            table.note += f"; {unknown} patch(es) without a known cloud mask count in the totals only"
        sec.tables.append(table)
        sec.tables += [bin_detail_table(name, m) for name, m in models.items()]
        sec.figures.append(
            Figure(
                "mIoU per cloud-cover bin",
                plot_bin_curves(models, fig_dir / "models_bins.png", "mIoU per cloud-cover bin"),
            )
        )
    else:
        sec.intro += " The samples carry no cloud mask, so no cloud-cover bins are shown."
    for name, m in models.items():
        p = plot_confusion(name, m, fig_dir / f"confusion_model_{_slug(name)}.png")
        if p is not None:
            sec.figures.append(Figure(f"{name}: confusion matrix", p))
    return sec


def products_section(products: Mapping[str, Mapping[str, Any]], fig_dir: Path) -> Section:
    sources = "; ".join(f"{n}: {m.get('source', '?')}" for n, m in products.items())
    sec = Section(
        "Global LULC products vs our map",
        "Every product is mapped to the six CloudLULC classes, brought onto the reference grid and scored "
        f"on the pixels valid in the reference and in every product. Sources: {sources}.",
    )
    sec.tables += [
        summary_table(products, "Summary (common valid mask)", label="product"),
        per_class_table(products, "iou", "IoU % per class"),
        per_class_table(products, "f1", "F1 % per class"),
    ]
    if any(mv.bin_miou(m) for m in products.values()):
        sec.tables.append(per_bin_table(products, "mIoU % per cloud-cover bin (windows of the mosaic's cloud layer)"))
    sec.figures.append(Figure("Products vs reference", plot_product_bars(products, fig_dir / "products.png")))
    for name, m in products.items():
        p = plot_confusion(name, m, fig_dir / f"confusion_product_{_slug(name)}.png")
        if p is not None:
            sec.figures.append(Figure(f"{name}: confusion matrix", p))
    return sec


def sweep_section(sweep: Mapping[str, Any], fig_dir: Path) -> Section:
    sec = Section(
        "Cloud sweep (simulated)",
        "SIMULATED DATA: the same simulated land cover rendered under increasing cloud and shadow cover "
        "(clouds nested: every cloudy pixel at one level is cloudy at the next). The curve shows how each "
        "method degrades as the optical signal disappears.",
    )
    sec.tables.append(sweep_table(sweep))
    sec.figures.append(Figure("mIoU vs cloud cover", plot_sweep(sweep, fig_dir / "cloud_sweep.png")))
    return sec


# ----------------------------------------------------------------------------------------------
# writers


def _best(results: Mapping[str, Mapping[str, Any]]) -> tuple[str, float] | None:
    scored = [(name, mv.miou(m)) for name, m in results.items() if not mv.is_nan(mv.miou(m))]
    return max(scored, key=lambda t: t[1]) if scored else None


def highlights(
    models: Mapping[str, Mapping[str, Any]] | None,
    products: Mapping[str, Mapping[str, Any]] | None,
    sweep: Mapping[str, Any] | None,
) -> Section:
    """The few numbers a reader wants first, each pointing at the section that backs it."""
    sec = Section("Highlights")
    if models and (best := _best(models)):
        sec.bullets.append(f"Evaluation split: best mIoU {pct(best[1])} % ({best[0]}).")
        for name, m in models.items():
            bins = mv.bin_miou(m)
            if len(bins) >= 2:
                (lo_b, lo), (hi_b, hi) = next(iter(bins.items())), list(bins.items())[-1]
                sec.bullets.append(f"{name}: mIoU {pct(lo)} % at {lo_b} % cloud, {pct(hi)} % at {hi_b} % cloud.")
    if products and (best := _best(products)):
        n = mv.n_pixels(next(iter(products.values())))
        sec.bullets.append(f"Products vs reference: best mIoU {pct(best[1])} % ({best[0]}) on {n:,} common pixels.")
    if sweep:
        levels = sweep["levels"]
        for name, runs in sweep["methods"].items():
            sec.bullets.append(
                f"Cloud sweep (simulated), {name}: mIoU {pct(mv.miou(runs[0]))} % at {round(100 * levels[0])} % cloud "
                f"-> {pct(mv.miou(runs[-1]))} % at {round(100 * levels[-1])} %."
            )
    return sec


def render_markdown(title: str, header: str, sections: Sequence[Section], root: Path) -> str:
    parts = [f"# {title}", "", header, ""]
    for sec in sections:
        parts += [f"## {sec.title}", "", sec.intro, ""] if sec.intro else [f"## {sec.title}", ""]
        if sec.bullets:
            parts += [f"- {b}" for b in sec.bullets] + [""]
        parts += [t.markdown() for t in sec.tables]
        for fig in sec.figures:
            parts += [f"![{fig.title}]({fig.path.relative_to(root).as_posix()})", ""]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{border-bottom:2px solid #1b7837;padding-bottom:.3rem}h2{margin-top:2.2rem;color:#1b7837}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f0f5ef}tr:nth-child(even) td{background:#fafafa}
.note{font-size:.8rem;color:#666;margin-top:-.6rem}.figs{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0}figcaption{font-size:.8rem;color:#555;text-align:center}img{max-width:100%;border:1px solid #eee}
.header{background:#fff8e1;border-left:4px solid #ffd92f;padding:.5rem 1rem}
.highlights{background:#f0f5ef;border-left:4px solid #1b7837;padding:.6rem 1rem .6rem 2rem}
"""


def render_html(title: str, header: str, sections: Sequence[Section]) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><div class='header'>{html.escape(header)}</div>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.intro:
            parts.append(f"<p>{html.escape(sec.intro)}</p>")
        if sec.bullets:
            parts.append(
                "<ul class='highlights'>" + "".join(f"<li>{html.escape(b)}</li>" for b in sec.bullets) + "</ul>"
            )
        parts += [t.html() for t in sec.tables]
        parts.append("<div class='figs'>")
        for fig in sec.figures:
            data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(fig.title)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(fig.title)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} into results.json")


def _finite(obj: Any) -> Any:
    """JSON has no NaN: undefined metrics (a class absent from a bin) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudlulc")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def write_reports(
    out_dir: Path | str,
    *,
    title: str = "CloudLULC evaluation",
    models: Mapping[str, Mapping[str, Any]] | None = None,
    products: Mapping[str, Mapping[str, Any]] | None = None,
    cloud_sweep: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    dataset_description: str | None = None,
) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``report.html`` and ``figures/*.png``; return their paths."""
    version = software_version()
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    simulated = bool(cloud_sweep) or bool(params and (params.get("dataset") or {}).get("kind") == "simulated")
    header = f"Generated {created} by cloudlulc {version}."
    if simulated:
        header += " Parts of this report use SIMULATED DATA (cloudlulc.simulate); they test the method, not the world."

    sections: list[Section] = [highlights(models, products, cloud_sweep)]
    if models:
        sections.append(dataset_section(models, fig_dir, dataset_description))
    if products:
        sections.append(products_section(products, fig_dir))
    if cloud_sweep:
        sections.append(sweep_section(cloud_sweep, fig_dir))
    if len(sections) == 1:
        raise ValueError("no results to report: pass models, products or cloud_sweep")

    paths = {"json": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
    payload = {
        "title": title,
        "created": created,
        "software": {"cloudlulc": version},
        "simulated": simulated,
        "params": params or {},
        "dataset": dataset_description,
        "models": models or {},
        "products": products,
        "cloud_sweep": cloud_sweep,
    }
    paths["json"].write_text(json.dumps(_finite(payload), indent=2, default=_json_default))
    paths["markdown"].write_text(render_markdown(title, header, sections, out))
    paths["html"].write_text(render_html(title, header, sections))
    return paths
