"""Read a raster through GDAL and print what GDAL sees, as JSON (used by the mosaic tests).

Usage: ``python tests/gdal_read.py 'ZARR:"path/to/store.zarr":/lulc'``

Spec-final Zarr v3 (the ``bytes`` codec) is readable from GDAL 3.11 on. rasterio 1.4.4 wheels (the
newest for Python 3.11) bundle GDAL 3.10, which is too old, so when rasterio's GDAL is older this
script drives the GDAL that the pyogrio wheel bundles (3.12) through GDAL's C API with ctypes. It
runs in its own process so that two GDAL libraries never share one.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:2])


def read_with_rasterio(name: str) -> dict:
    import rasterio

    with rasterio.open(name) as src:
        return {
            "gdal": rasterio.__gdal_version__,
            "width": src.width,
            "height": src.height,
            "count": src.count,
            "geotransform": list(src.transform.to_gdal()),
            "wkt": src.crs.to_wkt() if src.crs else "",
            "nodata": src.nodata,
            "bands": [src.read(i + 1).tolist() for i in range(src.count)],
        }


def read_with_ctypes(name: str) -> dict:
    import pyogrio

    base = os.path.dirname(pyogrio.__file__)
    os.environ.setdefault("PROJ_DATA", os.path.join(base, "proj_data"))
    os.environ.setdefault("GDAL_DATA", os.path.join(base, "gdal_data"))
    libs = glob.glob(os.path.join(base, "..", "pyogrio.libs", "libgdal*"))
    if not libs:
        raise RuntimeError("no GDAL >= 3.11 available (rasterio's is older and pyogrio bundles none)")
    lib = ctypes.CDLL(libs[0])
    vp, cp, ci, cd = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_double
    lib.GDALAllRegister()
    lib.GDALVersionInfo.restype, lib.GDALVersionInfo.argtypes = cp, [cp]
    lib.GDALOpen.restype, lib.GDALOpen.argtypes = vp, [cp, ci]
    lib.CPLGetLastErrorMsg.restype = cp
    lib.GDALGetRasterXSize.argtypes = lib.GDALGetRasterYSize.argtypes = lib.GDALGetRasterCount.argtypes = [vp]
    lib.GDALGetProjectionRef.restype, lib.GDALGetProjectionRef.argtypes = cp, [vp]
    lib.GDALGetGeoTransform.argtypes = [vp, ctypes.POINTER(cd)]
    lib.GDALGetRasterBand.restype, lib.GDALGetRasterBand.argtypes = vp, [vp, ci]
    lib.GDALGetRasterNoDataValue.restype, lib.GDALGetRasterNoDataValue.argtypes = cd, [vp, ctypes.POINTER(ci)]
    lib.GDALRasterIO.argtypes = [vp, ci, ci, ci, ci, ci, vp, ci, ci, ci, ci, ci]
    lib.GDALClose.argtypes = [vp]
    handle = lib.GDALOpen(name.encode(), 0)
    if not handle:
        raise RuntimeError(f"GDAL could not open {name}: {lib.CPLGetLastErrorMsg().decode()}")
    try:
        nx, ny, count = lib.GDALGetRasterXSize(handle), lib.GDALGetRasterYSize(handle), lib.GDALGetRasterCount(handle)
        gt = (cd * 6)()
        lib.GDALGetGeoTransform(handle, gt)
        bands, nodata = [], None
        for i in range(count):
            band = lib.GDALGetRasterBand(handle, i + 1)
            ok = ci(0)
            value = lib.GDALGetRasterNoDataValue(band, ctypes.byref(ok))
            nodata = value if ok.value else None
            buf = (ctypes.c_uint8 * (nx * ny))()
            if lib.GDALRasterIO(band, 0, 0, 0, nx, ny, buf, nx, ny, 1, 0, 0) != 0:
                raise RuntimeError(f"GDALRasterIO failed: {lib.CPLGetLastErrorMsg().decode()}")
            flat = list(buf)
            bands.append([flat[r * nx : (r + 1) * nx] for r in range(ny)])
        return {
            "gdal": lib.GDALVersionInfo(b"RELEASE_NAME").decode(),
            "width": nx,
            "height": ny,
            "count": count,
            "geotransform": list(gt),
            "wkt": lib.GDALGetProjectionRef(handle).decode(),
            "nodata": nodata,
            "bands": bands,
        }
    finally:
        lib.GDALClose(handle)


def main(name: str) -> dict:
    import rasterio

    if _version_tuple(rasterio.__gdal_version__) >= (3, 11):
        return read_with_rasterio(name)
    return read_with_ctypes(name)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
