"""A STAC Collection and one Item per mapped time, describing a mosaic store for other tools.

The Planetary Computer publishes a STAC Item per land-cover product; so does CloudLULC. Beside the
store ``out/x.zarr`` it writes ``out/x.stac/collection.json`` and ``out/x.stac/items/<id>.json``
(STAC 1.0.0, with the projection, raster, classification, file and eo extensions), from what the
store records: the grid, each published slice's provenance (source Sentinel-2 and Sentinel-1 items
as ``derived_from`` links, S1 gap, inputs, model), and the COG and quicklook exported for it.
Hrefs between the files are relative, so the folder can be copied or served as it is;
:func:`publish_stac` POSTs the documents to a transactional STAC API.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cloudlulc.classes import CLASSES, NODATA
from cloudlulc.stac.urls import redact_url
from cloudlulc.store.reader import open_mosaic
from cloudlulc.store.schema import PROBABILITIES

__all__ = ["STAC_EXTENSIONS", "publish_stac", "stac_dir_for", "stac_documents", "write_stac"]

STAC_VERSION = "1.0.0"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v1.0.0/schema.json",
    "https://stac-extensions.github.io/file/v2.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
]
ZARR_MEDIA_TYPE = "application/vnd+zarr"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def stac_dir_for(store: str | Path) -> str:
    """Where the STAC documents of ``store`` go: ``x.zarr`` -> ``x.stac`` beside it."""
    text = str(store).rstrip("/")
    stem = text[: -len(".zarr")] if text.endswith(".zarr") else text
    return f"{stem}.stac"


def _collection_id(store: str) -> str:
    name = Path(str(store).rstrip("/")).name
    return "cloudlulc-" + (name[: -len(".zarr")] if name.endswith(".zarr") else name)


def _classes() -> list[dict[str, Any]]:
    return [
        {"value": c.value, "name": c.name, "description": c.name, "color_hint": c.colour.lstrip("#").upper()}
        for c in CLASSES
    ]


def _grid(ds: Any) -> tuple[int, tuple[float, float, float, float], float, list[int], list[float], Any]:
    """EPSG, bounds, resolution, shape, transform (6 numbers) and lon/lat footprint of the store."""
    from cloudlulc.cube.grid import Grid

    xs, ys = np.asarray(ds["x"].values), np.asarray(ds["y"].values)
    res = float(abs(xs[1] - xs[0])) if xs.size > 1 else 10.0
    bounds = (
        float(xs.min()) - res / 2,
        float(ys.min()) - res / 2,
        float(xs.max()) + res / 2,
        float(ys.max()) + res / 2,
    )
    epsg = int(ds.rio.crs.to_epsg())
    grid = Grid(epsg, bounds, res)
    transform = [res, 0.0, bounds[0], 0.0, -res, bounds[3]]
    return epsg, bounds, res, [len(ys), len(xs)], transform, grid.footprint_lonlat()


def _file_info(path: str | None) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (sha2-256 multihash) of a local file."""
    if path is None or "://" in path or not Path(path).is_file():
        return {}
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file:size": Path(path).stat().st_size, "file:checksum": "1220" + digest}


def _href(target: str, from_dir: str) -> str:
    """``target`` relative to ``from_dir`` when both are local paths, else as it is."""
    if "://" in target or "://" in from_dir:
        return target
    return Path(os.path.relpath(Path(target).resolve(), Path(from_dir).resolve())).as_posix()


