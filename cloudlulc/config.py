"""Runtime settings and the validated parameters of one mapping run.

Two layers, on purpose:

* :class:`Settings` holds deployment-wide defaults read from ``CLOUDLULC_*`` environment variables
  (12-factor style), so the same code runs against the Planetary Computer, a local ``rustac serve``
  or a pgstac server, on a laptop or a Kubernetes cluster, without code changes.
* :class:`MapParams` is what one run of :func:`cloudlulc.pipeline.map_aoi` (and the ``map-aoi`` Prefect
  flow) is asked to do. It is validated completely *before* any search, download or inference starts,
  so a typo in a date or an AOI fails in milliseconds with a message naming the field, instead of
  minutes into a run.

This module must stay importable without Prefect (library code never imports it).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The Planetary Computer STAC API, the default catalog (see DESIGN.md).
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
DEFAULT_S2_COLLECTION = "sentinel-2-l2a"
DEFAULT_S1_COLLECTION = "sentinel-1-rtc"
DEFAULT_LABEL_COLLECTION = "esa-worldcover"

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DASK_ADDRESS_RE = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://\S+$")
_URL_SCHEMES = ("http://", "https://")
#: fsspec-style URL prefixes accepted for the output store; anything else is a local path.
_REMOTE_STORE_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")


class Settings(BaseSettings):
    """Deployment-wide defaults, read from ``CLOUDLULC_<FIELD>`` environment variables.

    Example: ``CLOUDLULC_CATALOG_URL=http://127.0.0.1:7822 CLOUDLULC_DEVICE=cuda``.
    Dict/list fields take JSON (``CLOUDLULC_DASK_TASK_RESOURCES='{"GPU": 1}'``).
    """

    model_config = SettingsConfigDict(env_prefix="CLOUDLULC_", extra="ignore")

    # --- catalog --------------------------------------------------------------------------------
    catalog_url: str = PLANETARY_COMPUTER_URL
    #: sign asset hrefs with planetary_computer; None = only when the catalog is the Planetary Computer
    sign: bool | None = None
    s2_collection: str = DEFAULT_S2_COLLECTION
    s1_collection: str = DEFAULT_S1_COLLECTION
    label_collection: str = DEFAULT_LABEL_COLLECTION
    #: scene-level ``eo:cloud_cover`` limit in percent; clouds are what the model is for, so high
    max_cloud_cover: float = Field(90.0, ge=0, le=100)
    max_s1_gap_days: float = Field(12.0, ge=0, le=60)
    #: map with optical only (recorded in the output) when no Sentinel-1 pass is within the gap
    allow_optical_only: bool = False

    # --- cube / inference -----------------------------------------------------------------------
    #: chunk side of the Zarr mosaic (store chunks, DESIGN.md: about 1024)
    chunk_size: int = Field(1024, ge=64)
    #: chunk side of the input cube (reads and inference tasks); must divide the store chunk. None =
    #: the largest divisor of ``chunk_size`` up to 512: several read chunks per store chunk keep every
    #: worker busy on small AOIs (2048 px AOI: about 30 % faster than with 1024 px read chunks)
    read_chunk_size: int | None = Field(None, ge=32)
    tile: int = Field(256, ge=32)
    overlap: int = Field(64, ge=0)
    batch_size: int = Field(4, ge=1)
    device: str = "auto"
    #: weights (.safetensors or its JSON); None = the committed demo weights
    weights: Path | None = None

    # --- dask -----------------------------------------------------------------------------------
    #: scheduler address of a running cluster; overrides ``dask_cluster``
    dask_address: str | None = None
    #: threads: Dask's threaded scheduler in this process (fastest on one machine, no dashboard);
    #: local: a distributed LocalCluster (dashboard, task resources); kubernetes / coiled: see dask_cluster.py
    dask_cluster: Literal["threads", "local", "kubernetes", "coiled"] = "threads"
    dask_n_workers: int | None = Field(None, ge=1)
    #: threads per worker (LocalCluster) or of the threaded scheduler; None = one per core
    dask_threads_per_worker: int | None = Field(None, ge=1)
    #: LocalCluster with worker processes (True) or threads in this process (False, lighter)
    dask_processes: bool = False
    #: KubeCluster spec (dask-kubernetes operator ``DaskCluster`` resource)
    dask_kubernetes_spec: Path = Path("deploy/dask/kubernetes-cluster.yaml")
    #: keyword arguments for ``coiled.Cluster``
    dask_coiled_config: Path = Path("deploy/dask/coiled.yaml")
    #: how long to wait for a scheduler given by address
    dask_connect_timeout: str = "30s"
    #: Dask resources every inference task requires, e.g. {"GPU": 1} on GPU worker pools
    dask_task_resources: dict[str, float] = Field(default_factory=dict)
    #: glibc malloc arenas of this process and the worker processes it starts (cloudlulc.worker_memory):
    #: 2 keeps peak memory bounded by the chunk size at full speed (glibc's default grew +42 % for
    #: 16x the area); 0 leaves glibc's and Dask's allocator settings alone
    malloc_arena_max: int = Field(2, ge=0)
    #: GDAL block cache (MB) of those processes: GDAL's default, 5 % of RAM, fills with the blocks of
    #: every open COG handle and grew peak memory +121 % for 16x the area; 0 keeps GDAL's default
    gdal_cachemax_mb: int = Field(64, ge=0)
    #: bands of a chunk of remote (HTTP, object store) assets read at once, per process
    #: (cloudlulc.cube): their range requests' waits overlap. At 20 ms per request the pipeline ran
    #: 0.47-0.52 M px/s reading one band after the other, 0.74-0.83 with 8. Local files are always
    #: read one after the other
    remote_read_threads: int = Field(8, ge=1)

    # --- orchestration --------------------------------------------------------------------------
    #: retries of tasks that touch the network (search, pairing, reading pixels)
    retries: int = Field(3, ge=0)
    retry_delay_seconds: float = Field(10.0, ge=0)

    # --- served deployments (flows.serve) -------------------------------------------------------
    #: `map-aoi/demo` defaults; the deployment is served only when aoi and time are set
    demo_aoi: str | None = None
    demo_time: str | None = None
    demo_output: str = "demo-out/demo.zarr"
    #: `map-aoi-nrt/<nrt_name>`: served when nrt_aoi (or demo_aoi) is set
    nrt_name: str = "demo"
    nrt_aoi: str | None = None
    nrt_output: str = "demo-out/nrt.zarr"
    nrt_cron: str = "0 */6 * * *"
    #: an interval schedule instead of the cron (minutes), e.g. 360
    nrt_interval_minutes: float | None = Field(None, gt=0)
    nrt_lookback_days: float = Field(30.0, gt=0)
    #: create the NRT schedule paused (the demo does, so no scheduled run competes with it)
    nrt_paused: bool = False
    #: concurrent flow runs one `flows.serve` process executes
    serve_limit: int | None = Field(2, ge=1)


def get_settings() -> Settings:
    """Fresh settings from the current environment (not cached: tests and the demo change env)."""
    return Settings()


# ------------------------------------------------------------------------------------------------
# time windows


def parse_time_window(value: str | date | datetime) -> tuple[datetime, datetime]:
    """Parse a target date or range into an inclusive UTC ``(start, end)`` window.

    Accepts ``"2024-04-19"`` (that whole UTC day), an ISO datetime (that instant), or an interval
    ``"start/end"`` of either (``..`` open ends are refused: a mapping run needs a bounded search).
    """
    if isinstance(value, datetime):
        dt = _as_utc(value)
        return dt, dt
    if isinstance(value, date):
        return _day_window(value)
    text = str(value).strip()
    if not text:
        raise ValueError("time is empty: give a date '2024-04-19' or a range '2024-04-01/2024-04-30'")
    if "/" in text:
        parts = text.split("/")
        if len(parts) != 2 or ".." in parts or not all(p.strip() for p in parts):
            raise ValueError(f"time range {text!r} must be 'start/end' with both ends given")
        start = _parse_one(parts[0])[0]
        end = _parse_one(parts[1])[1]
    else:
        start, end = _parse_one(text)
    if end < start:
        raise ValueError(f"time range {text!r} ends before it starts")
    return start, end


def _parse_one(text: str) -> tuple[datetime, datetime]:
    text = text.strip()
    try:
        if len(text) == 10:  # a calendar day
            return _day_window(date.fromisoformat(text))
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"cannot read {text!r} as a date (YYYY-MM-DD) or ISO datetime: {exc}") from None
    dt = _as_utc(dt)
    return dt, dt


def _day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1) - timedelta(microseconds=1)


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


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


# ------------------------------------------------------------------------------------------------
# one mapping run


AoiInput = str | list[float] | tuple[float, ...] | dict[str, Any]


class MappingOptions(BaseModel):
    """How to map (catalog, limits, model, compute), shared by one-off and near-real-time runs.

    Fields left as ``None`` take their value from :class:`Settings` (environment), so a deployment
    can pin only what differs from the site defaults.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)

    catalog_url: str | None = None
    s2_collection: str | None = None
    s1_collection: str | None = None
    max_cloud_cover: float | None = Field(None, ge=0, le=100)
    max_s1_gap_days: float | None = Field(None, ge=0, le=60)
    allow_optical_only: bool | None = None
    weights: str | None = None
    device: str | None = None
    dask_address: str | None = None
    chunk_size: int | None = Field(None, ge=64)
    #: where PNG quicklooks go; None = ``<output parent>/quicklooks`` (local) or ``./quicklooks``
    quicklook_dir: str | None = None


