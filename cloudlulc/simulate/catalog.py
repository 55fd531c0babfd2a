"""Write a simulated, Planetary-Computer-shaped STAC catalog of COGs (SIMULATED DATA).

Layout under ``out_dir``::

    catalog.json                                   static root catalog (child links)
    simcatalog.json                                manifest: seed, grid, AOI, dates (SimCatalog.load)
    collections/<collection>/collection.json       collection documents
    collections/<collection>/items/<item>.json     single items (relative links)
    api/<collection>.collection.json               the collection without item links   } rustac serve
    api/<collection>.items.json                    one FeatureCollection per collection } inputs
    data/<collection>/<item>/<asset>.tif           Cloud Optimized GeoTIFFs
    truth/lulc_truth.tif                           the true CloudLULC classes on the 10 m UTM grid

What is simulated (all on one landscape, so land cover is constant across dates):

- ``sentinel-2-l2a``: two adjacent tiles (``33UXP``, ``33UYP``, EPSG:32633 near the Morava/Danube
  confluence) that overlap by ``overlap`` pixels, four dates with cloud cover from nearly clear to
  heavy, processing baselines 03.01 (DN = reflectance x 10000) and 04.00 (DN + 1000 offset),
  bands at native 10/20/60 m, SCL at 20 m, DN 0 nodata (one date has a nodata wedge inside the
  overlap of tile 33UXP, so a mosaic that lets nodata win is caught);
- ``sentinel-1-rtc``: four passes a few days off the S2 dates, both orbit states, float32 linear
  gamma0 with nodata -32768; one pass is delivered as two overlapping frames (slices);
- ``esa-worldcover``: the land-cover truth as WorldCover codes, reprojected to EPSG:4326 like the
  real product (``datetime`` null, ``start_datetime``/``end_datetime`` set).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject

from cloudlulc.classes import S2_BANDS
from cloudlulc.simulate import metadata as md
from cloudlulc.simulate.scene import (
    BARREN,
    BUILT,
    CROPLAND,
    FOREST,
    GRASSLAND,
    SCL_NODATA,
    WATER,
    Landscape,
    apply_clouds,
    make_clouds,
    make_landscape,
    render_optical,
    render_sar,
    scene_classification,
)

EPSG = 32633
RES = 10
#: Where `make demo` keeps its catalog (relative to the working directory).
DEFAULT_DEMO_DIR = Path(".demo") / "catalog"
#: Sub-directories write_demo_catalog creates (and removes again before rewriting a catalog).
_OUTPUT_DIRS = ("api", "collections", "data", "truth")
#: Upper-left corner of the eastern tile (33UYP): on the 60 m lattice like real S2 tile origins.
TILE_B_ORIGIN = (699960.0, 5349960.0)
S2_COLLECTION, S1_COLLECTION, LABEL_COLLECTION = "sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"
COLLECTION_IDS = (S2_COLLECTION, S1_COLLECTION, LABEL_COLLECTION)
S2_NATIVE_RES = {k: g for k, (g, _, _) in md.S2_BAND_META.items()}
#: CloudLULC class -> the WorldCover code written in the label product.
LULC_TO_WORLDCOVER = {WATER: 80, FOREST: 10, GRASSLAND: 30, BARREN: 60, BUILT: 50, CROPLAND: 40}


@dataclass(frozen=True)
class S2Acquisition:
    """One simulated Sentinel-2 acquisition (both tiles)."""

    datetime: datetime
    platform: str
    processing_baseline: str
    cloud_cover: float  # requested fraction of cloud + shadow over the scene
    season: float  # crop greenness stage, see cloudlulc.simulate.scene.greenness
    relative_orbit: int = 79


@dataclass(frozen=True)
class S1Pass:
    """One simulated Sentinel-1 pass; ``slices`` > 1 delivers it as overlapping frames."""

    start: datetime
    orbit_state: str
    relative_orbit: int
    absolute_orbit: int
    season: float
    slices: int = 1


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


#: Dates straddle the 25 Jan 2022 switch to processing baseline 04.00 (DN offset +1000).
DEFAULT_S2: tuple[S2Acquisition, ...] = (
    S2Acquisition(_utc(2022, 1, 6, 9, 54, 29, 24000), "Sentinel-2B", "03.01", 0.35, 0.40),
    S2Acquisition(_utc(2022, 1, 16, 9, 53, 49, 24000), "Sentinel-2B", "03.01", 0.02, 0.45),
    S2Acquisition(_utc(2022, 1, 31, 9, 54, 1, 24000), "Sentinel-2A", "04.00", 0.85, 0.50),
    S2Acquisition(_utc(2022, 2, 10, 9, 53, 11, 24000), "Sentinel-2A", "04.00", 0.15, 0.55),
)
#: S1A passes 1 to 3 days off each S2 date (12-day repeat), both orbit states; one split in two frames.
DEFAULT_S1: tuple[S1Pass, ...] = (
    S1Pass(_utc(2022, 1, 4, 4, 59, 4, 220006), "descending", 124, 41300, 0.39),
    S1Pass(_utc(2022, 1, 19, 16, 42, 11, 104512), "ascending", 73, 41524, 0.46),
    S1Pass(_utc(2022, 1, 28, 4, 59, 3, 871220), "descending", 124, 41650, 0.49, slices=2),
    S1Pass(_utc(2022, 2, 12, 16, 42, 9, 553001), "ascending", 73, 41874, 0.56),
)


@dataclass
class SimCatalog:
    """A simulated catalog on disk (SIMULATED DATA) and the facts tests and demos need about it."""

    root: Path
    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]
    aoi_bbox_lonlat: tuple[float, float, float, float]
    s2_dates: list[datetime]
    epsg: int
    item_collection_paths: list[Path]
    collection_paths: list[Path] = field(default_factory=list)
    truth_path: Path | None = None
    seed: int = 0
    tiles: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # mgrs -> UTM bounds
    aoi_bounds_utm: tuple[float, float, float, float] | None = None
    s1_dates: list[datetime] = field(default_factory=list)

    def items_of(self, collection_id: str) -> list[dict[str, Any]]:
        """The item dicts of one collection, in write order."""
        return [it for it in self.items if it["collection"] == collection_id]

    def with_href_base(self, href_base: str) -> list[dict[str, Any]]:
        """Copies of the items whose asset hrefs point below ``href_base`` instead of local files.

        ``href_base`` is the URL that serves ``root`` (e.g. ``http://127.0.0.1:8123``): a file
        ``root/data/x.tif`` becomes ``{href_base}/data/x.tif``.
        """
        return [rewrite_hrefs(it, self.root, href_base) for it in self.items]

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> SimCatalog:
        """Re-open a catalog written by :func:`write_demo_catalog` (reads ``simcatalog.json``)."""
        root = Path(root).resolve()
        manifest_path = root / "simcatalog.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{manifest_path} not found: {root} is not a catalog written by cloudlulc.simulate "
                "(run `python -m cloudlulc.simulate <dir>` to create one)"
            )
        m = json.loads(manifest_path.read_text())
        ic_paths = [root / p for p in m["item_collection_paths"]]
        items = [f for p in ic_paths for f in json.loads(p.read_text())["features"]]
        col_paths = [root / p for p in m["collection_paths"]]
        return cls(
            root=root,
            collections=[json.loads(p.read_text()) for p in col_paths],
            items=items,
            aoi_bbox_lonlat=tuple(m["aoi_bbox_lonlat"]),  # type: ignore[arg-type]
            s2_dates=[datetime.fromisoformat(d) for d in m["s2_dates"]],
            epsg=int(m["epsg"]),
            item_collection_paths=ic_paths,
            collection_paths=col_paths,
            truth_path=root / m["truth_path"],
            seed=int(m["seed"]),
            tiles={k: tuple(v) for k, v in m["tiles"].items()},  # type: ignore[misc]
            aoi_bounds_utm=tuple(m["aoi_bounds_utm"]),  # type: ignore[arg-type]
            s1_dates=[datetime.fromisoformat(d) for d in m["s1_dates"]],
        )


def rewrite_hrefs(item: dict[str, Any], root: Path, href_base: str) -> dict[str, Any]:
    """Copy of ``item`` with asset hrefs under ``root`` rewritten to ``href_base`` + relative path."""
    out = json.loads(json.dumps(item))
    base = href_base.rstrip("/")
    for asset in out.get("assets", {}).values():
        href = asset["href"]
        if href.startswith("http://") or href.startswith("https://"):
            rel = href.split("/data/", 1)[-1]
            asset["href"] = f"{base}/data/{rel}"
        else:
            asset["href"] = f"{base}/{Path(href).resolve().relative_to(root.resolve()).as_posix()}"
    return out


# --------------------------------------------------------------------------------------------
# raster helpers


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape[-2:]
    return a.reshape(*a.shape[:-2], h // k, k, w // k, k).mean(axis=(-3, -1))


def _block_any(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape
    return a.reshape(h // k, k, w // k, k).any(axis=(1, 3))


def _write_cog(
    path: Path,
    data: np.ndarray,
    *,
    transform: rasterio.Affine,
    crs: CRS,
    nodata: float | int | None,
    resampling: str,
) -> None:
    """Write a single-band COG (deflate, 256 px blocks, overviews): deterministic bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = data.shape
    predictor = 3 if data.dtype.kind == "f" else 2
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="DEFLATE",
        level=1,  # fast; the simulated rasters are small and written often (test fixtures)
        predictor=predictor,
        blocksize=256,
        overview_resampling=resampling,
        num_threads=1,
    ) as ds:
        ds.write(data, 1)


