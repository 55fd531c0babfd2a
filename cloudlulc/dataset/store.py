"""The Zarr v3 patch store: one chunk per patch, resumable region by region.

Layout (``<out>/dataset.zarr``)::

    optical_cloudy (patch, band=12, y, x) float32 reflectance (or int16 = round(refl * 10000), -32768 nodata)
    optical_clear  (patch, band=12, y, x) same encoding, the clear reference of the same place
    sar            (patch, band=2, y, x)  float32 dB (vv, vh), NaN nodata
    label          (patch, y, x) uint8 CloudLULC classes, 255 ignore
    cloud          (patch, y, x) uint8 SCL cloud/shadow mask of the cloudy target (1 cloud, 0 clear, 255 nodata)
    split          (patch,) uint8 index into attrs["splits"]

Resumability: rows are appended for a region, then the region's index part is written, and only then
``attrs["n_committed"]`` and ``attrs["regions_done"]`` are updated. A crash before that update leaves
rows beyond ``n_committed``; :meth:`PatchStore.rollback` cuts them away (and deletes their chunk
files) before the region is built again, so no patch is ever stored twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr

from cloudlulc.classes import NODATA, S1_BANDS, S2_BANDS, class_table
from cloudlulc.dataset.errors import StoreMismatchError
from cloudlulc.dataset.regions import SPLITS

#: int16 encoding of reflectance: stored = round(reflectance / OPTICAL_INT16_SCALE).
OPTICAL_INT16_SCALE = 1e-4
OPTICAL_INT16_NODATA = -32768
FORMAT_VERSION = 1


def encode_optical(a: np.ndarray, dtype: str) -> np.ndarray:
    """Reflectance -> storage dtype (float32 as is; int16 scaled, NaN -> -32768)."""
    if dtype == "float32":
        return a.astype(np.float32, copy=False)
    q = np.round(np.nan_to_num(a, nan=0.0) / OPTICAL_INT16_SCALE)
    q = np.clip(q, OPTICAL_INT16_NODATA + 1, np.iinfo(np.int16).max).astype(np.int16)
    q[np.isnan(a)] = OPTICAL_INT16_NODATA
    return q


def store_array(group: zarr.Group, name: str) -> zarr.Array:
    """The member ``name`` of a patch store's group: every member of the store is an array."""
    arr = group[name]
    assert isinstance(arr, zarr.Array), f"{name!r} of the patch store is not an array"
    return arr


def decode_optical(a: np.ndarray) -> np.ndarray:
    """Storage -> float32 reflectance with NaN nodata."""
    if a.dtype == np.int16:
        out = a.astype(np.float32) * np.float32(OPTICAL_INT16_SCALE)
        out[a == OPTICAL_INT16_NODATA] = np.nan
        return out
    return a.astype(np.float32, copy=False)