class MapParams(MappingOptions):
    """Everything one ``map_aoi`` run needs, validated before any work starts.

    Unset options are filled from :class:`Settings` in :meth:`resolved`.
    """

    aoi: AoiInput = Field(
        description="GeoJSON (dict or text), bbox 'minx,miny,maxx,maxy' in lon/lat, or a vector file path"
    )
    time: str = Field(description="target date '2024-04-19' or range '2024-04-01/2024-04-30' (UTC)")
    output: str = Field(description="output Zarr store: local path or fsspec URL (s3://, gs://, az://)")
    #: map only the newest acquisition of the window (True) or every acquisition in it (False)
    latest_only: bool = False
    #: skip acquisitions whose time is already in the store (near-real-time runs)
    skip_mapped: bool = False

    @field_validator("aoi", mode="before")
    @classmethod
    def _check_aoi(cls, v: Any) -> Any:
        if v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0):
            raise ValueError("aoi is empty: give a bbox 'minx,miny,maxx,maxy', GeoJSON or a vector file path")
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("{"):
                try:
                    return json.loads(s)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"aoi looks like GeoJSON but is not valid JSON: {exc}") from None
            if "," in s and not Path(s).exists():
                try:
                    v = [float(p) for p in s.split(",")]
                except ValueError:
                    raise ValueError(
                        f"aoi {s!r} is neither 'minx,miny,maxx,maxy' numbers nor an existing file"
                    ) from None
            elif not Path(s).expanduser().exists():
                raise ValueError(f"aoi {s!r}: no such vector file (and not a bbox or GeoJSON)")
        if isinstance(v, (list, tuple)):
            _check_bbox(v)
        return v

    @field_validator("time")
    @classmethod
    def _check_time(cls, v: str) -> str:
        parse_time_window(v)
        return v

    @field_validator("output")
    @classmethod
    def _check_output(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("output is empty: give a Zarr store path such as 'out/aoi.zarr'")
        if not _REMOTE_STORE_RE.match(v):
            _check_local_store_writable(v)
        return v

    @field_validator("catalog_url")
    @classmethod
    def _check_catalog_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(_URL_SCHEMES):
            raise ValueError(f"catalog_url {v!r} must be an http(s) STAC API root URL")
        return v

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().exists():
            raise ValueError(
                f"weights {v!r} do not exist (give a .safetensors file or leave empty for the demo weights)"
            )
        return v

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str | None) -> str | None:
        if v is not None and not _DEVICE_RE.match(v):
            raise ValueError(f"device {v!r} must be one of auto, cpu, cuda, cuda:N, mps")
        return v

    @field_validator("dask_address")
    @classmethod
    def _check_dask(cls, v: str | None) -> str | None:
        if v is not None and v.strip() and not _DASK_ADDRESS_RE.match(v.strip()):
            raise ValueError(f"dask_address {v!r} must look like tcp://host:8786")
        return (v or "").strip() or None

    @model_validator(mode="after")
    def _check_aoi_geometry(self) -> MapParams:
        # The AOI parser lives in cloudlulc.catalog; use it so flows and library agree exactly.
        try:
            from cloudlulc.catalog import parse_aoi
        except ImportError:  # pragma: no cover - catalog is part of the package
            return self
        try:
            geom = parse_aoi(self.aoi)
        except Exception as exc:  # AoiError, shapely errors: report them as a parameter error
            raise ValueError(f"aoi cannot be used: {exc}") from None
        if geom.is_empty or geom.area == 0:
            raise ValueError("aoi has no area (a point or line?): give a polygon or a bbox")
        return self

    # -- derived ---------------------------------------------------------------------------------

    @property
    def window(self) -> tuple[datetime, datetime]:
        return parse_time_window(self.time)

    def resolved(self, settings: Settings | None = None) -> MapParams:
        """A copy with every ``None`` field filled from the environment :class:`Settings`."""
        s = settings or get_settings()
        fill = {
            "catalog_url": s.catalog_url,
            "s2_collection": s.s2_collection,
            "s1_collection": s.s1_collection,
            "max_cloud_cover": s.max_cloud_cover,
            "max_s1_gap_days": s.max_s1_gap_days,
            "allow_optical_only": s.allow_optical_only,
            "weights": str(s.weights) if s.weights else None,
            "device": s.device,
            "dask_address": s.dask_address,
            "chunk_size": s.chunk_size,
        }
        updates = {k: v for k, v in fill.items() if getattr(self, k) is None}
        return self.model_copy(update=updates)

    @property
    def output_is_local(self) -> bool:
        return not _REMOTE_STORE_RE.match(self.output) or self.output.startswith("file://")

    def quicklook_path(self) -> Path:
        if self.quicklook_dir:
            return Path(self.quicklook_dir).expanduser()
        if self.output_is_local:
            return Path(self.output.removeprefix("file://")).expanduser().resolve().parent / "quicklooks"
        return Path("quicklooks").resolve()


def _check_bbox(v: list[float] | tuple[float, ...]) -> None:
    if len(v) != 4:
        raise ValueError(f"aoi bbox must have 4 numbers minx,miny,maxx,maxy; got {len(v)}")
    minx, miny, maxx, maxy = (float(x) for x in v)
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise ValueError(f"aoi bbox {list(v)} is not minx<maxx, miny<maxy in lon/lat degrees (-180..180, -90..90)")
