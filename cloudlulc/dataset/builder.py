"""Build a CloudLULC-Set style training dataset from a STAC catalog.

Pipeline (one AOI, one grid):

1. search Sentinel-2 over the AOI and pair every acquisition with its nearest Sentinel-1 pass
   (:func:`cloudlulc.stac.find_pairs`, optical-only pairs kept so they can be counted as dropped);
2. lazy cubes of every acquisition and the label product on one grid (:mod:`cloudlulc.cube`);
3. the grid is cut into regions (split blocks, :mod:`cloudlulc.dataset.regions`); per region:
   regional cloud fraction of each acquisition from its SCL mask, the clear reference of each cloudy
   target (nearest in time among acquisitions with <= ``clear_max_cloud`` % cloud over the region),
   cheap patch filters, the seeded per-level cap, then the optical/SAR pixels of kept patches are
   read through Dask (the configured scheduler), exact nodata filters applied, and the patches
   appended to the Zarr store and committed (:mod:`cloudlulc.dataset.store`);
4. the index (Parquet + CSV), optional GeoTIFF layout and the report are written from the store.

A re-run with the same parameters skips committed regions and redoes an interrupted one cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cloudlulc.classes import NODATA, S1_BANDS, S2_BANDS
from cloudlulc.dataset import index as index_mod
from cloudlulc.dataset.errors import DatasetError, NoLabelCoverageError, NoPatchesError, NoScenesError
from cloudlulc.dataset.params import DatasetParams, DatasetSummary
from cloudlulc.dataset.patches import (
    DROP_REASONS,
    Candidate,
    cap_per_level,
    class_histogram,
    cloud_fraction,
    cloud_level,
    nan_fraction,
    nodata_fraction_cloudmask,
)
from cloudlulc.dataset.regions import SPLITS, PatchWindow, Region, assign_splits, make_regions, patch_windows
from cloudlulc.dataset.store import PatchStore

log = logging.getLogger(__name__)

#: ``hook(event, region_id)`` is called at "region_written" (patches in the store, not yet committed)
#: and "region_done" (committed). Tests raise from it to simulate a crash; flows can report progress.
Hook = Callable[[str, str], None]

ZARR_NAME = "dataset.zarr"
PARTS_DIR = "index_parts"
GEOTIFF_DIR = "geotiff"
#: Files and folders the builder owns inside ``out`` (the only things ``overwrite=True`` deletes).
OWNED_NAMES = (
    ZARR_NAME,
    PARTS_DIR,
    GEOTIFF_DIR,
    "index.parquet",
    "index.csv",
    "summary.json",
    "report.md",
    "cloud_levels.png",
)


# ------------------------------------------------------------------------------------------ scenes
@dataclass
class Scenes:
    """Everything searched and opened once per build (cheap; redone on resume)."""

    grid: Any
    epsg: int
    resolution: float
    bounds: tuple[float, float, float, float]
    shape: tuple[int, int]
    pairs: list[Any]
    cubes: list[Any]
    label: Any  # DataArray (y, x) uint8
    label_ids: list[str]
    stac: Any = None
    label_signed_at: float = 0.0


#: Planetary Computer SAS tokens last about an hour; the label layer (whose item dicts the cube keeps
#: to itself) is re-searched and re-signed after this many seconds.
LABEL_RESIGN_SECONDS = 45 * 60


def refresh_tokens(sc: Scenes, params: DatasetParams) -> bool:
    """Re-sign asset hrefs that expire soon and rebuild the affected cubes (long builds on the PC).

    Signed tokens get baked into the Dask graphs, so a build that runs for hours must rebuild its
    cubes from freshly signed items; unsigned catalogs (local, simulated) never need it. Returns
    whether anything was refreshed.
    """
    import time

    from cloudlulc import cube
    from cloudlulc import stac as catalog

    changed = False
    for k, pair in enumerate(sc.pairs):
        items = list(pair.s2.items) + (list(pair.s1.s1_items) if pair.s1 is not None else [])
        if catalog.items_need_resign(items):
            sc.pairs[k] = catalog.resign_pair(pair)
            sc.cubes[k] = cube.build_cube(sc.pairs[k], sc.grid, chunksize=params.effective_chunksize)
            changed = True
    signed = any(
        catalog.token_expiry(it["assets"][a].get("href", "")) is not None
        for p in sc.pairs
        for it in p.s2.items
        for a in it.get("assets", {})
    )
    if signed and sc.stac is not None and time.monotonic() - sc.label_signed_at > LABEL_RESIGN_SECONDS:
        label = cube.build_label_cube(
            sc.stac, sc.grid, collection=params.label_collection, chunksize=params.effective_chunksize
        )
        sc.label = label.isel(band=0, drop=True) if "band" in label.dims else label
        sc.label_signed_at = time.monotonic()
        changed = True
    return changed


def _grid_geometry(grid: Any) -> tuple[int, float, tuple[float, float, float, float], tuple[int, int]]:
    minx, miny, maxx, maxy = (float(v) for v in grid.bounds)
    return int(grid.epsg), float(grid.resolution), (minx, miny, maxx, maxy), tuple(grid.shape)


def open_scenes(params: DatasetParams) -> Scenes:
    """Search, pair and open lazy cubes for the whole AOI (raises the builder's clear errors)."""
    from cloudlulc import cube
    from cloudlulc import stac as catalog

    stac = catalog.open_catalog(params.catalog_url, sign=params.sign)
    aoi = catalog.parse_aoi(params.aoi)
    grid = cube.grid_for_aoi(aoi)
    epsg, res, bounds, shape = _grid_geometry(grid)
    try:
        label = cube.build_label_cube(
            stac, grid, collection=params.label_collection, chunksize=params.effective_chunksize
        )
    except catalog.CatalogError as e:
        raise NoLabelCoverageError(
            f"No label coverage for the AOI {tuple(round(v, 4) for v in aoi.bounds)} from "
            f"{params.label_collection!r}: {e} Choose an AOI the product covers or another label_collection "
            "('esa-worldcover' or 'io-lulc-annual-v02')."
        ) from None
    if "band" in getattr(label, "dims", ()):
        label = label.isel(band=0, drop=True)
    label_ids = [str(v) for v in label.attrs.get("source_items", [])]
    try:
        pairs = catalog.find_pairs(
            stac,
            aoi,
            params.start,
            params.end,
            max_cloud_cover=100.0,
            max_gap_days=params.max_gap_days,
            min_coverage=params.min_s1_coverage,
            allow_optical_only=True,
        )
    except catalog.NoSentinel2Error as e:
        raise NoScenesError(f"No Sentinel-2 acquisitions to build a dataset from: {e}") from None
    if len(pairs) < 2:
        raise NoScenesError(
            f"Found {len(pairs)} Sentinel-2 acquisition(s) over the AOI between {params.start} and {params.end}; "
            "a training sample needs a cloudy target and a different clear reference, so at least 2. Widen "
            "the date range."
        )
    cubes = [cube.build_cube(p, grid, chunksize=params.effective_chunksize) for p in pairs]
    import time

    return Scenes(grid, epsg, res, bounds, shape, pairs, cubes, label, label_ids, stac, time.monotonic())


# ------------------------------------------------------------------------------------------ dask
@contextlib.contextmanager
def _scheduler(params: DatasetParams, client: Any) -> Iterator[Any]:
    """The ``scheduler=`` argument for ``dask.compute``: the given client, one at ``dask_address``,
    or the configured local scheduler name (None = dask's current default)."""
    if client is not None:
        yield client
        return
    if params.dask_address:
        from distributed import Client

        try:
            c = Client(params.dask_address, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise DatasetError(f"Cannot reach the Dask scheduler at {params.dask_address!r}: {e}") from e
        try:
            yield c
        finally:
            c.close()
        return
    yield params.scheduler


def _compute(scheduler: Any, *arrays: Any) -> tuple[np.ndarray, ...]:
    if scheduler is None:
        return tuple(np.asarray(a) for a in dask.compute(*arrays))
    return tuple(np.asarray(a) for a in dask.compute(*arrays, scheduler=scheduler))


def _data(da: Any) -> Any:
    """The dask (or numpy) array behind a DataArray."""
    return getattr(da, "data", da)


# ------------------------------------------------------------------------------------------ region
def _iso(t: Any) -> str:
    return t.isoformat() if hasattr(t, "isoformat") else str(t)


def _days(a: datetime, b: datetime) -> float:
    return abs((a - b).total_seconds()) / 86400.0


def _clear_order(
    t: int, times: list[datetime], clear_ok: list[int], fractions: list[float], max_gap: float | None
) -> list[int]:
    """Clear-reference candidates of target ``t``, best first: nearest in time, then least regional
    cloud, then earlier. Each patch takes the first one that is clear and complete over the patch."""
    cands = [c for c in clear_ok if c != t and (max_gap is None or _days(times[c], times[t]) <= max_gap)]
    return sorted(cands, key=lambda c: (_days(times[c], times[t]), fractions[c], times[c]))


def _patch_bounds(sc: Scenes, w: PatchWindow) -> tuple[float, float, float, float]:
    minx, _, _, maxy = sc.bounds
    x0 = minx + w.col * sc.resolution
    y1 = maxy - w.row * sc.resolution
    return x0, y1 - w.size * sc.resolution, x0 + w.size * sc.resolution, y1


def _patch_id(region: Region, t: datetime, w: PatchWindow) -> str:
    return f"{region.id}_{t:%Y%m%dT%H%M%S}_{w.row:05d}_{w.col:05d}"


def build_region(
    params: DatasetParams,
    sc: Scenes,
    region: Region,
    region_index: int,
    split: str,
    store: PatchStore,
    scheduler: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Cut, curate and append one region's patches to ``store`` (uncommitted); returns (index rows, stats)."""
    rows, cols = region.slices
    windows = patch_windows(region, params.patch_size, params.stride, params.region_buffer)
    # the computed (label, *cloud masks) tuple, then the uint8 cloud masks (the tuple is not kept alive)
    clouds: Sequence[np.ndarray] = _compute(
        scheduler, _data(sc.label)[rows, cols], *[_data(c["cloud"])[rows, cols] for c in sc.cubes]
    )
    label, clouds = clouds[0].astype(np.uint8), [c.astype(np.uint8) for c in clouds[1:]]
    times = [p.s2.time for p in sc.pairs]
    fractions = [cloud_fraction(c) for c in clouds]
    valid = [1.0 - nodata_fraction_cloudmask(c) for c in clouds]
    clear_ok = [
        i
        for i, (f, v) in enumerate(zip(fractions, valid))
        if np.isfinite(f) and f * 100.0 <= params.clear_max_cloud and v >= 1.0 - params.max_nodata_fraction
    ]
    targets = list(range(len(sc.pairs)))
    if params.max_targets is not None:
        targets = targets[: params.max_targets]

    dropped: Counter = Counter()
    candidates: list[Candidate] = []
    for t in targets:
        pair = sc.pairs[t]
        if valid[t] == 0.0:
            continue  # the acquisition does not reach this region: no candidate patches at all
        if pair.s1 is None:
            dropped["missing_s1"] += len(windows)
            continue
        order = _clear_order(t, times, clear_ok, fractions, params.max_clear_gap_days)
        if not order:
            dropped["no_clear_reference"] += len(windows)
            continue
        for w in windows:
            lr, lc = w.local(region)
            lab, cl_t = label[lr, lc], clouds[t][lr, lc]
            label_valid = float((lab != NODATA).mean())
            if label_valid < params.min_label_fraction:
                dropped["label_ignore"] += 1
                continue
            frac = cloud_fraction(cl_t)
            level = cloud_level(frac, params.cloud_levels)
            if nodata_fraction_cloudmask(cl_t) > params.max_nodata_fraction or level is None:
                dropped["optical_nodata"] += 1
                continue
            clear = None
            for c in order:
                cl_c = clouds[c][lr, lc]
                frac_c = cloud_fraction(cl_c)
                if (
                    nodata_fraction_cloudmask(cl_c) <= params.max_nodata_fraction
                    and np.isfinite(frac_c)
                    and frac_c * 100.0 <= params.clear_max_cloud
                ):
                    clear = c
                    break
            if clear is None:
                dropped["clear_cloudy"] += 1
                continue
            candidates.append(
                Candidate(
                    w,
                    t,
                    clear,
                    {
                        "cloud_fraction": frac,
                        "cloud_level": level,
                        "clear_cloud_fraction": frac_c,
                        "label_valid_fraction": label_valid,
                    },
                )
            )
    rng = np.random.default_rng([params.seed, region_index])
    candidates, n_capped = cap_per_level(candidates, params.max_patches_per_level, rng)
    dropped["level_cap"] += n_capped

    records: list[dict[str, Any]] = []
    clear_cache: dict[tuple[int, int, int], np.ndarray] = {}
    split_code = SPLITS.index(split)
    # Read kept patches in batches: one dask.compute per batch shares chunk reads between patches and
    # dates, while batch_patches bounds the memory held at once.
    for b0 in range(0, len(candidates), params.batch_patches):
        chunk = candidates[b0 : b0 + params.batch_patches]
        need_clear = sorted({(cd.clear, cd.window.row, cd.window.col) for cd in chunk} - set(clear_cache))
        win = {(cd.window.row, cd.window.col): cd.window for cd in chunk}
        lazy = [_data(sc.cubes[cd.target]["optical"])[(slice(None), *cd.window.slices)] for cd in chunk]
        lazy += [_data(sc.cubes[cd.target]["sar"])[(slice(None), *cd.window.slices)] for cd in chunk]
        lazy += [_data(sc.cubes[c]["optical"])[(slice(None), *win[(r, q)].slices)] for c, r, q in need_clear]
        got = _compute(scheduler, *lazy)
        n = len(chunk)
        for key, arr in zip(need_clear, got[2 * n :]):
            clear_cache[key] = arr.astype(np.float32, copy=False)
        batch: dict[str, list[np.ndarray]] = {
            k: [] for k in ("optical_cloudy", "optical_clear", "sar", "label", "cloud")
        }
        new_records: list[dict[str, Any]] = []
        for cd, opt, sar in zip(chunk, got[:n], got[n : 2 * n]):
            t, w, c_idx = cd.target, cd.window, cd.clear
            pair, clear_pair = sc.pairs[t], sc.pairs[c_idx]
            opt_clear = clear_cache[(c_idx, w.row, w.col)]
            nf_t, nf_c, nf_s = nan_fraction(opt), nan_fraction(opt_clear), nan_fraction(sar)
            if max(nf_t, nf_c) > params.max_nodata_fraction:
                dropped["optical_nodata"] += 1
                continue
            if nf_s > params.max_nodata_fraction:
                dropped["sar_nodata"] += 1
                continue
            lr, lc = w.local(region)
            lab = label[lr, lc]
            batch["optical_cloudy"].append(opt.astype(np.float32, copy=False))
            batch["optical_clear"].append(opt_clear)
            batch["sar"].append(sar.astype(np.float32, copy=False))
            batch["label"].append(lab)
            batch["cloud"].append(clouds[t][lr, lc])
            minx, miny, maxx, maxy = _patch_bounds(sc, w)
            hist = class_histogram(lab)
            new_records.append(
                {
                    "patch_id": _patch_id(region, pair.s2.time, w),
                    "split": split,
                    "region_id": region.id,
                    "row": w.row,
                    "col": w.col,
                    "size": w.size,
                    "crs": f"EPSG:{sc.epsg}",
                    "minx": minx,
                    "miny": miny,
                    "maxx": maxx,
                    "maxy": maxy,
                    "s2_datetime": _iso(pair.s2.time),
                    "clear_datetime": _iso(clear_pair.s2.time),
                    "s1_datetime": _iso(pair.s1.s1_time),
                    "s1_s2_gap_days": float(pair.s1.gap_days),
                    "clear_gap_days": _days(pair.s2.time, clear_pair.s2.time),
                    **cd.record,
                    "optical_nodata_fraction": nf_t,
                    "clear_nodata_fraction": nf_c,
                    "sar_nodata_fraction": nf_s,
                    **{f"class_{k}": v for k, v in hist.items()},
                    "s2_cloudy_ids": ";".join(pair.s2.item_ids),
                    "s2_clear_ids": ";".join(clear_pair.s2.item_ids),
                    "s1_ids": ";".join(it["id"] for it in pair.s1.s1_items),
                    "label_ids": ";".join(sc.label_ids),
                    "label_collection": params.label_collection,
                }
            )
        if new_records:
            start, _ = store.append({k: np.stack(v) for k, v in batch.items()}, split_code)
            for i, rec in enumerate(new_records):
                rec["zarr_index"] = start + i
            records.extend(new_records)
    stats = {
        "split": split,
        "n_patches": len(records),
        "label_valid_pixels": int((label != NODATA).sum()),
        "dropped": {k: int(v) for k, v in dropped.items() if v},
        "acquisition_cloud_fraction": {
            _iso(times[i]): (None if not np.isfinite(f) else round(f, 4)) for i, f in enumerate(fractions)
        },
        "clear_references": sorted({_iso(times[cd.clear]) for cd in candidates}),
    }
    return pd.DataFrame.from_records(records, columns=index_mod.COLUMNS if not records else None), stats


# ------------------------------------------------------------------------------------------ build
def _clear_outputs(out: Path) -> None:
    for name in OWNED_NAMES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def build_dataset(
    params: DatasetParams,
    client: Any = None,
    progress: bool = True,
    hook: Hook | None = None,
) -> DatasetSummary:
    """Build (or resume) the dataset described by ``params``; returns what was built.

    ``client``: a ``distributed.Client`` to compute on (else one at ``params.dask_address``, else dask's
    local ``params.scheduler``). ``progress``: a tqdm bar over regions. ``hook(event, region_id)``:
    called after a region's patches are written ("region_written") and after it is committed
    ("region_done"); an exception raised there aborts the build like a crash would.

    Raises :class:`NoLabelCoverageError`, :class:`NoScenesError`, :class:`NoPatchesError` (with the
    count removed by each filter), :class:`StoreMismatchError` (resuming a different build).
    """
    out = Path(params.out)
    if params.overwrite and out.exists():
        _clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    sc = open_scenes(params)
    regions = make_regions(
        sc.shape, params.effective_region_size, params.patch_size, params.stride, params.region_buffer
    )
    if not regions:
        raise NoPatchesError(
            f"The AOI grid is {sc.shape[0]} x {sc.shape[1]} pixels, too small for one {params.patch_size}-pixel "
            "patch; enlarge the AOI or lower patch_size.",
            {},
        )
    splits = assign_splits([r.id for r in regions], params.split_fractions, params.seed)
    store = PatchStore.open_or_create(
        out / ZARR_NAME,
        patch_size=params.patch_size,
        optical_dtype=params.optical_dtype,
        fingerprint=params.fingerprint(),
        attrs={
            "title": "CloudLULC training patches (cloudy S2, clear S2, S1, labels)",
            "crs": f"EPSG:{sc.epsg}",
            "grid_bounds": list(sc.bounds),
            "resolution": sc.resolution,
            "params": params.content_dict(),
            "regions": {
                r.id: {"row0": r.row0, "col0": r.col0, "nrows": r.nrows, "ncols": r.ncols, "split": splits[r.id]}
                for r in regions
            },
            "s1_bands": list(S1_BANDS),
            "s2_bands": list(S2_BANDS),
            "created": datetime.now(UTC).isoformat(),
        },
    )
    rolled = store.rollback()
    if rolled:
        log.warning("Removed %d patches of an interrupted region; it is rebuilt now.", rolled)
    parts = out / PARTS_DIR
    parts.mkdir(exist_ok=True)
    done = set(store.regions_done)
    skipped = len(done)
    todo = [(i, r) for i, r in enumerate(regions) if r.id not in done]
    with (
        _scheduler(params, client) as scheduler,
        tqdm(total=len(regions), initial=len(done), disable=not progress, desc="regions", unit="region") as bar,
    ):
        for i, region in todo:
            if refresh_tokens(sc, params):
                log.info("Re-signed expiring asset hrefs before region %s", region.id)
            df, stats = build_region(params, sc, region, i, splits[region.id], store, scheduler)
            index_mod.write_part(parts / f"{region.id}.parquet", df)
            if hook:
                hook("region_written", region.id)
            store.commit(region.id, stats)
            if hook:
                hook("region_done", region.id)
            bar.update(1)
            bar.set_postfix(patches=store.n_committed)

    index = index_mod.consolidate(out, parts, store.regions_done)
    dropped: Counter[str] = Counter()
    for st in store.region_stats.values():
        dropped.update(st.get("dropped", {}))
    if len(index) == 0 and not any(st.get("label_valid_pixels", 1) for st in store.region_stats.values()):
        raise NoLabelCoverageError(
            f"The label product {params.label_collection!r} has items over the AOI but no valid pixel in it "
            "(all nodata or classes mapped to ignore); choose an AOI it covers or another label_collection."
        )
    if len(index) == 0:
        detail = ", ".join(f"{k}: {v} ({DROP_REASONS.get(k, k)})" for k, v in dropped.most_common()) or "none"
        raise NoPatchesError(
            f"No patch survived curation over {len(regions)} region(s). Removed by filter: {detail}. Relax the "
            "filter that removed the most (e.g. max_nodata_fraction, min_label_fraction, clear_max_cloud, "
            "max_gap_days) or change the AOI/dates.",
            dict(dropped),
        )
    from cloudlulc.dataset import report as report_mod

    geotiff_root = None
    if params.write_geotiff_layout:
        from cloudlulc.dataset.geotiff import write_geotiff_layout

        geotiff_root = write_geotiff_layout(out / ZARR_NAME, index, out / GEOTIFF_DIR, optical=params.geotiff_optical)
    summary = report_mod.write_report(
        out, params, index, dict(dropped), regions, splits, store, skipped=skipped, geotiff_root=geotiff_root
    )
    return summary


def load_index(out: str | Path) -> pd.DataFrame:
    """The consolidated per-patch index of a built dataset."""
    return pd.read_parquet(Path(out) / "index.parquet")


__all__ = ["Hook", "build_dataset", "build_region", "load_index", "open_scenes"]
