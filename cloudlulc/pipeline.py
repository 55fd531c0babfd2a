"""End-to-end mapping of one AOI, stage by stage, without Prefect.

``map_aoi(params)`` runs the whole chain; the ``map-aoi`` Prefect flow calls the same stage functions
one task each, so the library is usable (and testable) without an orchestrator and the flow holds no
logic of its own:

1. :func:`search_stage`  Sentinel-2 acquisitions of the AOI in the time window (optionally minus the
   times already in the store, for near-real-time runs);
2. :func:`pair_stage`    the nearest Sentinel-1 pass of each (or optical-only, if allowed);
3. :func:`cube_stage`    lazy Dask cubes of every pair on one UTM 10 m grid;
4. :func:`infer_write_stage` CloudLULC-Net inference through Dask, written to the Zarr mosaic
   (one ``time`` slice per acquisition; rewriting a time replaces it, so a retry is safe);
5. :func:`publish_stage` class areas in km² and PNG quicklooks read back from the store.

Network-facing stages raise ordinary exceptions; :func:`is_transient_error` tells an orchestrator
which of them are worth retrying.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from cloudlulc.classes import CLASS_NAMES, NODATA, NUM_CLASSES
from cloudlulc.config import MapParams, Settings, get_settings

log = logging.getLogger(__name__)

#: two acquisition times closer than this are the same acquisition (Zarr time encoding may round)
TIME_TOLERANCE = np.timedelta64(1, "s")


class PipelineError(RuntimeError):
    """A mapping run cannot go on; the message says what to change."""


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class ModelInfo:
    """Which network mapped the run; recorded in the store and the run summary."""

    name: str
    weights_path: str | None
    sha256: str | None
    trained: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights_path": self.weights_path,
            "weights_sha256": self.sha256,
            "trained": self.trained,
        }


@dataclass
class AcquisitionResult:
    """One mapped acquisition (one ``time`` slice of the store)."""

    time: str
    s2_items: list[str]
    s1_items: list[str]
    s1_gap_days: float | None
    optical_only: bool
    class_areas_km2: dict[str, float] = field(default_factory=dict)
    mapped_km2: float = 0.0
    quicklook: str | None = None


@dataclass
class MapResult:
    """What a run did: the store, each mapped acquisition, the model, and what was skipped."""

    output: str
    model: ModelInfo | None
    acquisitions: list[AcquisitionResult] = field(default_factory=list)
    skipped_times: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "model": self.model.as_dict() if self.model else None,
            "acquisitions": [a.__dict__ for a in self.acquisitions],
            "skipped_times": self.skipped_times,
            "warnings": self.warnings,
        }

    def to_markdown(self) -> str:
        """A human summary (the Prefect flow publishes it as a markdown artifact)."""
        return summary_markdown(self)


# ------------------------------------------------------------------------------------------------
# transient errors


_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_WORDS = (
    "timed out",
    "timeout",
    "connection",
    "temporarily",
    "too many requests",
    "reset by peer",
    "curl error",
    "http response code: 5",
    "503",
    "502",
    "504",
)


def is_transient_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a network hiccup worth retrying.

    Catalog errors from pystac-client arrive as ``APIError`` wrapping the requests exception,
    pixel reads as rasterio/GDAL errors with curl messages; bad parameters and missing data are not
    transient and must fail at once rather than after minutes of retries.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        status = getattr(e, "status_code", None)
        if isinstance(status, int):
            if status in _TRANSIENT_HTTP:
                return True
            if 400 <= status < 500:
                return False
        mod = type(e).__module__.split(".")[0]
        name = type(e).__name__
        if mod in ("requests", "urllib3", "httpx", "httpcore", "aiohttp") and any(
            k in name for k in ("Connection", "Timeout", "Transport", "Network", "Protocol", "ReadError")
        ):
            return True
        if name == "StacApiError":  # cloudlulc.catalog: the API kept failing after HTTP-level retries
            return True
        if mod in ("rasterio", "pystac_client") or name in (
            "APIError",
            "RasterioIOError",
            "CPLE_HttpResponseError",
            "AssetReadError",
        ):
            msg = str(e).lower()
            if any(w in msg for w in _TRANSIENT_WORDS):
                return True
        e = e.__cause__ or e.__context__
    return False


# ------------------------------------------------------------------------------------------------
# model


def load_model(
    weights: str | Path | None = None, *, log_fn: Callable[[str], None] | None = None
) -> tuple[Any, ModelInfo]:
    """Load ``weights``, else the committed demo weights, else an UNTRAINED tiny network (said loudly).

    The untrained fallback exists so the pipeline can run before any weights are committed; its
    maps are meaningless and :class:`ModelInfo` records ``trained=False``.
    """
    from cloudlulc import model as model_pkg

    say = log_fn or log.warning
    path: Path | None = Path(weights).expanduser() if weights else None
    if path is None:
        try:
            candidate = Path(model_pkg.demo_weights_path())
        except Exception:  # demo weights not committed yet
            candidate = None
        if candidate is not None and _weights_file(candidate).exists():
            path = candidate
    if path is None:
        net = model_pkg.build_model("cloudlulc-net-tiny")
        say(
            "no weights given and no demo weights committed: using an UNTRAINED cloudlulc-net-tiny (maps are meaningless)"
        )
        return net.eval(), ModelInfo("cloudlulc-net-tiny (untrained)", None, None, trained=False)
    if not _weights_file(path).exists():
        raise PipelineError(f"weights {path} do not exist")
    from cloudlulc.model.io import read_metadata, sha256_file

    net = model_pkg.from_pretrained(path)
    wfile = _weights_file(path)
    name = str(read_metadata(wfile).get("name") or wfile.stem)
    return net.eval(), ModelInfo(name, str(wfile), sha256_file(wfile), trained=True)


def _weights_file(path: Path) -> Path:
    """The .safetensors file for a path given as the file, its JSON sidecar or the common stem."""
    if path.suffix == ".safetensors":
        return path
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")


# ------------------------------------------------------------------------------------------------
# stages


def _open_client(params: MapParams) -> Any:
    from cloudlulc.catalog import open_catalog

    return open_catalog(params.catalog_url)


def existing_times(store: str) -> list[np.datetime64]:
    """Times already mapped in ``store``; none when the store does not exist yet."""
    from cloudlulc.mosaic import mapped_times

    if _is_local(store) and not Path(_local(store)).exists():
        return []
    try:
        return [np.datetime64(t, "ns") for t in mapped_times(store)]
    except FileNotFoundError:
        return []


def _is_mapped(t: Any, done: Sequence[np.datetime64]) -> bool:
    t64 = np.datetime64(t, "ns")
    return any(abs(t64 - d) <= TIME_TOLERANCE for d in done)


def search_stage(params: MapParams) -> tuple[list[Any], list[str]]:
    """Sentinel-2 acquisitions to map, and the ISO times skipped because they are already mapped.

    With ``skip_mapped`` (near-real-time runs) an empty window is normal and gives ``[]``; otherwise
    :class:`cloudlulc.catalog.NoSentinel2Error` propagates with its explanation.
    """
    from cloudlulc.catalog import NoSentinel2Error, parse_aoi, search_s2

    client = _open_client(params)
    aoi = parse_aoi(params.aoi)
    start, end = params.window
    try:
        acqs = list(search_s2(client, aoi, start, end, params.max_cloud_cover, collection=params.s2_collection))
    except NoSentinel2Error:
        if not params.skip_mapped:
            raise
        acqs = []
    skipped: list[str] = []
    if params.skip_mapped and acqs:
        done = existing_times(params.output)
        skipped = [iso_time(acquisition_time(a)) for a in acqs if _is_mapped(acquisition_time(a), done)]
        acqs = [a for a in acqs if not _is_mapped(acquisition_time(a), done)]
    if params.latest_only and acqs:
        acqs = acqs[-1:]
    return acqs, skipped


def pair_stage(params: MapParams, acquisitions: Sequence[Any]) -> list[Any]:
    """Pair each acquisition with its nearest Sentinel-1 pass; optical-only when allowed and none is near."""
    from cloudlulc import catalog

    client = _open_client(params)
    aoi = catalog.parse_aoi(params.aoi)
    pairs = []
    for acq in acquisitions:
        try:
            pairing = catalog.pair_s1(
                client, acq, aoi, max_gap_days=params.max_s1_gap_days, collection=params.s1_collection
            )
        except (catalog.NoSentinel1Error, catalog.MissingCollectionError) as exc:
            if not params.allow_optical_only:
                raise PipelineError(
                    f"{exc} [map-aoi: set allow_optical_only=true to map {iso_time(acquisition_time(acq))} with "
                    f"optical data only, or raise max_s1_gap_days (now {params.max_s1_gap_days:g})]"
                ) from exc
            log.warning("mapping %s optical-only: %s", iso_time(acquisition_time(acq)), exc)
            pairs.append(catalog.Pair(s2=acq, s1=None, aoi=aoi, s1_missing_reason=str(exc)))
            continue
        pairs.append(catalog.Pair(s2=acq, s1=pairing, aoi=aoi))
    return pairs


def cube_stage(params: MapParams, pairs: Sequence[Any], settings: Settings | None = None) -> list[Any]:
    """Lazy (Dask) input cubes, one per pair, all on the AOI's UTM 10 m grid, chunked by
    :func:`read_chunk_size` of the mosaic's chunks (an existing store keeps its own).

    Planetary Computer SAS tokens expire within about an hour and are baked into the graph, so a pair
    whose tokens are close to expiry (a long queue, a retry) is re-signed before its cube is built.
    """
    from cloudlulc.catalog import items_need_resign, parse_aoi, resign_pair
    from cloudlulc.cube import build_cube, grid_for_aoi
    from cloudlulc.mosaic import DEFAULT_CHUNK_SIZE, store_chunk_size

    s = settings or get_settings()
    grid = grid_for_aoi(parse_aoi(params.aoi))
    store_chunk = store_chunk_size(params.output) or params.chunk_size or DEFAULT_CHUNK_SIZE
    chunk = read_chunk_size(store_chunk, s.read_chunk_size)
    cubes = []
    for p in pairs:
        items = list(p.s2.items) + (list(p.s1.s1_items) if p.s1 is not None else [])
        if items_need_resign(items):
            p = resign_pair(p)
        cubes.append(build_cube(p, grid, chunksize=chunk))
    return cubes


#: largest read chunk chosen by default (see :func:`read_chunk_size`)
MAX_DEFAULT_READ_CHUNK = 512


def read_chunk_size(store_chunk: int, requested: int | None = None) -> int:
    """Chunk side of the input cube for a mosaic with ``store_chunk`` px chunks.

    Reads and inference run on chunks smaller than the store's so that even a small AOI has enough
    of them to keep every worker busy while others read or write (``benchmarks/inference.py``: a
    2048 px AOI ran about 30 % faster at 512 px than at 1024 px); the store keeps DESIGN's
    1024 px chunks. A read chunk must divide the store chunk, so no read chunk straddles two store
    chunks (and so two blocks of the write).
    """
    if requested is not None:
        if requested < 1 or store_chunk % requested:
            raise ValueError(
                f"read_chunk_size={requested} must divide the mosaic's chunk_size={store_chunk} (e.g. "
                f"{store_chunk // 2} or {store_chunk // 4}); unset it to pick one automatically"
            )
        return requested
    return max(d for d in range(1, min(store_chunk, MAX_DEFAULT_READ_CHUNK) + 1) if store_chunk % d == 0)


def infer_write_stage(
    params: MapParams,
    pair: Any,
    cube: Any,
    model: Any,
    model_info: ModelInfo,
    settings: Settings | None = None,
) -> str:
    """Run the network over ``cube`` and write the result as one time slice; returns its ISO time.

    The Dask graph is computed by the Zarr write (so it runs on whatever client is current).
    Rewriting the same time replaces the slice, so retrying after a failure is safe.
    """
    import dask

    from cloudlulc.inference import predict_cube
    from cloudlulc.mosaic import DEFAULT_CHUNK_SIZE, write_mosaic

    s = settings or get_settings()
    annotate = (
        dask.annotate(resources=dict(s.dask_task_resources)) if s.dask_task_resources else contextlib.nullcontext()
    )
    with annotate:
        result = predict_cube(
            cube,
            model,
            tile=s.tile,
            overlap=min(s.overlap, s.tile // 4),
            batch_size=s.batch_size,
            device=params.device or "auto",
        )
    if "cloud" not in result and "cloud" in cube:
        result["cloud"] = cube["cloud"]
    t = pair_time(pair)
    attrs = run_attrs(params, pair, model_info)
    write_mosaic(result, params.output, time=t, attrs=attrs, chunk_size=params.chunk_size or DEFAULT_CHUNK_SIZE)
    return iso_time(t)


def publish_stage(params: MapParams, times: Sequence[str], pairs: Sequence[Any]) -> list[AcquisitionResult]:
    """Read each written slice back: class areas in km², a PNG quicklook; one result per time."""
    from cloudlulc.mosaic import open_mosaic, quicklook_png

    ds = open_mosaic(params.output)
    qdir = params.quicklook_path()
    qdir.mkdir(parents=True, exist_ok=True)
    stem = Path(params.output.rstrip("/")).stem or "mosaic"
    by_time = {iso_time(pair_time(p)): p for p in pairs}
    out = []
    for t in times:
        # the exact stored time (ISO strings here are rounded to seconds)
        lulc = ds["lulc"].sel(time=np.datetime64(t.rstrip("Z"), "ns"), method="nearest", tolerance=TIME_TOLERANCE)
        areas = class_areas_km2(lulc)
        png = qdir / f"{stem}_{t.replace(':', '').replace('-', '')}.png"
        quicklook_png(params.output, lulc["time"].values, png)
        pair = by_time.get(t)
        info = describe_pair(pair) if pair is not None else {}
        out.append(
            AcquisitionResult(
                time=t,
                s2_items=info.get("s2_items", []),
                s1_items=info.get("s1_items", []),
                s1_gap_days=info.get("gap_days"),
                optical_only=info.get("optical_only", False),
                class_areas_km2=areas,
                mapped_km2=round(sum(areas.values()), 6),
                quicklook=str(png),
            )
        )
    return out


def map_aoi(
    params: MapParams | dict[str, Any],
    *,
    settings: Settings | None = None,
    client: Any = None,
) -> MapResult:
    """Map an AOI end to end (search -> pair -> cube -> infer+write -> publish), no Prefect needed.

    ``client``: a ``distributed.Client`` to use; default: the configured scheduler
    (:func:`cloudlulc.dask_cluster.dask_client`: the threaded scheduler unless a cluster is configured).
    """
    from cloudlulc.dask_cluster import dask_client

    s = settings or get_settings()
    p = (params if isinstance(params, MapParams) else MapParams.model_validate(params)).resolved(s)
    acqs, skipped = search_stage(p)
    result = MapResult(output=p.output, model=None, skipped_times=skipped)
    if not acqs:
        return result
    pairs = pair_stage(p, acqs)
    result.warnings += optical_only_warnings(pairs)
    model, info = load_model(p.weights, log_fn=lambda m: (log.warning(m), result.warnings.append(m)))
    result.model = info
    ctx = contextlib.nullcontext(client) if client is not None else dask_client(s, address=p.dask_address)
    with ctx:
        cubes = cube_stage(p, pairs, s)
        times = [infer_write_stage(p, pair, cube, model, info, s) for pair, cube in zip(pairs, cubes)]
    result.acquisitions = publish_stage(p, times, pairs)
    return result


# ------------------------------------------------------------------------------------------------
# helpers on catalog objects (tolerant of Acquisition / Pair shapes)


def acquisition_time(acq: Any) -> np.datetime64:
    """An :class:`~cloudlulc.catalog.Acquisition`'s time as naive-UTC ``datetime64[ns]`` (as in the store)."""
    t = acq.time
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(t, "ns")


