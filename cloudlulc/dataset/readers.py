"""PyTorch datasets over a built dataset: the Zarr store or the paper's GeoTIFF layout.

Both yield the same sample dict, the one :mod:`cloudlulc.training` consumes, so training code does not
care which format it reads:

``optical`` float32 [12,H,W] reflectance of the cloudy target, ``optical_clear`` float32 [12,H,W]
reflectance of the clear reference, ``sar`` float32 [2,H,W] dB (VV, VH), ``label`` int64 [H,W]
(classes 0..5, 255 ignore), ``cloud`` uint8 [H,W] (1 cloud/shadow, 0 clear, 255 unknown) and
``cloud_fraction`` float32 scalar (cloudy share of the pixels with a known mask; 0 when unknown).

NaN nodata in optical/SAR is kept by default: :func:`cloudlulc.training.prepare_batch` fills it with the
model's band means and ignores those pixels' labels. ``fill_nan`` replaces it with a constant
instead. With ``return_meta=True`` a ``patch_id`` string is added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cloudlulc.classes import NODATA, NUM_CLASSES, lookup_table
from cloudlulc.dataset.errors import DatasetError
from cloudlulc.dataset.regions import SPLITS
from cloudlulc.dataset.sar import IW_MID_INCIDENCE_DEG, Backscatter, sigma0_to_gamma0_db
from cloudlulc.dataset.store import decode_optical, store_array

#: Columns of the published CloudLULC-Set split tables (``split/<split>.csv``): file paths per modality.
SPLIT_TABLE_COLUMNS = ("id", "VH", "VV", "optical", "label")


def _sample(optical, optical_clear, sar, label, cloud, fill_nan: float | None) -> dict[str, torch.Tensor]:
    arrays = {"optical": optical, "optical_clear": optical_clear, "sar": sar}
    out: dict[str, torch.Tensor] = {}
    for k, a in arrays.items():
        a = np.asarray(a, dtype=np.float32)
        if fill_nan is not None:
            a = np.nan_to_num(a, nan=fill_nan)
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    out["label"] = torch.from_numpy(np.asarray(label).astype(np.int64))
    cloud = np.ascontiguousarray(np.asarray(cloud, dtype=np.uint8))
    out["cloud"] = torch.from_numpy(cloud)
    known = cloud <= 1
    out["cloud_fraction"] = torch.tensor(float((cloud == 1).sum()) / max(int(known.sum()), 1), dtype=torch.float32)
    return out


def _resolve_zarr(path: str | Path) -> tuple[Path, Path | None]:
    p = Path(path)
    if (p / "dataset.zarr" / "zarr.json").exists():
        p = p / "dataset.zarr"
    if not (p / "zarr.json").exists():
        raise DatasetError(f"{path} is not a CloudLULC dataset: no dataset.zarr (or zarr.json) found there")
    index = p.parent / "index.parquet"
    return p, index if index.exists() else None


class ZarrPatchDataset(Dataset):
    """Patches of one split of a Zarr store built by :func:`cloudlulc.dataset.build_dataset`.

    ``path``: the build's output directory or its ``dataset.zarr``. ``split``: "train", "val", "test"
    or None (all committed patches). Rows past the last committed region (an interrupted build) are
    never read. The store is opened lazily per process, so DataLoader workers can fork safely.
    """

    def __init__(
        self, path: str | Path, split: str | None = "train", *, fill_nan: float | None = None, return_meta: bool = False
    ):
        import zarr

        self.path, index_path = _resolve_zarr(path)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        g = zarr.open_group(str(self.path), mode="r")
        n = int(cast(int, g.attrs.get("n_committed", store_array(g, "label").shape[0])))
        codes = np.asarray(store_array(g, "split")[:n])
        self.rows = np.arange(n) if split is None else np.flatnonzero(codes == SPLITS.index(split))
        self.split = split
        self.fill_nan = fill_nan
        self.return_meta = return_meta
        self.attrs = dict(g.attrs)
        self._ids: dict[int, str] = {}
        if return_meta and index_path is not None:
            df = pd.read_parquet(index_path, columns=["zarr_index", "patch_id"])
            self._ids = dict(zip(df["zarr_index"].astype(int), df["patch_id"].astype(str)))
        self._group: zarr.Group | None = None

    def __len__(self) -> int:
        return int(len(self.rows))

    def _g(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(str(self.path), mode="r")
        return self._group

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_group"] = None
        return state

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        r = int(self.rows[i])
        g = self._g()
        s: dict[str, Any] = _sample(
            decode_optical(np.asarray(g["optical_cloudy"][r])),
            decode_optical(np.asarray(g["optical_clear"][r])),
            g["sar"][r],
            g["label"][r],
            g["cloud"][r],
            self.fill_nan,
        )
        if self.return_meta:
            s["patch_id"] = self._ids.get(r, str(r))
        return s


#: File names tried for each split's id list (the published set may name validation differently).
_SPLIT_FILES = {"train": ("train.csv",), "val": ("val.csv", "valid.csv", "validation.csv"), "test": ("test.csv",)}


def read_split_table(root: Path, split: str) -> pd.DataFrame | None:
    """The published set's ``split/<split>.csv`` (columns id, VH, VV, optical, label: file paths relative
    to ``root`` or absolute), or None when ``root`` has no ``split/`` folder."""
    folder = Path(root) / "split"
    if not folder.is_dir():
        return None
    for name in _SPLIT_FILES.get(split, (f"{split}.csv",)):
        f = folder / name
        if f.exists():
            df = pd.read_csv(f, dtype=str)
            df.columns = [c.strip() for c in df.columns]
            missing = [c for c in SPLIT_TABLE_COLUMNS if c not in df.columns]
            if missing:
                raise DatasetError(f"{f} lacks columns {missing}; expected {list(SPLIT_TABLE_COLUMNS)}")
            return df.dropna(subset=list(SPLIT_TABLE_COLUMNS)).reset_index(drop=True)
    raise DatasetError(f"No split table for {split!r} under {folder} (looked for {', '.join(_SPLIT_FILES[split])})")


def read_split_ids(root: Path, split: str) -> list[str]:
    """Patch ids of ``split``: column ``id`` of ``split/<split>.csv`` (published layout) or of
    ``<split>.csv`` when present, else its first column (headerless files accepted); directory parts
    and ``.tif`` extensions are stripped."""
    table = read_split_table(root, split)
    if table is not None:
        return [str(v).strip() for v in table["id"]]
    for name in _SPLIT_FILES.get(split, (f"{split}.csv",)):
        f = root / name
        if f.exists():
            df = pd.read_csv(f, dtype=str)
            if "id" in df.columns:
                ids = df["id"]
            else:
                ids = pd.read_csv(f, header=None, dtype=str).iloc[:, 0]
                if len(ids) and not (root / "Label" / f"{Path(str(ids.iloc[0])).stem}.tif").exists():
                    ids = ids.iloc[1:]  # a header line that is not an id
            return [
                Path(str(v).strip()).stem if str(v).endswith(".tif") else Path(str(v).strip()).name
                for v in ids.dropna()
            ]
    raise DatasetError(
        f"No split file for {split!r} under {root} (looked for {', '.join(_SPLIT_FILES.get(split, ()))})"
    )


class GeoTiffLayoutDataset(Dataset):
    """Patches of one split in the GeoTIFF layout of :mod:`cloudlulc.dataset.geotiff` or of the
    published CloudLULC-Set: either the same folders with ``train.csv``/``val.csv``/``test.csv``
    listing ids, or the official ``split/<split>.csv`` tables whose columns id, VH, VV, optical, label
    name each patch's files (relative to ``root``; that layout has no clear reference, so
    ``optical_clear`` is NaN: unknown).

    Assumed value scaling, overridable for other releases:

    * optical: ``layout.json`` when present; else integer files are digital numbers, reflectance =
      DN x ``optical_scale`` (default 1e-4) + ``optical_offset`` (default 0: the published set's DN are
      already harmonised to 0-10000), DN 0 = nodata; float files are reflectance as is.
    * optical band count: 12 bands in :data:`~cloudlulc.classes.S2_BANDS` order; 13-band files are
      taken as the L1C order B01..B12 with B10 at index 10, which is dropped.
    * SAR: float dB (VV and VH in separate single-band files), nodata tag or NaN -> NaN;
      ``sar_units="linear"`` converts linear power to dB (10 log10, clipped to [-50, 10]);
      ``sar_backscatter="sigma0"`` (GRD, as the published set) converts to gamma0 like the pipeline's
      RTC input (:mod:`cloudlulc.dataset.sar`, at ``incidence_deg``).
    * label: classes 0..5, anything else -> 255; ``label_map`` (source code -> class) remaps other
      encodings (e.g. {1: 0, 2: 1, ...} for 1-based labels).
    * cloud: ``Cloud/<id>.tif`` when present, else 255 (unknown): the published set has no cloud mask.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        optical_scale: float | None = None,
        optical_offset: float | None = None,
        label_map: dict[int, int] | None = None,
        fill_nan: float | None = None,
        return_meta: bool = False,
        sar_units: Literal["db", "linear"] = "db",
        sar_backscatter: Backscatter = "gamma0",
        incidence_deg: float = IW_MID_INCIDENCE_DEG,
    ):
        self.root = Path(root)
        self.sar_units = sar_units
        self.sar_backscatter = sar_backscatter
        self.incidence_deg = incidence_deg
        self.table = read_split_table(self.root, split)
        if self.table is None and not (self.root / "Label").is_dir():
            raise DatasetError(
                f"{root} does not look like a GeoTIFF layout dataset: no Label/ folder and no split/ tables"
            )
        self.ids = read_split_ids(self.root, split)
        self._row = {pid: i for i, pid in enumerate(self.ids)}
        self.split = split
        layout = {}
        if (self.root / "layout.json").exists():
            layout = json.loads((self.root / "layout.json").read_text())
        self.optical_scale = optical_scale if optical_scale is not None else layout.get("optical_scale")
        self.optical_offset = optical_offset if optical_offset is not None else float(layout.get("optical_offset", 0.0))
        if label_map is None:
            self.label_lut = lookup_table({k: k for k in range(NUM_CLASSES)})
        else:
            self.label_lut = lookup_table(label_map)
        self.fill_nan = fill_nan
        self.return_meta = return_meta

    def __len__(self) -> int:
        return len(self.ids)

    def _path(self, folder: str, pid: str) -> Path:
        """The file of ``pid`` in ``folder``: from the split table when the layout has one."""
        column = {"SAR_S1/VV": "VV", "SAR_S1/VH": "VH", "Opt_S2_cloudy": "optical", "Label": "label"}.get(folder)
        if self.table is not None and column is not None:
            p = Path(str(self.table.iloc[self._row[pid]][column]).strip())
            return p if p.is_absolute() else self.root / p
        return self.root / folder / f"{pid}.tif"

    def _read(self, folder: str, pid: str) -> tuple[np.ndarray, Any]:
        path = self._path(folder, pid)
        if not path.exists():
            raise DatasetError(f"Missing file {path} for patch {pid!r} (listed in {self.split}.csv)")
        import rasterio

        with rasterio.open(path) as src:
            return src.read(), src.nodata

    def _optical(self, folder: str, pid: str) -> np.ndarray:
        a, nodata = self._read(folder, pid)
        if a.shape[0] == 13:
            a = np.delete(a, 10, axis=0)  # L1C order with B10 (cirrus), absent from L2A and the model
        if a.shape[0] != 12:
            raise DatasetError(f"{self.root / folder / pid}.tif has {a.shape[0]} bands; expected 12 (or 13 with B10)")
        if np.issubdtype(a.dtype, np.integer):
            scale = self.optical_scale if self.optical_scale is not None else 1e-4
            nd = 0 if nodata is None else nodata
            out = a.astype(np.float32) * np.float32(scale) + np.float32(self.optical_offset)
            out[a == nd] = np.nan
            return out
        out = a.astype(np.float32)
        if self.optical_scale not in (None, 1.0):
            out = out * np.float32(self.optical_scale) + np.float32(self.optical_offset)
        if nodata is not None and not np.isnan(nodata):
            out[a == nodata] = np.nan
        return out

    def _float(self, folder: str, pid: str) -> np.ndarray:
        a, nodata = self._read(folder, pid)
        out = a[0].astype(np.float32)
        if nodata is not None and not np.isnan(nodata):
            out[a[0] == nodata] = np.nan
        if self.sar_units == "linear":
            with np.errstate(divide="ignore", invalid="ignore"):
                db = np.clip(10.0 * np.log10(out), -50.0, 10.0).astype(np.float32)
            out = np.where(out > 0, db, np.nan).astype(np.float32)
        if self.sar_backscatter == "sigma0":
            out = np.clip(sigma0_to_gamma0_db(out, self.incidence_deg), -50.0, 10.0)
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        pid = self.ids[i]
        label_raw, _ = self._read("Label", pid)
        lab = label_raw[0]
        valid = (lab >= 0) & (lab <= 255)
        label = np.where(valid, self.label_lut[np.where(valid, lab, 0).astype(np.uint8)], NODATA).astype(np.uint8)
        if (self.root / "Cloud" / f"{pid}.tif").exists():
            cloud = self._read("Cloud", pid)[0][0].astype(np.uint8)
        else:
            cloud = np.full(label.shape, NODATA, dtype=np.uint8)
        sar = np.stack([self._float("SAR_S1/VV", pid), self._float("SAR_S1/VH", pid)])
        optical = self._optical("Opt_S2_cloudy", pid)
        if self.table is None or (self.root / "Opt_S2_clear" / f"{pid}.tif").exists():
            clear = self._optical("Opt_S2_clear", pid)
        else:
            clear = np.full(optical.shape, np.nan, np.float32)  # the published layout has no clear reference
        s: dict[str, Any] = _sample(optical, clear, sar, label, cloud, self.fill_nan)
        if self.return_meta:
            s["patch_id"] = pid
        return s
