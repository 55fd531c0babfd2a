"""The simulated products: Sentinel-2 L2A items, Sentinel-1 RTC passes, ESA WorldCover (SIMULATED DATA).

Each writer renders its product from the one landscape, writes its COGs and returns its STAC items,
with the Planetary Computer's collection ids, asset keys and property names.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject

from cloudlulc.classes import S2_BANDS
from cloudlulc.simulate import metadata as md
from cloudlulc.simulate.files import _block_any, _block_mean, _CogWriter, _fmt_dt, _pc_space_dt, _quantize
from cloudlulc.simulate.layout import (
    EPSG,
    LABEL_COLLECTION,
    LULC_TO_WORLDCOVER,
    RES,
    S1_COLLECTION,
    S2_COLLECTION,
    S2_NATIVE_RES,
    S1Pass,
    S2Acquisition,
    _Geo,
    _Layout,
    _nodata_wedge,
    _rect,
    _utc,
)
from cloudlulc.simulate.scene import (
    GRASSLAND,
    SCL_NODATA,
    Landscape,
    render_acquisition,
    render_sar,
)


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


def _s2_names(acq: S2Acquisition) -> dict[str, Any]:
    dt = acq.datetime
    gen = dt + timedelta(hours=2, minutes=37, seconds=11)
    sat = "S2A" if acq.platform.endswith("A") else "S2B"
    return {
        "dt": dt,
        "stamp": dt.strftime("%Y%m%dT%H%M%S"),
        "gen": gen,
        "gen_stamp": gen.strftime("%Y%m%dT%H%M%S"),
        "sat": sat,
        "nbase": "N" + acq.processing_baseline.replace(".", ""),
        "abs_orbit": 34000 + (dt - _utc(2022, 1, 1)).days * 14 + (0 if sat == "S2B" else 9000),
    }


def s2_item_id(acq: S2Acquisition, tile: str) -> str:
    """The Planetary Computer id of an L2A item: ``S2A_MSIL2A_<start>_R<orbit>_T<tile>_<generation>``."""
    n = _s2_names(acq)
    return f"{n['sat']}_MSIL2A_{n['stamp']}_R{acq.relative_orbit:03d}_T{tile}_{n['gen_stamp']}"


def s2_item(
    acq: S2Acquisition,
    tile: str,
    epsg: int,
    assets: dict[str, Any],
    geometry: dict[str, Any],
    bbox: list[float],
    percentages: dict[str, float],
) -> dict[str, Any]:
    """A ``sentinel-2-l2a`` item dict with the Planetary Computer's properties (``percentages`` from
    :func:`_s2_percentages`, consumed)."""
    n = _s2_names(acq)
    dt, stamp, gen, gen_stamp, sat, nbase = n["dt"], n["stamp"], n["gen"], n["gen_stamp"], n["sat"], n["nbase"]
    abs_orbit, base = n["abs_orbit"], acq.processing_baseline
    pcts = dict(percentages)
    props: dict[str, Any] = {
        "datetime": _fmt_dt(dt),
        "platform": acq.platform,
        "proj:epsg": epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": tile,
        "constellation": "Sentinel 2",
        "s2:granule_id": f"{sat}_OPER_MSI_L2A_TL_MSFT_{gen_stamp}_A{abs_orbit:06d}_T{tile}_{nbase[0]}{base}",
        "eo:cloud_cover": pcts.pop("eo:cloud_cover"),
        "s2:datatake_id": f"G{sat}_{stamp}_{abs_orbit:06d}_{nbase[0]}{base}",
        "s2:product_uri": f"{sat}_MSIL2A_{stamp}_{nbase}_R{acq.relative_orbit:03d}_T{tile}_{gen_stamp}.SAFE",
        "s2:datastrip_id": f"{sat}_OPER_MSI_L2A_DS_MSFT_{gen_stamp}_S{stamp}_{nbase[0]}{base}",
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": _fmt_dt(gen),
        "sat:relative_orbit": acq.relative_orbit,
        "s2:mean_solar_zenith": round(64.0 + 4.0 * np.cos(2 * np.pi * (dt.timetuple().tm_yday - 10) / 365), 6),
        "s2:mean_solar_azimuth": 163.2,
        "s2:processing_baseline": base,
        "s2:degraded_msi_data_percentage": 0.0,
        "s2:reflectance_conversion_factor": round(
            1 + 0.0334 * np.cos(2 * np.pi * (dt.timetuple().tm_yday - 3) / 365), 9
        ),
        "s2:saturated_defective_pixel_percentage": 0.0,
        **pcts,
        "cloudlulc:simulated": True,
    }
    return {
        "id": s2_item_id(acq, tile),
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
    # the clear cube is not needed: composite in place (half the memory of a large scene)
    rendered = render_acquisition(land, acq.season, acq.cloud_cover, (seed, 2, index), keep_clear=False)
    optical, scl_world = rendered.optical, rendered.scl
    offset = 1000 if float(acq.processing_baseline) >= 4.0 else 0
    n = layout.tile_size
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
        item_id = s2_item_id(acq, name)
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
        items.append(s2_item(acq, name, EPSG, assets, geometry, bbox, _s2_percentages(scl20)))
    return items


def s1_item_id(pas: S1Pass, start: datetime, end: datetime) -> str:
    """The Planetary Computer id of an RTC slice: ``S1A_IW_GRDH_1SDV_<start>_<end>_<orbit>_<datatake>_rtc``."""
    datatake = (0x67DF2 + 37 * pas.absolute_orbit) & 0xFFFFFF
    a, b = start.strftime("%Y%m%dT%H%M%S"), end.strftime("%Y%m%dT%H%M%S")
    return f"S1A_IW_GRDH_1SDV_{a}_{b}_{pas.absolute_orbit:06d}_{datatake:06X}_rtc"


def s1_item(
    pas: S1Pass,
    start: datetime,
    end: datetime,
    epsg: int,
    bounds: tuple[float, float, float, float],
    shape: tuple[int, int],
    hrefs: dict[str, str],
    geometry: dict[str, Any],
    bbox: list[float],
    slice_number: int = 1,
) -> dict[str, Any]:
    """A ``sentinel-1-rtc`` item dict with the Planetary Computer's properties, for one slice of ``pas``
    on a 10 m grid of ``shape`` (rows, cols) within ``bounds``; ``file:*`` are filled once written."""
    minx, miny, maxx, maxy = bounds
    rows, cols = shape
    datatake = (0x67DF2 + 37 * pas.absolute_orbit) & 0xFFFFFF
    assets: dict[str, Any] = {}
    for key in ("vh", "vv"):
        title, desc = md.S1_ASSET_META[key]
        assets[key] = {
            "href": hrefs[key],
            "file:size": 0,  # filled in once the file is written
            "file:checksum": "",
            "type": md.COG_TYPE,
            "roles": ["data"],
            "title": title,
            "description": desc,
            "raster:bands": [dict(b) for b in md.S1_RASTER_BANDS],
        }
    props = {
        "datetime": _fmt_dt(start + (end - start) / 2),
        "platform": "SENTINEL-1A",
        "s1:shape": [cols, rows],
        "proj:bbox": [minx, miny, maxx, maxy],
        "proj:epsg": epsg,
        "proj:shape": [rows, cols],
        "end_datetime": _pc_space_dt(end),
        "constellation": "Sentinel-1",
        "s1:resolution": "high",
        "proj:transform": [*list(from_origin(minx, maxy, RES, RES))[:6], 0.0, 0.0, 1.0],
        "s1:datatake_id": str(datatake),
        "start_datetime": _pc_space_dt(start),
        "s1:orbit_source": "RESORB",
        "s1:slice_number": str(slice_number),
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
    return {
        "id": s1_item_id(pas, start, end),
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
    # the pass's incidence at the scene follows from its relative orbit (IW swath 30-46 deg)
    incidence = 31.0 + (pas.relative_orbit * 7.3) % 14.0
    db = render_sar(
        land, pas.season, rng, orbit_state=pas.orbit_state, incidence_deg=incidence, moisture_db=rng.normal(0.0, 1.0)
    )
    lin = _quantize((10.0 ** (db / 10.0)).astype(np.float32))  # [2, H, W]
    h, w = layout.shape
    # Frames of a pass: horizontal strips overlapping by 24 rows (real slices overlap a little).
    bounds = np.linspace(0, h, pas.slices + 1).round().astype(int)
    items = []
    for s in range(pas.slices):
        r0 = max(0, int(bounds[s]) - (12 if s > 0 else 0))
        r1 = min(h, int(bounds[s + 1]) + (12 if s < pas.slices - 1 else 0))
        start = pas.start + timedelta(seconds=12.2 * s)
        end = start + timedelta(seconds=12.4 + 0.0125 * index)
        item_id = s1_item_id(pas, start, end)
        x0, ytop = layout.world_x0, layout.world_y0 - r0 * RES
        transform = from_origin(x0, ytop, RES, RES)
        data_dir = root / "data" / S1_COLLECTION / item_id
        hrefs = {}
        for key in ("vh", "vv"):
            path = data_dir / f"iw-{key}.rtc.tif"
            writer.write(
                path,
                lin[1 if key == "vh" else 0, r0:r1].copy(),
                transform=transform,
                crs=crs,
                nodata=-32768.0,
                resampling="average",
            )
            hrefs[key] = href(path)
        bounds_utm = (x0, ytop - (r1 - r0) * RES, x0 + w * RES, ytop)
        geometry, bbox = geo.polygon(_rect(*bounds_utm))
        items.append(s1_item(pas, start, end, EPSG, bounds_utm, (r1 - r0, w), hrefs, geometry, bbox, s + 1))
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
                "description": "Discrete classification according to the Land Cover Classification System scheme developed by the United Nations Food and Agriculture Organization",  # noqa: E501
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
