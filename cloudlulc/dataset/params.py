"""Parameters of a training-dataset build (``DatasetParams``) and its result (``DatasetSummary``).

The parameters are a pydantic model so the Prefect flow, the CLI and tests validate them the same way
and so they can be stored verbatim in the output store: a resumed build refuses to continue a store
that was started with different parameters (that would mix two datasets in one index).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Cloud-cover level edges in percent: levels 0-10, 10-30, 30-60, 60-100 (as in the paper's evaluation).
DEFAULT_CLOUD_LEVELS: tuple[float, ...] = (0.0, 10.0, 30.0, 60.0, 100.0)

#: Parameters that do not change the content of the dataset (so they are left out of the fingerprint).
_NON_CONTENT_FIELDS = frozenset(
    {
        "out",
        "dask_address",
        "overwrite",
        "write_geotiff_layout",
        "geotiff_optical",
        "scheduler",
        "batch_patches",
        "chunksize",
    }
)


class DatasetParams(BaseModel):
    """Everything that defines one CloudLULC-Set style training dataset build.

    Regions: the AOI grid (10 m, UTM) is cut into square blocks of ``region_size`` pixels; every patch
    lies wholly inside one region and a region's patches all go to one split, so no pixel is shared
    between train, val and test even when ``stride < patch_size``. ``region_buffer`` pixels at each
    region edge are left unused to keep neighbouring regions (and hence splits) further apart.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)

    aoi: Any = Field(..., description="AOI: bbox (minx,miny,maxx,maxy lon/lat), GeoJSON, or vector file path")
    start: date | datetime | str = Field(..., description="first acquisition date (inclusive)")
    end: date | datetime | str = Field(..., description="last acquisition date (inclusive)")
    out: Path = Field(..., description="output directory (holds dataset.zarr, index.parquet, report)")
    catalog_url: str | None = Field(None, description="STAC API root; None = Planetary Computer")
    sign: bool | None = Field(None, description="sign hrefs for Planetary Computer (None = auto)")

    patch_size: int = Field(512, ge=16, description="patch side in pixels")
    stride: int = Field(512, ge=1, description="step between patch origins in pixels")
    region_size: int | None = Field(None, description="region (split block) side in pixels; None = 4 x patch_size")
    region_buffer: int = Field(0, ge=0, description="pixels left unused at each region edge")

    cloud_levels: tuple[float, ...] = Field(DEFAULT_CLOUD_LEVELS, description="cloud level edges in %")
    clear_max_cloud: float = Field(5.0, ge=0, le=100, description="max regional cloud % of a clear reference")
    max_clear_gap_days: float | None = Field(None, ge=0, description="max |t_cloudy - t_clear|; None = any")
    max_gap_days: float = Field(12.0, ge=0, description="max S1-S2 gap in days")
    min_s1_coverage: float = Field(
        0.5, ge=0, le=1, description="min AOI fraction an S1 pass must cover (patches it misses drop as sar_nodata)"
    )
    label_collection: Literal["esa-worldcover", "io-lulc-annual-v02"] = "esa-worldcover"

    max_nodata_fraction: float = Field(0.05, ge=0, le=1, description="max NaN fraction of optical or SAR")
    min_label_fraction: float = Field(0.5, ge=0, le=1, description="min fraction of non-ignore label pixels")
    max_patches_per_level: int | None = Field(
        None, ge=1, description="cap on patches per cloud level in each region (seeded choice); None = no cap"
    )
    max_targets: int | None = Field(None, ge=1, description="cap on cloudy S2 targets per region (by time)")

    split_fractions: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="train, val, test")
    seed: int = 0
    optical_dtype: Literal["float32", "int16"] = Field(
        "float32", description="Zarr storage of reflectance: float32, or int16 = round(refl * 10000), NaN -> -32768"
    )
    write_geotiff_layout: bool = Field(False, description="also write the paper's GeoTIFF folder layout")
    geotiff_optical: Literal["reflectance", "dn"] = Field(
        "reflectance", description="GeoTIFF S2 encoding: float32 reflectance, or paper-style uint16 DN 0-10000"
    )
    dask_address: str | None = Field(None, description="dask scheduler address; None = local/default scheduler")
    scheduler: str | None = Field(None, description="dask scheduler name when no client (threads, processes...)")
    batch_patches: int = Field(32, ge=1, description="patches read per dask.compute (bounds memory)")
    chunksize: int | None = Field(
        None,
        ge=64,
        description="dask chunk size of the cubes; None = region_size (<= 2048, else 1024) so "
        "region windows read whole chunks once",
    )
    overwrite: bool = Field(False, description="delete an existing output instead of resuming it")

    @field_validator("cloud_levels")
    @classmethod
    def _levels_increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) < 2:
            raise ValueError("cloud_levels needs at least two edges, e.g. (0, 10, 30, 60, 100)")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"cloud_levels must be strictly increasing, got {v}")
        if v[0] < 0 or v[-1] > 100:
            raise ValueError(f"cloud_levels are percentages within [0, 100], got {v}")
        return tuple(float(x) for x in v)

    @field_validator("out")
    @classmethod
    def _out_is_a_directory(cls, v: Path) -> Path:
        if v.suffix.lower() == ".zarr":
            raise ValueError(
                f"out={str(v)!r} names a Zarr store, but it is the dataset's directory: it holds dataset.zarr, "
                f"the patch index and a report; give a directory, e.g. {str(v.with_suffix(''))!r}"
            )
        return v

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions (train, val, test) must be >= 0 and sum to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _geometry(self) -> DatasetParams:
        if self.stride > self.patch_size:
            raise ValueError(f"stride ({self.stride}) > patch_size ({self.patch_size}) would leave gaps unused")
        rs = self.effective_region_size
        if rs - 2 * self.region_buffer < self.patch_size:
            raise ValueError(
                f"region_size ({rs}) minus 2 x region_buffer ({self.region_buffer}) is smaller than "
                f"patch_size ({self.patch_size}): no patch fits in a region"
            )
        if str(self.start) > str(self.end):
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self

    @property
    def effective_region_size(self) -> int:
        return self.region_size if self.region_size is not None else 4 * self.patch_size

    @property
    def effective_chunksize(self) -> int:
        if self.chunksize is not None:
            return self.chunksize
        rs = self.effective_region_size
        return rs if rs <= 2048 else 1024

    @property
    def level_names(self) -> list[str]:
        e = self.cloud_levels
        return [f"{e[i]:g}-{e[i + 1]:g}" for i in range(len(e) - 1)]

    def content_dict(self) -> dict[str, Any]:
        """The parameters that determine the dataset's content, JSON-ready."""
        d = self.model_dump(mode="json", exclude=set(_NON_CONTENT_FIELDS))
        return d

    def fingerprint(self) -> str:
        """sha256 of :meth:`content_dict`, stored in the output to refuse resuming a different build."""
        blob = json.dumps(self.content_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


class DatasetSummary(BaseModel):
    """What a build produced; also written to ``summary.json``."""

    out: Path
    zarr_path: Path
    index_path: Path
    index_csv_path: Path
    report_path: Path
    summary_path: Path
    histogram_png: Path | None = None
    geotiff_root: Path | None = None
    n_patches: int
    n_regions: int
    regions_done: int
    regions_skipped_on_resume: int = 0
    patches_per_split: dict[str, int]
    patches_per_level: dict[str, int]
    patches_per_split_level: dict[str, dict[str, int]]
    class_pixels_per_split: dict[str, dict[str, int]]
    dropped: dict[str, int]
    regions_per_split: dict[str, list[str]]
    params: dict[str, Any]
    created: str