class _CogWriter:
    """Writes COGs on a small thread pool while the caller simulates the next acquisition.

    GDAL releases the GIL while it compresses, so on a multi-core machine writing overlaps with
    the numpy work; each file is independent, so the bytes do not depend on the order.
    """

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        self._futures: list[Future[None]] = []

    def write(self, path: Path, data: np.ndarray, **kwargs: Any) -> None:
        self._futures.append(self._pool.submit(_write_cog, path, data, **kwargs))

    def wait(self) -> None:
        """Block until every submitted file is written; re-raises the first failure."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _quantize(a: np.ndarray, mantissa_bits: int = 10) -> np.ndarray:
    """Zero the low float32 mantissa bits (relative precision ~1e-3, i.e. < 0.005 dB).

    Speckle is incompressible noise; without this the S1 COGs are 4 bytes per pixel and slow to write.
    """
    drop = 23 - mantissa_bits
    bits = a.view(np.uint32)
    bits = (bits + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return bits.view(np.float32)


def _multihash_md5(path: Path) -> str:
    return "d50110" + hashlib.md5(path.read_bytes()).hexdigest()


def _fmt_dt(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pc_space_dt(dt: datetime) -> str:
    """The Planetary Computer S1 RTC items write start/end_datetime with a space instead of ``T``."""
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


class _Geo:
    """Conversions between the UTM grid and WGS84 for footprints and bboxes."""

    def __init__(self, epsg: int) -> None:
        self.to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
        self.to_utm = Transformer.from_crs(4326, epsg, always_xy=True)

    def polygon(self, xy: Sequence[tuple[float, float]]) -> tuple[dict[str, Any], list[float]]:
        """GeoJSON polygon (lon/lat, 7 decimals, closed ring, counter-clockwise) and its bbox."""
        xs, ys = zip(*xy, strict=True)
        lon, lat = self.to_ll.transform(np.array(xs), np.array(ys))
        ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
        ring.append(ring[0])
        bbox = [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)]
        return {"type": "Polygon", "coordinates": [ring]}, bbox


def _rect(minx: float, miny: float, maxx: float, maxy: float) -> list[tuple[float, float]]:
    return [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)]


# --------------------------------------------------------------------------------------------
# the writer


@dataclass
class _Layout:
    """Pixel layout of the simulated area: world grid, S2 tiles and their windows in it."""

    tile_size: int
    overlap: int
    margin: int

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "margin"):
            v = getattr(self, name)
            if v % 6:
                raise ValueError(f"{name}={v} must be a multiple of 6 so that 20 m and 60 m bands tile exactly")
        if not 0 < self.overlap < self.tile_size // 2:
            raise ValueError(f"overlap={self.overlap} must be in (0, tile_size/2)")
        n, o, p = self.tile_size, self.overlap, self.margin
        self.xb, self.ytop = TILE_B_ORIGIN
        self.xa = self.xb - (n - o) * RES
        self.world_x0, self.world_y0 = self.xa - p * RES, self.ytop + p * RES
        self.shape = (n + 2 * p, 2 * n - o + 2 * p)
        # tile name -> (row0, col0) of the tile window in the world grid
        self.tiles = {"33UXP": (p, p), "33UYP": (p, p + n - o)}

    def tile_bounds(self, name: str) -> tuple[float, float, float, float]:
        r0, c0 = self.tiles[name]
        minx = self.world_x0 + c0 * RES
        maxy = self.world_y0 - r0 * RES
        return (minx, maxy - self.tile_size * RES, minx + self.tile_size * RES, maxy)

    def world_bounds(self) -> tuple[float, float, float, float]:
        h, w = self.shape
        return (self.world_x0, self.world_y0 - h * RES, self.world_x0 + w * RES, self.world_y0)

    def aoi_bounds(self) -> tuple[float, float, float, float]:
        """A 4 km x 3 km AOI centred on the tile overlap (crosses both tiles)."""
        cx = self.xb + self.overlap * RES / 2
        cy = self.ytop - self.tile_size * RES / 2
        hw, hh = min(2000.0, self.tile_size * RES * 0.3), min(1500.0, self.tile_size * RES * 0.25)
        return (cx - hw, cy - hh, cx + hw, cy + hh)


def _nodata_wedge(layout: _Layout) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Nodata mask of tile 33UXP on date 0 (a swath-edge wedge inside the overlap) and the valid footprint."""
    n, o = layout.tile_size, layout.overlap
    rows = np.arange(n)[:, None]
    cols = np.arange(n)[None, :]
    c_top, c_bottom = n - o // 3, n - (2 * o) // 3  # boundary column at the top and bottom rows
    boundary = c_top + (c_bottom - c_top) * rows / (n - 1)
    mask = cols >= np.round(boundary)
    minx, miny, maxx, maxy = layout.tile_bounds("33UXP")
    footprint = [(minx, miny), (minx + c_bottom * RES, miny), (minx + c_top * RES, maxy), (minx, maxy)]
    return mask, footprint


