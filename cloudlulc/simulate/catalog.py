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

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.transform import from_origin

from cloudlulc.simulate import metadata as md
from cloudlulc.simulate.files import _CogWriter, _iso, _multihash_md5, _parse_dt, _write_json
from cloudlulc.simulate.layout import (
    DEFAULT_S1,
    DEFAULT_S2,
    EPSG,
    LABEL_COLLECTION,
    RES,
    S1_COLLECTION,
    S2_COLLECTION,
    S1Pass,
    S2Acquisition,
    _Geo,
    _Layout,
    _rect,
)
from cloudlulc.simulate.products import _write_s1, _write_s2, _write_worldcover
from cloudlulc.simulate.scene import (
    Landscape,
    make_landscape,
)

#: Where `make demo` keeps its catalog (relative to the working directory).
DEFAULT_DEMO_DIR = Path(".demo") / "catalog"


#: Sub-directories write_demo_catalog creates (and removes again before rewriting a catalog).
_OUTPUT_DIRS = ("api", "collections", "data", "truth")


COLLECTION_IDS = (S2_COLLECTION, S1_COLLECTION, LABEL_COLLECTION)


#: bumped whenever the rendering changes, so that a catalog written by an older simulator is
#: rewritten instead of reused (the demo weights are scored against the current one)
SIMULATOR_VERSION = 2


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
            aoi_bbox_lonlat=tuple(m["aoi_bbox_lonlat"]),
            s2_dates=[datetime.fromisoformat(d) for d in m["s2_dates"]],
            epsg=int(m["epsg"]),
            item_collection_paths=ic_paths,
            collection_paths=col_paths,
            truth_path=root / m["truth_path"],
            seed=int(m["seed"]),
            tiles={k: tuple(v) for k, v in m["tiles"].items()},
            aoi_bounds_utm=tuple(m["aoi_bounds_utm"]),
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
        interval: list[str | None] = [_iso(min(starts, key=_parse_dt)), _iso(max(ends, key=_parse_dt))]
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
            "simulator_version": SIMULATOR_VERSION,
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
        wanted = {
            "seed": seed,
            "tile_size": tile_size,
            "overlap": overlap,
            "margin": margin,
            "href_base": None,
            "simulator_version": SIMULATOR_VERSION,
        }
        if all(m.get(k) == v for k, v in wanted.items()) and m.get("default_acquisitions") is True:
            return SimCatalog.load(out_dir)
    return write_demo_catalog(out_dir, seed=seed, tile_size=tile_size, overlap=overlap, margin=margin)