def stac_documents(
    store: str | Path,
    *,
    catalog_url: str | None = None,
    stac_dir: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Collection and Items (dicts) describing ``store``'s published slices.

    A slice's ``exports`` (recorded in its provenance: ``{"cog": path, "quicklook": path}``) become
    its item's assets; ``catalog_url`` is where the source items live (``derived_from`` links).
    """
    store = str(store)
    stac_dir = stac_dir or stac_dir_for(store)
    items_dir = f"{stac_dir}/items"
    ds = open_mosaic(store)
    epsg, bounds, res, shape, transform, footprint = _grid(ds)
    lonlat_bbox = [round(v, 7) for v in footprint.bounds]
    geometry = json.loads(json.dumps(footprint.__geo_interface__))
    cid = _collection_id(store)
    provenance: dict[str, dict[str, Any]] = ds.attrs.get("provenance", {})
    catalog = redact_url(catalog_url.rstrip("/")) if catalog_url else None
    items = []
    for iso, entry in sorted(provenance.items()):
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
        item_id = f"{cid}-{t:%Y%m%dT%H%M%S}Z"
        files = dict(entry.get("exports") or {})
        raster_band = {"nodata": NODATA, "data_type": "uint8", "spatial_resolution": res}
        item_assets: dict[str, Any] = {
            "data": {
                "href": _href(store, items_dir),
                "type": ZARR_MEDIA_TYPE,
                "title": f"Zarr mosaic (this item is its time slice {iso})",
                "roles": ["data"],
                "description": "variables lulc, confidence, optical_reliability, cloud, input_quality"
                + (f", {PROBABILITIES}" if PROBABILITIES in ds else "")
                + "; select the slice with time == this item's datetime",
            }
        }
        if files.get("cog"):
            item_assets["lulc"] = {
                "href": _href(files["cog"], items_dir),
                "type": COG_MEDIA_TYPE,
                "title": "land use / land cover classes (COG, colour table, class names in .aux.xml)",
                "roles": ["data"],
                "classification:classes": _classes(),
                "raster:bands": [raster_band],
                **_file_info(files["cog"]),
            }
        if files.get("quicklook"):
            item_assets["thumbnail"] = {
                "href": _href(files["quicklook"], items_dir),
                "type": "image/png",
                "title": "quicklook with legend",
                "roles": ["thumbnail", "overview"],
            }
        links = [
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "root", "href": "../collection.json", "type": "application/json"},
            {"rel": "self", "href": f"./{item_id}.json", "type": "application/geo+json"},
        ]
        if catalog:
            for source_collection, key in (("sentinel-2-l2a", "s2_items"), ("sentinel-1-rtc", "s1_items")):
                for source in entry.get(key) or []:
                    links.append(
                        {
                            "rel": "derived_from",
                            "href": f"{catalog}/collections/{source_collection}/items/{source}",
                            "type": "application/geo+json",
                            "title": source,
                        }
                    )
        properties: dict[str, Any] = {
            "datetime": t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "proj:epsg": epsg,
            "proj:shape": shape,
            "proj:transform": transform,
            "proj:bbox": list(bounds),
            "classification:classes": _classes(),
            "cloudlulc:mode": entry.get("mode", "optical-only" if entry.get("optical_only") else "fused"),
            "cloudlulc:optical_only": bool(entry.get("optical_only")),
            "cloudlulc:s1_gap_days": entry.get("s1_gap_days"),
            "cloudlulc:s1_orbit_state": entry.get("s1_orbit_state"),
            "cloudlulc:inputs": entry.get("inputs"),
            "cloudlulc:model": entry.get("model"),
            "cloudlulc:weights_sha256": entry.get("weights_sha256"),
            "cloudlulc:weights_simulated": entry.get("weights_simulated"),
            "cloudlulc:software_version": entry.get("software_version"),
            "created": entry.get("created"),
        }
        if entry.get("cloud_cover_aoi") is not None:
            properties["eo:cloud_cover"] = float(entry["cloud_cover_aoi"])
        items.append(
            {
                "type": "Feature",
                "stac_version": STAC_VERSION,
                "stac_extensions": STAC_EXTENSIONS,
                "id": item_id,
                "collection": cid,
                "geometry": geometry,
                "bbox": lonlat_bbox,
                "properties": {k: v for k, v in properties.items() if v is not None},
                "links": links,
                "assets": item_assets,
            }
        )
    times = sorted(i["properties"]["datetime"] for i in items)
    collection: dict[str, Any] = {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": STAC_EXTENSIONS[:3],
        "id": cid,
        "title": f"CloudLULC land cover: {Path(store.rstrip('/')).name}",
        "description": (
            "Land use / land cover maps under clouds from Sentinel-2 L2A fused with Sentinel-1 RTC by "
            "CloudLULC-Net, one item per mapped acquisition (modified Copernicus Sentinel data)."
        ),
        "license": "various",
        "extent": {
            "spatial": {"bbox": [lonlat_bbox]},
            "temporal": {"interval": [[times[0] if times else None, times[-1] if times else None]]},
        },
        "summaries": {"classification:classes": _classes(), "proj:epsg": [epsg]},
        "links": [
            {"rel": "root", "href": "./collection.json", "type": "application/json"},
            {"rel": "self", "href": "./collection.json", "type": "application/json"},
            *[{"rel": "item", "href": f"./items/{i['id']}.json", "type": "application/geo+json"} for i in items],
        ],
        "assets": {
            "data": {
                "href": _href(store, stac_dir),
                "type": ZARR_MEDIA_TYPE,
                "title": "Zarr mosaic (all mapped times)",
                "roles": ["data"],
            }
        },
    }
    return collection, items


def write_stac(store: str | Path, **kwargs: Any) -> Path | str:
    """Write the Collection and Items of :func:`stac_documents` beside ``store`` (replacing what a
    previous run wrote); returns the collection's path."""
    import fsspec

    stac_dir = stac_dir_for(store)
    collection, items = stac_documents(store, stac_dir=stac_dir, **kwargs)
    fs, root = fsspec.core.url_to_fs(stac_dir)
    fs.makedirs(f"{root}/items", exist_ok=True)
    keep = {f"{i['id']}.json" for i in items}
    for old in fs.glob(f"{root}/items/*.json"):
        if Path(old).name not in keep:
            fs.rm_file(old)
    for item in items:
        fs.pipe_file(f"{root}/items/{item['id']}.json", (json.dumps(item, indent=2) + "\n").encode())
    fs.pipe_file(f"{root}/collection.json", (json.dumps(collection, indent=2) + "\n").encode())
    return Path(f"{stac_dir}/collection.json") if "://" not in stac_dir else f"{stac_dir}/collection.json"


def publish_stac(store: str | Path, api_url: str, *, timeout: float = 30.0, **kwargs: Any) -> int:
    """POST ``store``'s Collection and Items to a STAC API with the transaction extension (updating
    those that exist); returns the number of items sent. Asset hrefs are sent absolute (``file://``
    for a local store: give the store as a URL for an API that others use); the API makes its own
    navigation links."""
    import httpx

    stac_dir = stac_dir_for(store)
    collection, items = stac_documents(store, stac_dir=stac_dir, **kwargs)
    collection = _for_api(collection, stac_dir)
    items = [_for_api(item, f"{stac_dir}/items") for item in items]
    base = api_url.rstrip("/")
    with httpx.Client(timeout=timeout) as client:
        r = client.post(f"{base}/collections", json=collection)
        if r.status_code == 409:
            r = client.put(f"{base}/collections/{collection['id']}", json=collection)
        r.raise_for_status()
        for item in items:
            r = client.post(f"{base}/collections/{collection['id']}/items", json=item)
            if r.status_code == 409:
                r = client.put(f"{base}/collections/{collection['id']}/items/{item['id']}", json=item)
            r.raise_for_status()
    return len(items)


def _for_api(doc: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """``doc`` with absolute asset hrefs and without the folder's own navigation links."""
    out = json.loads(json.dumps(doc))
    for asset in out.get("assets", {}).values():
        href = asset["href"]
        if "://" not in href:
            asset["href"] = (Path(base_dir) / href).resolve().as_uri()
    out["links"] = [
        ln for ln in out.get("links", []) if ln["rel"] not in ("self", "root", "parent", "collection", "item")
    ]
    return out