def write_demo_catalog(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    tile_size: int = 720,
    overlap: int = 60,
    margin: int = 30,
    s2_acquisitions: Sequence[S2Acquisition] = DEFAULT_S2,
    s1_passes: Sequence[S1Pass] = DEFAULT_S1,
    href_base: str | None = None,
) -> SimCatalog:
    """Write the simulated catalog (COGs + STAC JSON) to ``out_dir`` and describe it (SIMULATED DATA).

    ``tile_size`` is the S2 tile width in 10 m pixels, ``overlap`` how many columns the two tiles
    share, ``margin`` how far S1 and WorldCover reach beyond the S2 tiles (all multiples of 6).
    Asset hrefs are absolute file paths, or ``href_base`` + the path relative to ``out_dir`` when
    given (for serving the directory over HTTP). Same seed and arguments give byte-identical COGs
    and identical JSON.
    """
    root = Path(out_dir).resolve()
    layout = _Layout(tile_size, overlap, margin)
    if (root / "simcatalog.json").is_file():
        # Rewriting an earlier simulated catalog: drop its outputs so no stale item or COG survives.
        for sub in _OUTPUT_DIRS:
            shutil.rmtree(root / sub, ignore_errors=True)
    elif root.is_dir() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no simcatalog.json: refusing to write a simulated catalog into "
            "a directory that cloudlulc.simulate did not create (choose an empty or new directory)"
        )
    root.mkdir(parents=True, exist_ok=True)
    land = make_landscape(seed, layout.shape)
    writer = _CogWriter()
    try:
        return _write_all(root, seed, layout, land, writer, s2_acquisitions, s1_passes, href_base)
    finally:
        writer.close()


