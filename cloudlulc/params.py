"""The validated parameters of one mapping run, and their resolution against the settings.

:class:`MapParams` is what one :func:`cloudlulc.map_aoi` run (and the ``map-aoi`` Prefect flow) is
asked to do. It is validated completely *before* any search, download or inference starts, so a
typo in a date or an AOI fails in milliseconds with a message naming the field. Options left unset
take their value from :class:`~cloudlulc.config.Settings` in :meth:`MapParams.resolved`, which
returns a :class:`MapRun` whose fields are all decided.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import shapely
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudlulc.config import CatalogUrl, DaskAddress, DeviceName, Settings, WeightsPath, get_settings
from cloudlulc.stac.aoi import parse_aoi
from cloudlulc.times import parse_time_window

__all__ = ["AoiInput", "MapParams", "MapRun", "MappingOptions", "is_local_store", "local_store_path"]

#: fsspec-style URL prefixes accepted for the output store; anything else is a local path
_REMOTE_STORE_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")

AoiInput = str | list[float] | tuple[float, ...] | dict[str, Any]


def _check_time_text(v: str) -> str:
    parse_time_window(v)  # the one time parser: a ValueError names what is wrong
    return v


#: a date, a time or a 'start/end' range in UTC, checked when the parameters are
TimeText = Annotated[str, AfterValidator(_check_time_text)]


def is_local_store(store: str) -> bool:
    """Whether ``store`` is a local path (or a ``file://`` URL) rather than an object-store URL."""
    return not _REMOTE_STORE_RE.match(store) or store.startswith("file://")


def local_store_path(store: str) -> Path:
    """The local path of a local ``store``."""
    return Path(store.removeprefix("file://")).expanduser()


def absolute_output(store: str, root: str | Path | None = None) -> str:
    """``store`` with a relative local path made absolute against ``root`` (default: the current
    directory), so a run served elsewhere writes where the caller expects and reports where."""
    if not is_local_store(store):
        return store
    path = local_store_path(store)
    if not path.is_absolute():
        path = Path(root).expanduser() / path if root else path
    return str(path.absolute())


def _check_local_store_writable(v: str) -> None:
    """Refuse a local output that cannot be created, before any search or compute is spent on it."""
    p = Path(v).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise ValueError(f"output {v!r} is an existing file, not a Zarr store directory")
    existing = next(a for a in (p, *p.parents) if a.exists())
    if not existing.is_dir():
        raise ValueError(f"output {v!r} cannot be created: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output {v!r} is not writable: no write permission on {str(existing)!r}")


def _check_object_store_installed(v: str) -> None:
    """Refuse an object-store output whose fsspec filesystem (s3fs, gcsfs, adlfs) is not installed,
    before any search or compute is spent on it."""
    import fsspec

    protocol = v.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ValueError(
            f"output {protocol}://... needs a filesystem that is not installed ({exc}); the object-store "
            "extra has s3fs, gcsfs and adlfs: pip install 'cloudlulc[object-store]'"
        ) from None
    except ValueError:
        raise ValueError(
            f"output {protocol}://... is not a storage protocol fsspec knows: use a local path, s3://, gs:// or az://"
        ) from None


class MappingOptions(BaseModel):
    """How to map (catalog, limits, model, compute), shared by one-off and near-real-time runs.

    Fields left as ``None`` take their value from :class:`~cloudlulc.config.Settings`, so a
    deployment can pin only what differs from the site defaults.
    """

    model_config = ConfigDict(extra="forbid")

    catalog_url: CatalogUrl | None = None
    s2_collection: str | None = None
    s1_collection: str | None = None
    max_cloud_cover: float | None = Field(None, ge=0, le=100)
    max_s1_gap_days: float | None = Field(None, ge=0, le=60)
    allow_optical_only: bool | None = None
    weights: WeightsPath = None
    device: DeviceName | None = None
    dask_address: DaskAddress = None
    chunk_size: int | None = Field(None, ge=64)
    #: where PNG quicklooks go; None = ``<output parent>/quicklooks`` (local) or ``./quicklooks``
    quicklook_dir: str | None = None
    #: also store each class's probability (``probabilities``: class, y, x; uint8 percent)
    probabilities: bool | None = None
    #: draw a PNG quicklook of each mapped slice
    quicklook: bool | None = None
    #: also export each mapped slice's ``lulc`` as a Cloud Optimized GeoTIFF beside the store
    export_cog: bool | None = None


class MapParams(MappingOptions):
    """Everything one ``map_aoi`` run needs, validated before any work starts."""

    aoi: AoiInput = Field(description="GeoJSON (dict or text), bbox 'minx,miny,maxx,maxy' in lon/lat, or a vector file")
    time: TimeText = Field(description="target date '2024-04-19' or range '2024-04-01/2024-04-30' (UTC)")
    output: str = Field(description="output Zarr store: local path or fsspec URL (s3://, gs://, az://)")
    #: map only the newest acquisition of the window (True) or every acquisition in it (False)
    latest_only: bool = False
    #: near-real-time runs: skip acquisitions already in the store, and wait for Sentinel-1 passes
    #: that may still be published instead of failing (see ``Settings.nrt_without_s1``)
    skip_mapped: bool = False
    #: the time the run considers "now" (UTC ISO); None: the clock. NRT runs and backfills pin it
    now: TimeText | None = None

    @field_validator("aoi", mode="before")
    @classmethod
    def _check_aoi(cls, v: Any) -> Any:
        if v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0):
            raise ValueError("aoi is empty: give a bbox 'minx,miny,maxx,maxy', GeoJSON or a vector file path")
        if isinstance(v, str) and v.strip().startswith("{"):
            try:
                v = json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError(f"aoi looks like GeoJSON but is not valid JSON: {exc}") from None
        parse_aoi(v)  # the one AOI parser: AoiError (a ValueError) names the problem
        return v

    @field_validator("output")
    @classmethod
    def _check_output(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("output is empty: give a Zarr store path such as 'out/aoi.zarr'")
        if not _REMOTE_STORE_RE.match(v):
            _check_local_store_writable(v)
        elif not is_local_store(v):
            _check_object_store_installed(v)
        return v

    @property
    def window(self) -> tuple[datetime, datetime]:
        """The inclusive UTC search window of ``time``."""
        return parse_time_window(self.time)

    @property
    def output_is_local(self) -> bool:
        return is_local_store(self.output)

    def quicklook_path(self) -> Path:
        if self.quicklook_dir:
            return Path(self.quicklook_dir).expanduser()
        if self.output_is_local:
            return local_store_path(self.output).resolve().parent / "quicklooks"
        return Path("quicklooks").resolve()

    def resolved(self, settings: Settings | None = None) -> MapRun:
        """The run with every option decided: unset ones from ``settings`` (default: the environment).

        A device is checked against what this process's torch sees when the run computes here (the
        threaded scheduler or a local cluster); a remote cluster's workers check their own.
        """
        s = settings or get_settings()
        device = self.device or s.device
        address = self.dask_address or s.dask_address
        output = absolute_output(self.output, s.output_root)
        if self.quicklook_dir:
            quicklooks = Path(absolute_output(self.quicklook_dir, s.output_root))
        else:
            quicklooks = self.model_copy(update={"output": output}).quicklook_path()
        if device not in ("auto", "cpu") and not address and s.dask_cluster in ("threads", "local"):
            from cloudlulc.inference.device import check_device

            check_device(device)  # this machine runs the forwards: is the device there?
        return MapRun(
            aoi=self.aoi,
            time=self.time,
            output=output,
            latest_only=self.latest_only,
            skip_mapped=self.skip_mapped,
            catalog_url=self.catalog_url or s.catalog_url,
            s2_collection=self.s2_collection or s.s2_collection,
            s1_collection=self.s1_collection or s.s1_collection,
            max_cloud_cover=s.max_cloud_cover if self.max_cloud_cover is None else self.max_cloud_cover,
            max_s1_gap_days=s.max_s1_gap_days if self.max_s1_gap_days is None else self.max_s1_gap_days,
            allow_optical_only=s.allow_optical_only if self.allow_optical_only is None else self.allow_optical_only,
            weights=self.weights or s.weights,
            device=device,
            dask_address=address,
            chunk_size=self.chunk_size or s.chunk_size,
            quicklook_dir=str(quicklooks),
            probabilities=s.probabilities if self.probabilities is None else self.probabilities,
            quicklook=s.quicklook if self.quicklook is None else self.quicklook,
            export_cog=s.export_cog if self.export_cog is None else self.export_cog,
            now=parse_time_window(self.now)[1] if self.now else datetime.now(UTC),
            nrt_without_s1=s.nrt_without_s1,
            s1_latency_days=s.s1_latency_days,
            max_grid_pixels=s.max_grid_pixels,
            sign=s.sign,
            stac_timeout_s=s.stac_timeout_s,
            stac_connect_timeout_s=s.stac_connect_timeout_s,
            stac_retries=s.stac_retries,
        )


class MapRun(BaseModel):
    """A mapping run with every option decided (:meth:`MapParams.resolved`): what the stages read.

    ``weights`` None means the committed demo weights; ``dask_address`` None means the cluster that
    the settings select.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    aoi: AoiInput
    time: str
    output: str
    latest_only: bool
    skip_mapped: bool
    catalog_url: CatalogUrl
    s2_collection: str
    s1_collection: str
    max_cloud_cover: float
    max_s1_gap_days: float
    allow_optical_only: bool
    weights: str | None
    device: DeviceName
    dask_address: str | None
    chunk_size: int
    quicklook_dir: str
    probabilities: bool
    quicklook: bool
    export_cog: bool
    #: "now" for this run (aware UTC), and what NRT runs do with acquisitions without Sentinel-1
    now: datetime
    nrt_without_s1: Literal["optical-only", "skip"]
    s1_latency_days: float
    max_grid_pixels: int
    #: STAC client: Planetary Computer signing (None: only for the PC), request timeouts, retries
    sign: bool | None
    stac_timeout_s: float
    stac_connect_timeout_s: float
    stac_retries: int

    @property
    def window(self) -> tuple[datetime, datetime]:
        return parse_time_window(self.time)

    @property
    def geometry(self) -> shapely.Geometry:
        """The AOI as a lon/lat geometry."""
        return parse_aoi(self.aoi)

    @property
    def output_is_local(self) -> bool:
        return is_local_store(self.output)

    def quicklook_path(self) -> Path:
        return Path(self.quicklook_dir)

    @model_validator(mode="after")
    def _check_aoi(self) -> MapRun:
        parse_aoi(self.aoi)
        return self