def pair_time(pair: Any) -> np.datetime64:
    """The time slice a :class:`~cloudlulc.catalog.Pair` is written to (its Sentinel-2 time)."""
    return np.datetime64(pair.time, "ns")


def iso_time(t: Any) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (second precision, the tolerance used to match times)."""
    return str(np.datetime64(t, "s")) + "Z"


def describe_pair(pair: Any) -> dict[str, Any]:
    """Item ids and S1 gap of a pair, from ``Pair.as_dict()`` (ids and unsigned hrefs only)."""
    d = pair.as_dict()
    s2 = d.get("s2") or {}
    s1 = d.get("s1") or {}
    return {
        "s2_items": list(s2.get("item_ids", [])),
        "s1_items": list(s1.get("s1_item_ids", [])),
        "gap_days": None if not s1 or s1.get("gap_days") is None else float(s1["gap_days"]),
        "optical_only": pair.s1 is None,
        "pairing": d,
    }


def optical_only_warnings(pairs: Sequence[Any]) -> list[str]:
    return [
        f"{iso_time(pair_time(p))}: no Sentinel-1 pass within the gap, mapped optical-only"
        for p in pairs
        if getattr(p, "s1", None) is None
    ]


def run_attrs(params: MapParams, pair: Any, model_info: ModelInfo) -> dict[str, Any]:
    """Provenance stored with each slice: items, gap, model, parameters.

    The mosaic writer adds the software version and creation time itself; nothing time-varying goes
    in here, so an interrupted write of the same slice is recognised and resumed.
    """
    info = describe_pair(pair)
    return {
        "pairing": info["pairing"],
        "s2_items": info["s2_items"],
        "s1_items": info["s1_items"],
        "s1_gap_days": info["gap_days"],
        "optical_only": info["optical_only"],
        "model": model_info.name,
        "weights_sha256": model_info.sha256 or "untrained",
        "parameters": params.model_dump(mode="json"),
    }


# ------------------------------------------------------------------------------------------------
# summaries


def class_areas_km2(lulc: Any) -> dict[str, float]:
    """Area of each class in km² from a (y, x) class map on a metric grid (nodata 255 excluded)."""
    values = np.asarray(lulc.values if hasattr(lulc, "values") else lulc)
    xs = np.asarray(lulc["x"].values) if hasattr(lulc, "coords") and "x" in lulc.coords else None
    ys = np.asarray(lulc["y"].values) if hasattr(lulc, "coords") and "y" in lulc.coords else None
    if xs is not None and ys is not None and xs.size > 1 and ys.size > 1:
        pixel_m2 = abs(float(xs[1] - xs[0])) * abs(float(ys[1] - ys[0]))
    else:
        pixel_m2 = 100.0  # the 10 m grid of DESIGN.md
    counts = np.bincount(values[values != NODATA].ravel().astype(np.int64), minlength=NUM_CLASSES)
    return {name: round(float(counts[i]) * pixel_m2 / 1e6, 6) for i, name in enumerate(CLASS_NAMES)}


def summary_markdown(result: MapResult) -> str:
    """Markdown run summary: scenes used, S1 gap, class areas in km², output and quicklooks."""
    lines = ["# CloudLULC mapping run", "", f"**Output store:** `{result.output}`", ""]
    if result.model:
        m = result.model
        trained = "" if m.trained else " — **UNTRAINED, maps are meaningless**"
        lines += [f"**Model:** {m.name}{trained}" + (f" (sha256 `{m.sha256[:12]}…`)" if m.sha256 else ""), ""]
    if not result.acquisitions:
        lines += ["No new acquisition was mapped."]
    for a in result.acquisitions:
        gap = "none (optical-only)" if a.optical_only or a.s1_gap_days is None else f"{a.s1_gap_days:.2f} days"
        lines += [
            f"## {a.time}",
            "",
            f"- Sentinel-2: {', '.join(f'`{i}`' for i in a.s2_items) or '?'}",
            f"- Sentinel-1: {', '.join(f'`{i}`' for i in a.s1_items) or 'none'}",
            f"- S1–S2 gap: {gap}",
            f"- Quicklook: `{a.quicklook}`" if a.quicklook else "- Quicklook: none",
            "",
            "| class | area (km²) | share |",
            "| --- | ---: | ---: |",
        ]
        total = a.mapped_km2 or sum(a.class_areas_km2.values())
        for name, km2 in a.class_areas_km2.items():
            share = f"{100 * km2 / total:.1f} %" if total > 0 else "-"
            lines.append(f"| {name} | {km2:.4f} | {share} |")
        lines += [f"| **mapped** | **{total:.4f}** | |", ""]
    if result.skipped_times:
        lines += ["Already mapped (skipped): " + ", ".join(result.skipped_times), ""]
    for w in result.warnings:
        lines.append(f"> ⚠️ {w}")
    return "\n".join(lines).rstrip() + "\n"


def _is_local(store: str) -> bool:
    return "://" not in store or store.startswith("file://")


def _local(store: str) -> str:
    return store.removeprefix("file://")


__all__ = [
    "AcquisitionResult",
    "MapResult",
    "ModelInfo",
    "PipelineError",
    "acquisition_time",
    "class_areas_km2",
    "cube_stage",
    "describe_pair",
    "existing_times",
    "infer_write_stage",
    "is_transient_error",
    "iso_time",
    "load_model",
    "map_aoi",
    "pair_stage",
    "pair_time",
    "publish_stage",
    "search_stage",
    "summary_markdown",
]