def _write_all(
    root: Path,
    seed: int,
    layout: _Layout,
    land: Landscape,
    writer: _CogWriter,
    s2_acquisitions: Sequence[S2Acquisition],
    s1_passes: Sequence[S1Pass],
    href_base: str | None,
) -> SimCatalog:
    """Everything :func:`write_demo_catalog` writes, rasters through ``writer``."""
    geo = _Geo(EPSG)
    crs = CRS.from_epsg(EPSG)
    tile_size, overlap, margin = layout.tile_size, layout.overlap, layout.margin

    def href(path: Path) -> str:
        if href_base is None:
            return str(path)
        return f"{href_base.rstrip('/')}/{path.relative_to(root).as_posix()}"

    s2_items = [
        item
        for i, acq in enumerate(s2_acquisitions)
        for item in _write_s2(root, land, layout, geo, crs, seed, i, acq, href, writer)
    ]
    s1_items = [
        item
        for j, pas in enumerate(s1_passes)
        for item in _write_s1(root, land, layout, geo, crs, seed, j, pas, href, writer)
    ]
    wc_item = _write_worldcover(root, land, layout, geo, href, writer)
    truth_path = root / "truth" / "lulc_truth.tif"
    wb = layout.world_bounds()
    writer.write(
        truth_path,
        land.labels,
        transform=from_origin(wb[0], wb[3], RES, RES),
        crs=crs,
        nodata=255,
        resampling="nearest",
    )
    writer.wait()
    # The file extension fields need the finished files.
    for it in s1_items:
        for asset in it["assets"].values():
            path = _local_path(asset["href"], root, href_base)
            asset["file:size"] = path.stat().st_size
            asset["file:checksum"] = _multihash_md5(path)

    items_by_col = {S2_COLLECTION: s2_items, S1_COLLECTION: s1_items, LABEL_COLLECTION: [wc_item]}
    # STAC 1.0.0 requires a "collection" link on items that name a collection; like the PC's, it is
    # absolute (the collection document written under api/, or its URL below href_base).
    for cid, its in items_by_col.items():
        for it in its:
            it["links"].append(
                {"rel": "collection", "href": href(root / "api" / f"{cid}.collection.json"), "type": "application/json"}
            )
    collections = []
    col_paths, ic_paths = [], []
    for cid in COLLECTION_IDS:
        its = items_by_col[cid]
        bbox = [
            min(it["bbox"][0] for it in its),
            min(it["bbox"][1] for it in its),
            max(it["bbox"][2] for it in its),
            max(it["bbox"][3] for it in its),
        ]
        starts = [it["properties"].get("start_datetime") or it["properties"]["datetime"] for it in its]
        ends = [it["properties"].get("end_datetime") or it["properties"]["datetime"] for it in its]
        interval = [_iso(min(starts, key=_parse_dt)), _iso(max(ends, key=_parse_dt))]
        item_links = [{"rel": "item", "href": f"./items/{it['id']}.json", "type": "application/geo+json"} for it in its]
        col = md.collection_dict(cid, bbox, interval)
        col_file = dict(col)
        col_file["links"] = col["links"] + [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../../catalog.json", "type": "application/json"},
            *item_links,
        ]
        col_dir = root / "collections" / cid
        _write_json(col_dir / "collection.json", col_file)
        for it in its:
            single = dict(it)
            single["links"] = [ln for ln in it["links"] if ln["rel"] != "collection"] + [
                {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                {"rel": "root", "href": "../../../catalog.json", "type": "application/json"},
            ]
            _write_json(col_dir / "items" / f"{it['id']}.json", single)
        # rustac serve inputs: a bare collection (item links would make it look for the item files)
        # and one FeatureCollection of its items.
        api_col = root / "api" / f"{cid}.collection.json"
        _write_json(api_col, col)
        ic_path = root / "api" / f"{cid}.items.json"
        _write_json(ic_path, {"type": "FeatureCollection", "features": its})
        collections.append(col)
        col_paths.append(api_col)
        ic_paths.append(ic_path)

    _write_json(
        root / "catalog.json",
        {
            "type": "Catalog",
            "id": "cloudlulc-simulated",
            "stac_version": md.STAC_VERSION,
            "description": "SIMULATED Planetary-Computer-shaped catalog written by cloudlulc.simulate. "
            + md.SIMULATED_NOTE,
            "links": [
                {"rel": "root", "href": "./catalog.json", "type": "application/json"},
                *[
                    {"rel": "child", "href": f"./collections/{cid}/collection.json", "type": "application/json"}
                    for cid in COLLECTION_IDS
                ],
            ],
        },
    )

    aoi_utm = layout.aoi_bounds()
    _, aoi_bbox = geo.polygon(_rect(*aoi_utm))
    cat = SimCatalog(
        root=root,
        collections=collections,
        items=s2_items + s1_items + [wc_item],
        aoi_bbox_lonlat=tuple(aoi_bbox),  # type: ignore[arg-type]
        s2_dates=[a.datetime for a in s2_acquisitions],
        epsg=EPSG,
        item_collection_paths=ic_paths,
        collection_paths=col_paths,
        truth_path=truth_path,
        seed=seed,
        tiles={name: layout.tile_bounds(name) for name in layout.tiles},
        aoi_bounds_utm=aoi_utm,
        s1_dates=[p.start for p in s1_passes],
    )
    _write_json(
        root / "simcatalog.json",
        {
            "simulated": True,
            "description": md.SIMULATED_NOTE,
            "seed": seed,
            "epsg": EPSG,
            "tile_size": tile_size,
            "overlap": overlap,
            "margin": margin,
            "aoi_bbox_lonlat": list(cat.aoi_bbox_lonlat),
            "aoi_bounds_utm": list(aoi_utm),
            "s2_dates": [d.isoformat() for d in cat.s2_dates],
            "s1_dates": [d.isoformat() for d in cat.s1_dates],
            "tiles": {k: list(v) for k, v in cat.tiles.items()},
            "truth_path": truth_path.relative_to(root).as_posix(),
            "collection_paths": [p.relative_to(root).as_posix() for p in col_paths],
            "item_collection_paths": [p.relative_to(root).as_posix() for p in ic_paths],
            "href_base": href_base,
            "default_acquisitions": tuple(s2_acquisitions) == DEFAULT_S2 and tuple(s1_passes) == DEFAULT_S1,
        },
    )
    return cat


def _local_path(href: str, root: Path, href_base: str | None) -> Path:
    if href_base is not None and href.startswith(href_base.rstrip("/") + "/"):
        return root / href[len(href_base.rstrip("/")) + 1 :]
    return Path(href)


def _parse_dt(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _iso(s: str) -> str:
    return _parse_dt(s).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _s2_percentages(scl: np.ndarray) -> dict[str, float]:
    """The ``s2:*_percentage`` properties and ``eo:cloud_cover`` computed from the SCL like Sen2Cor."""
    total = scl.size
    valid = scl != SCL_NODATA
    nvalid = max(int(valid.sum()), 1)

    def pct(*classes: int) -> float:
        return round(100.0 * float(np.isin(scl, classes).sum()) / nvalid, 6)

    return {
        "eo:cloud_cover": pct(8, 9, 10),
        "s2:water_percentage": pct(6),
        "s2:snow_ice_percentage": pct(11),
        "s2:vegetation_percentage": pct(4),
        "s2:thin_cirrus_percentage": pct(10),
        "s2:cloud_shadow_percentage": pct(3),
        "s2:nodata_pixel_percentage": round(100.0 * float((~valid).sum()) / total, 6),
        "s2:unclassified_percentage": pct(7),
        "s2:dark_features_percentage": pct(2),
        "s2:not_vegetated_percentage": pct(5),
        "s2:high_proba_clouds_percentage": pct(9),
        "s2:medium_proba_clouds_percentage": pct(8),
    }


def _write_s2(
    root: Path,
    land: Landscape,
    layout: _Layout,
    geo: _Geo,
    crs: CRS,
    seed: int,
    index: int,
    acq: S2Acquisition,
    href: Callable[[Path], str],
    writer: _CogWriter,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 2, index])
    clear = render_optical(land, acq.season, rng)
    clouds = make_clouds(rng, land.shape, acq.cloud_cover)
    scl_world = scene_classification(land.labels, clear, clouds)
    optical = apply_clouds(clear, clouds, rng, in_place=True)  # the clear cube is not needed any more
    del clear
    offset = 1000 if float(acq.processing_baseline) >= 4.0 else 0
    n = layout.tile_size
    dt = acq.datetime
    stamp = dt.strftime("%Y%m%dT%H%M%S")
    gen = dt + timedelta(hours=2, minutes=37, seconds=11)
    gen_stamp = gen.strftime("%Y%m%dT%H%M%S")
    sat = "S2A" if acq.platform.endswith("A") else "S2B"
    nbase = "N" + acq.processing_baseline.replace(".", "")
    abs_orbit = 34000 + (dt - _utc(2022, 1, 1)).days * 14 + (0 if sat == "S2B" else 9000)
    items = []
    for name, (r0, c0) in layout.tiles.items():
        win = (slice(r0, r0 + n), slice(c0, c0 + n))
        refl = optical[:, win[0], win[1]]
        scl = scl_world[win].copy()
        nodata = np.zeros((n, n), bool)
        minx, miny, maxx, maxy = layout.tile_bounds(name)
        footprint = _rect(minx, miny, maxx, maxy)
        if index == 0 and name == "33UXP":
            nodata, footprint = _nodata_wedge(layout)
        item_id = f"{sat}_MSIL2A_{stamp}_R{acq.relative_orbit:03d}_T{name}_{gen_stamp}"
        data_dir = root / "data" / S2_COLLECTION / item_id
        assets: dict[str, Any] = {}
        for b, key in enumerate(S2_BANDS):
            res = S2_NATIVE_RES[key]
            k = res // RES
            band = _block_mean(refl[b], k)
            dn = np.clip(np.round(band * 10000.0) + offset, 1, 65535).astype(np.uint16)
            dn[_block_any(nodata, k)] = 0
            path = data_dir / f"{key}_{res}m.tif"
            transform = from_origin(minx, maxy, res, res)
            writer.write(path, dn, transform=transform, crs=crs, nodata=0, resampling="average")
            assets[key] = md.s2_band_asset(
                key, href(path), [minx, miny, maxx, maxy], [n // k, n // k], list(transform)[:6]
            )
        scl20 = scl[::2, ::2].copy()
        scl20[_block_any(nodata, 2)] = SCL_NODATA
        path = data_dir / "SCL_20m.tif"
        transform = from_origin(minx, maxy, 20, 20)
        writer.write(path, scl20, transform=transform, crs=crs, nodata=0, resampling="nearest")
        assets["SCL"] = md.s2_scl_asset(href(path), [minx, miny, maxx, maxy], [n // 2, n // 2], list(transform)[:6])
        geometry, bbox = geo.polygon(footprint)
        pcts = _s2_percentages(scl20)
        granule = f"{sat}_OPER_MSI_L2A_TL_MSFT_{gen_stamp}_A{abs_orbit:06d}_T{name}_{nbase[0]}{acq.processing_baseline}"
        props: dict[str, Any] = {
            "datetime": _fmt_dt(dt),
            "platform": acq.platform,
            "proj:epsg": EPSG,
            "instruments": ["msi"],
            "s2:mgrs_tile": name,
            "constellation": "Sentinel 2",
            "s2:granule_id": granule,
            "eo:cloud_cover": pcts.pop("eo:cloud_cover"),
            "s2:datatake_id": f"G{sat}_{stamp}_{abs_orbit:06d}_{nbase[0]}{acq.processing_baseline}",
            "s2:product_uri": f"{sat}_MSIL2A_{stamp}_{nbase}_R{acq.relative_orbit:03d}_T{name}_{gen_stamp}.SAFE",
            "s2:datastrip_id": f"{sat}_OPER_MSI_L2A_DS_MSFT_{gen_stamp}_S{stamp}_{nbase[0]}{acq.processing_baseline}",
            "s2:product_type": "S2MSI2A",
            "sat:orbit_state": "descending",
            "s2:datatake_type": "INS-NOBS",
            "s2:generation_time": _fmt_dt(gen),
            "sat:relative_orbit": acq.relative_orbit,
            "s2:mean_solar_zenith": round(64.0 + 4.0 * np.cos(2 * np.pi * (dt.timetuple().tm_yday - 10) / 365), 6),
            "s2:mean_solar_azimuth": 163.2,
            "s2:processing_baseline": acq.processing_baseline,
            "s2:degraded_msi_data_percentage": 0.0,
            "s2:reflectance_conversion_factor": round(
                1 + 0.0334 * np.cos(2 * np.pi * (dt.timetuple().tm_yday - 3) / 365), 9
            ),
            "s2:saturated_defective_pixel_percentage": 0.0,
            **pcts,
            "cloudlulc:simulated": True,
        }
        items.append(
            {
                "id": item_id,
                "bbox": bbox,
                "type": "Feature",
                "links": [{"rel": "license", "href": md.LICENSE_LINKS[S2_COLLECTION]}],
                "geometry": geometry,
                "collection": S2_COLLECTION,
                "properties": props,
                "assets": assets,
                "stac_extensions": [md.EXT["eo"], md.EXT["sat"], md.EXT["proj"]],
                "stac_version": md.STAC_VERSION,
            }
        )
    return items


def _write_s1(
    root: Path,
    land: Landscape,
    layout: _Layout,
    geo: _Geo,
    crs: CRS,
    seed: int,
    index: int,
    pas: S1Pass,
    href: Callable[[Path], str],
    writer: _CogWriter,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 3, index])
    lin = _quantize((10.0 ** (render_sar(land, pas.season, rng) / 10.0)).astype(np.float32))  # [2, H, W]
    h, w = layout.shape
    # Frames of a pass: horizontal strips overlapping by 24 rows (real slices overlap a little).
    bounds = np.linspace(0, h, pas.slices + 1).round().astype(int)
    items = []
    for s in range(pas.slices):
        r0 = max(0, int(bounds[s]) - (12 if s > 0 else 0))
        r1 = min(h, int(bounds[s + 1]) + (12 if s < pas.slices - 1 else 0))
        start = pas.start + timedelta(seconds=12.2 * s)
        end = start + timedelta(seconds=12.4 + 0.0125 * index)
        dt = start + (end - start) / 2
        a, b = start.strftime("%Y%m%dT%H%M%S"), end.strftime("%Y%m%dT%H%M%S")
        datatake = (0x67DF2 + 37 * pas.absolute_orbit) & 0xFFFFFF
        item_id = f"S1A_IW_GRDH_1SDV_{a}_{b}_{pas.absolute_orbit:06d}_{datatake:06X}_rtc"
        x0, ytop = layout.world_x0, layout.world_y0 - r0 * RES
        transform = from_origin(x0, ytop, RES, RES)
        data_dir = root / "data" / S1_COLLECTION / item_id
        assets: dict[str, Any] = {}
        for p, key in enumerate(("vh", "vv")):
            arr = lin[1 if key == "vh" else 0, r0:r1].copy()
            path = data_dir / f"iw-{key}.rtc.tif"
            writer.write(path, arr, transform=transform, crs=crs, nodata=-32768.0, resampling="average")
            title, desc = md.S1_ASSET_META[key]
            assets[key] = {
                "href": href(path),
                "file:size": 0,  # filled in once the file is written
                "file:checksum": "",
                "type": md.COG_TYPE,
                "roles": ["data"],
                "title": title,
                "description": desc,
                "raster:bands": [dict(b) for b in md.S1_RASTER_BANDS],
            }
        minx, maxy = x0, ytop
        maxx, miny = x0 + w * RES, ytop - (r1 - r0) * RES
        geometry, bbox = geo.polygon(_rect(minx, miny, maxx, maxy))
        props = {
            "datetime": _fmt_dt(dt),
            "platform": "SENTINEL-1A",
            "s1:shape": [w, r1 - r0],
            "proj:bbox": [minx, miny, maxx, maxy],
            "proj:epsg": EPSG,
            "proj:shape": [r1 - r0, w],
            "end_datetime": _pc_space_dt(end),
            "constellation": "Sentinel-1",
            "s1:resolution": "high",
            "proj:transform": [*list(transform)[:6], 0.0, 0.0, 1.0],
            "s1:datatake_id": str(datatake),
            "start_datetime": _pc_space_dt(start),
            "s1:orbit_source": "RESORB",
            "s1:slice_number": str(s + 1),
            "s1:total_slices": str(pas.slices),
            "sar:looks_range": 5,
            "sat:orbit_state": pas.orbit_state,
            "sar:product_type": "GRD",
            "sar:looks_azimuth": 1,
            "sar:polarizations": ["VV", "VH"],
            "sar:frequency_band": "C",
            "sat:absolute_orbit": pas.absolute_orbit,
            "sat:relative_orbit": pas.relative_orbit,
            "s1:processing_level": "1",
            "sar:instrument_mode": "IW",
            "sar:center_frequency": 5.405,
            "sar:resolution_range": 20,
            "s1:product_timeliness": "Fast-24h",
            "sar:resolution_azimuth": 22,
            "sar:pixel_spacing_range": 10,
            "sar:observation_direction": "right",
            "sar:pixel_spacing_azimuth": 10,
            "sar:looks_equivalent_number": 4.4,
            "s1:instrument_configuration_ID": "7",
            "sat:platform_international_designator": "2014-016A",
            "cloudlulc:simulated": True,
        }
        items.append(
            {
                "id": item_id,
                "bbox": bbox,
                "type": "Feature",
                "links": [{"rel": "license", "href": md.LICENSE_LINKS[S1_COLLECTION]}],
                "assets": assets,
                "geometry": geometry,
                "collection": S1_COLLECTION,
                "properties": props,
                "stac_extensions": [md.EXT["sar"], md.EXT["sat"], md.EXT["proj"], md.EXT["file"], md.EXT["raster"]],
                "stac_version": md.STAC_VERSION,
            }
        )
    return items


def worldcover_codes(land: Landscape) -> np.ndarray:
    """CloudLULC classes -> WorldCover codes, with shrubland and wetland variants of grassland."""
    lut = np.zeros(256, np.uint8)
    for k, v in LULC_TO_WORLDCOVER.items():
        lut[k] = v
    codes = lut[land.labels]
    grass = land.labels == GRASSLAND
    codes[grass & (land.texture > 1.2)] = 20  # shrubland
    codes[grass & (land.brightness < np.quantile(land.brightness, 0.05))] = 90  # herbaceous wetland
    return codes


def _write_worldcover(
    root: Path, land: Landscape, layout: _Layout, geo: _Geo, href: Callable[[Path], str], writer: _CogWriter
) -> dict[str, Any]:
    codes = worldcover_codes(land)
    wb = layout.world_bounds()
    src_transform = from_origin(wb[0], wb[3], RES, RES)
    # WorldCover grid: EPSG:4326, 1/12000 degree, aligned on whole degrees.
    deg = 1.0 / 12000.0
    lon, lat = geo.to_ll.transform(np.array([wb[0], wb[2], wb[2], wb[0]]), np.array([wb[1], wb[1], wb[3], wb[3]]))
    # the largest lon/lat rectangle inside the UTM world (no nodata at the edges)
    west, east = max(lon[0], lon[3]), min(lon[1], lon[2])
    south, north = max(lat[0], lat[1]), min(lat[2], lat[3])
    c0, c1 = int(np.ceil(west / deg)), int(np.floor(east / deg))
    r0, r1 = int(np.ceil(south / deg)), int(np.floor(north / deg))
    width, height = c1 - c0, r1 - r0
    dst_transform = from_origin(c0 * deg, r1 * deg, deg, deg)
    dst = np.zeros((height, width), np.uint8)
    reproject(
        codes,
        dst,
        src_transform=src_transform,
        src_crs=CRS.from_epsg(EPSG),
        dst_transform=dst_transform,
        dst_crs=CRS.from_epsg(4326),
        resampling=Resampling.nearest,
        src_nodata=0,
        dst_nodata=0,
    )
    tile = f"N{int(np.floor(south / 3) * 3):02d}E{int(np.floor(west / 3) * 3):03d}"
    item_id = f"ESA_WorldCover_10m_2021_v200_{tile}"
    path = root / "data" / LABEL_COLLECTION / item_id / f"{item_id}_Map.tif"
    writer.write(path, dst, transform=dst_transform, crs=CRS.from_epsg(4326), nodata=0, resampling="nearest")
    bbox = [c0 * deg, r0 * deg, c1 * deg, r1 * deg]
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
    return {
        "type": "Feature",
        "stac_version": md.STAC_VERSION,
        "id": item_id,
        "properties": {
            "esa_worldcover:product_version": "2.0.0",
            "esa_worldcover:product_tile": tile,
            "start_datetime": "2021-01-01T00:00:00Z",
            "end_datetime": "2021-12-31T23:59:59Z",
            "description": "SIMULATED ESA WorldCover-style product at 10m resolution",
            "mission": "sentinel-1, sentinel-2",
            "platform": "sentinel-1a, sentinel-1b, sentinel-2a, sentinel-2b",
            "instruments": ["c-sar", "msi"],
            "proj:epsg": 4326,
            "grid:code": f"ESAWORLDCOVER-{tile}",
            "datetime": None,
            "cloudlulc:simulated": True,
        },
        "links": [{"rel": "license", "href": md.LICENSE_LINKS[LABEL_COLLECTION]}],
        "assets": {
            "map": {
                "href": href(path),
                "type": md.COG_TYPE,
                "title": "Land Cover Classes",
                "description": "Discrete classification according to the Land Cover Classification System scheme developed by the United Nations Food and Agriculture Organization",
                "raster:bands": [dict(b) for b in md.WORLDCOVER_RASTER_BANDS],
                "classification:classes": [dict(c) for c in md.WORLDCOVER_CLASSES],
                "proj:transform": list(dst_transform)[:6],
                "proj:shape": [height, width],
                "created": "2022-10-21T07:35:40.236136Z",
                "roles": ["data"],
            }
        },
        "bbox": bbox,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "stac_extensions": [md.EXT["proj"], md.EXT["grid"], md.EXT["raster"], md.EXT["classification"]],
        "collection": LABEL_COLLECTION,
    }


def ensure_demo_catalog(
    out_dir: str | os.PathLike[str] = DEFAULT_DEMO_DIR,
    seed: int = 0,
    *,
    tile_size: int = 720,
    overlap: int = 60,
    margin: int = 30,
) -> SimCatalog:
    """The demo catalog at ``out_dir``: loaded when one with these parameters is there, else written.

    Writing is deterministic, so reusing an existing catalog gives the same bytes as rewriting it
    (with the default acquisitions and local-file hrefs).
    """
    manifest = Path(out_dir) / "simcatalog.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        wanted = {"seed": seed, "tile_size": tile_size, "overlap": overlap, "margin": margin, "href_base": None}
        if all(m.get(k) == v for k, v in wanted.items()) and m.get("default_acquisitions") is True:
            return SimCatalog.load(out_dir)
    return write_demo_catalog(out_dir, seed=seed, tile_size=tile_size, overlap=overlap, margin=margin)