class PatchStore:
    """Append-only, region-committed Zarr v3 group of aligned patches."""

    def __init__(self, group: zarr.Group, path: Path):
        self.group = group
        self.path = Path(path)

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open_or_create(
        cls, path: Path, *, patch_size: int, optical_dtype: str, fingerprint: str, attrs: dict[str, Any]
    ) -> PatchStore:
        """Open an existing store of the same build (same fingerprint) or create an empty one."""
        path = Path(path)
        if (path / "zarr.json").exists():
            group = zarr.open_group(str(path), mode="a")
            old = group.attrs.get("fingerprint")
            if old != fingerprint:
                raise StoreMismatchError(
                    f"{path} holds a dataset built with different parameters (fingerprint {str(old)[:12]} != "
                    f"{fingerprint[:12]}); pass overwrite=True to rebuild it, or choose another output directory"
                )
            return cls(group, path)
        group = zarr.open_group(str(path), mode="w")
        p = patch_size
        opt_fill: Any = np.float32(np.nan) if optical_dtype == "float32" else np.int16(OPTICAL_INT16_NODATA)
        specs = {
            "optical_cloudy": ((0, len(S2_BANDS), p, p), optical_dtype, opt_fill, ("patch", "band", "y", "x")),
            "optical_clear": ((0, len(S2_BANDS), p, p), optical_dtype, opt_fill, ("patch", "band", "y", "x")),
            "sar": ((0, len(S1_BANDS), p, p), "float32", np.float32(np.nan), ("patch", "band", "y", "x")),
            "label": ((0, p, p), "uint8", np.uint8(NODATA), ("patch", "y", "x")),
            "cloud": ((0, p, p), "uint8", np.uint8(NODATA), ("patch", "y", "x")),
            "split": ((0,), "uint8", np.uint8(255), ("patch",)),
        }
        for name, (shape, dtype, fill, dims) in specs.items():
            chunks = (1,) + shape[1:] if len(shape) > 1 else (1024,)
            arr_attrs: dict[str, Any] = {}
            if name.startswith("optical"):
                arr_attrs = {"bands": list(S2_BANDS), "units": "reflectance"}
                if optical_dtype == "int16":
                    arr_attrs.update(scale_factor=OPTICAL_INT16_SCALE, _FillValue=OPTICAL_INT16_NODATA)
            elif name == "sar":
                arr_attrs = {"bands": list(S1_BANDS), "units": "dB"}
            elif name == "label":
                arr_attrs = {"_FillValue": NODATA, "classes": class_table()}
            group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                dimension_names=dims,
                attributes=arr_attrs,
            )
        group.attrs.update(
            {
                **attrs,
                "format": "cloudlulc-patches",
                "format_version": FORMAT_VERSION,
                "fingerprint": fingerprint,
                "patch_size": patch_size,
                "optical_dtype": optical_dtype,
                "splits": list(SPLITS),
                "n_committed": 0,
                "regions_done": [],
                "region_stats": {},
            }
        )
        return cls(group, path)

    # -- state ----------------------------------------------------------------------------------
    @property
    def n_committed(self) -> int:
        return int(cast(int, self.group.attrs.get("n_committed", 0)))

    @property
    def regions_done(self) -> list[str]:
        return list(cast(list[str], self.group.attrs.get("regions_done", [])))

    @property
    def region_stats(self) -> dict[str, Any]:
        return dict(cast(dict[str, Any], self.group.attrs.get("region_stats", {})))

    @property
    def n_rows(self) -> int:
        return int(store_array(self.group, "label").shape[0])

    # -- writing --------------------------------------------------------------------------------
    def rollback(self) -> int:
        """Drop rows written after the last commit (an interrupted region); returns how many."""
        n, extra = self.n_committed, self.n_rows - self.n_committed
        if extra > 0:
            for name in ("optical_cloudy", "optical_clear", "sar", "label", "cloud", "split"):
                arr = store_array(self.group, name)
                arr.resize((n,) + arr.shape[1:])
                if name != "split":
                    self._delete_chunks_from(name, n)
        return max(extra, 0)

    def _delete_chunks_from(self, name: str, first: int) -> None:
        """Delete stale chunk files of rows >= first (resize keeps them; a tidy store has none)."""
        cdir = self.path / name / "c"
        if not cdir.is_dir():
            return
        for child in cdir.iterdir():
            if child.name.isdigit() and int(child.name) >= first:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def append(self, batch: dict[str, np.ndarray], split_code: int) -> tuple[int, int]:
        """Append ``k`` patches (arrays with a leading patch axis); returns their row range."""
        k = int(batch["label"].shape[0])
        start = self.n_rows
        stop = start + k
        if k == 0:
            return start, stop
        opt_dtype = str(self.group.attrs["optical_dtype"])
        data = {
            "optical_cloudy": encode_optical(batch["optical_cloudy"], opt_dtype),
            "optical_clear": encode_optical(batch["optical_clear"], opt_dtype),
            "sar": batch["sar"].astype(np.float32, copy=False),
            "label": batch["label"].astype(np.uint8, copy=False),
            "cloud": batch["cloud"].astype(np.uint8, copy=False),
            "split": np.full(k, split_code, dtype=np.uint8),
        }
        for name, values in data.items():
            arr = store_array(self.group, name)
            arr.resize((stop,) + arr.shape[1:])
            arr[start:stop] = values
        return start, stop

    def commit(self, region_id: str, stats: dict[str, Any]) -> None:
        """Mark a region complete: everything appended so far is part of the dataset."""
        done = self.regions_done
        if region_id not in done:
            done.append(region_id)
        rs = self.region_stats
        rs[region_id] = stats
        self.group.attrs.update({"n_committed": self.n_rows, "regions_done": done, "region_stats": rs})
