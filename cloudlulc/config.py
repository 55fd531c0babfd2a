"""Deployment-wide settings, read from ``CLOUDLULC_*`` environment variables (12-factor style).

The same code runs against the Planetary Computer, a local ``rustac serve`` or a pgstac server, on a
laptop or a Kubernetes cluster, without code changes. Fields that a run's parameters can also set
(:mod:`cloudlulc.params`) share their validated types with them, so a value is checked the same way
whether it comes from the environment or from a parameter.

This module must stay importable without Prefect (library code never imports it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudlulc.stac.client import PLANETARY_COMPUTER_URL
from cloudlulc.stac.sentinel1 import S1_COLLECTION
from cloudlulc.stac.sentinel2 import S2_COLLECTION

__all__ = [
    "CatalogUrl",
    "DaskAddress",
    "DeviceName",
    "Settings",
    "WeightsPath",
    "get_settings",
]

DEFAULT_LABEL_COLLECTION = "esa-worldcover"

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DASK_ADDRESS_RE = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://\S+$")


def _catalog_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"catalog_url {v!r} must be an http(s) STAC API root URL")
    return v


def _device(v: str) -> str:
    if not _DEVICE_RE.match(v):
        raise ValueError(f"device {v!r} must be one of auto, cpu, cuda, cuda:N, mps")
    return v


def _dask_address(v: str | None) -> str | None:
    text = (v or "").strip()
    if text and not _DASK_ADDRESS_RE.match(text):
        raise ValueError(f"dask_address {v!r} must look like tcp://host:8786")
    return text or None


def _weights(v: str | Path | None) -> str | None:
    if v is None or str(v).strip() == "":
        return None
    from cloudlulc.model.io import WeightsError, check_weights_path

    try:
        check_weights_path(v)
    except WeightsError as exc:
        raise ValueError(f"{exc} (or leave weights empty for the demo weights)") from None
    return str(v)


#: a STAC API root URL (http or https)
CatalogUrl = Annotated[str, AfterValidator(_catalog_url)]
#: auto, cpu, cuda, cuda:N or mps
DeviceName = Annotated[str, AfterValidator(_device)]
#: a Dask scheduler address such as tcp://host:8786 (empty: none)
DaskAddress = Annotated[str | None, AfterValidator(_dask_address)]
#: an existing weights file (.safetensors or its JSON sidecar); None: the committed demo weights
WeightsPath = Annotated[str | None, AfterValidator(_weights)]


class Settings(BaseSettings):
    """Deployment-wide defaults, read from ``CLOUDLULC_<FIELD>`` environment variables.

    Example: ``CLOUDLULC_CATALOG_URL=http://127.0.0.1:7822 CLOUDLULC_DEVICE=cuda``.
    Dict/list fields take JSON (``CLOUDLULC_DASK_TASK_RESOURCES='{"GPU": 1}'``).
    """

    model_config = SettingsConfigDict(env_prefix="CLOUDLULC_", extra="ignore")

    # --- catalog --------------------------------------------------------------------------------
    catalog_url: CatalogUrl = PLANETARY_COMPUTER_URL
    #: sign asset hrefs with planetary_computer; None = only when the catalog is the Planetary Computer
    sign: bool | None = None
    s2_collection: str = S2_COLLECTION
    s1_collection: str = S1_COLLECTION
    label_collection: str = DEFAULT_LABEL_COLLECTION
    #: scene-level ``eo:cloud_cover`` limit in percent; clouds are what the model is for, so high
    max_cloud_cover: float = Field(90.0, ge=0, le=100)
    max_s1_gap_days: float = Field(12.0, ge=0, le=60)
    #: map with optical only (recorded in the output) when no Sentinel-1 pass is within the gap
    allow_optical_only: bool = False
    #: near-real-time runs: an acquisition without a Sentinel-1 pass yet is retried while one may
    #: still be published (max_s1_gap_days + s1_latency_days after it); after that it is mapped
    #: optical-only (marked so in the store) or given up
    nrt_without_s1: Literal["optical-only", "skip"] = "optical-only"
    s1_latency_days: float = Field(3.0, ge=0)
    #: seconds a STAC API request may wait for an answer, and to connect; then it is retried
    stac_timeout_s: float = Field(60.0, gt=0)
    stac_connect_timeout_s: float = Field(15.0, gt=0)
    #: retries of a failed STAC request (connection error, timeout, HTTP 429/5xx), with backoff
    stac_retries: int = Field(4, ge=0)

    # --- cube / inference -----------------------------------------------------------------------
    #: chunk side of the Zarr mosaic (store chunks, DESIGN.md: about 1024)
    chunk_size: int = Field(1024, ge=64)
    #: chunk side of the input cube (reads and inference tasks); must divide the store chunk. None =
    #: the largest divisor of ``chunk_size`` up to 512 (several read chunks per store chunk keep
    #: every worker busy on small AOIs)
    read_chunk_size: int | None = Field(None, ge=32)
    tile: int = Field(256, ge=32)
    overlap: int = Field(64, ge=0)
    batch_size: int = Field(4, ge=1)
    device: DeviceName = "auto"
    #: weights (.safetensors or its JSON); None = the committed demo weights
    weights: WeightsPath = None
    #: AOIs whose grid has more pixels than this are refused (one run maps one grid in one graph)
    max_grid_pixels: int = Field(1_000_000_000, ge=1)
    #: side in pixels of the square blocks a slice is computed and written in: memory is bounded by it
    block_pixels: int = Field(2048, ge=64)
    #: compute tile groups and input chunks shared by neighbouring blocks once, carried on local disk
    #: between blocks (local schedulers only); off: each block recomputes and re-reads its borders
    carry_border_tiles: bool = True
    #: how long a write waits for another writer of the same store before it fails
    store_lock_wait_s: float = Field(300.0, ge=0)
    #: an object-store lease whose heartbeat is older than this is taken over (its writer is gone)
    store_lock_stale_s: float = Field(120.0, gt=0)

    # --- pixel reads ----------------------------------------------------------------------------
    #: seconds for one HTTP request of a pixel read (GDAL_HTTP_TIMEOUT) and for connecting
    read_timeout_s: float = Field(60.0, gt=0)
    read_connect_timeout_s: float = Field(15.0, gt=0)
    #: retries of a transient pixel-read failure on a freshly opened handle, after GDAL's own retries
    read_retries: int = Field(3, ge=0)
    read_retry_delay_s: float = Field(1.0, ge=0)
    #: bands of one remote item read at once within a chunk task, so their HTTP waits overlap
    remote_read_threads: int = Field(8, ge=1, le=64)

    # --- dask -----------------------------------------------------------------------------------
    #: scheduler address of a running cluster; overrides ``dask_cluster``
    dask_address: DaskAddress = None
    #: threads: Dask's threaded scheduler in this process (fastest on one machine, no dashboard);
    #: local: a distributed LocalCluster (dashboard, task resources); kubernetes / coiled: see runtime/
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
    #: glibc malloc arenas of this process and the worker processes it starts (cloudlulc.runtime.worker):
    #: 2 keeps peak memory bounded by the chunk size at full speed; 0 leaves glibc's default
    malloc_arena_max: int = Field(2, ge=0)
    #: GDAL block cache (MB) of the processes that read: GDAL's default (5 % of RAM) fills with the
    #: blocks of every open COG handle; 0 keeps GDAL's default
    gdal_cachemax_mb: int = Field(64, ge=0)

    # --- orchestration --------------------------------------------------------------------------
    #: retries of tasks that touch the network (search, pairing, reading pixels)
    retries: int = Field(3, ge=0)
    retry_delay_seconds: float = Field(10.0, ge=0)
    #: Prefect task timeouts: a base for every task plus, for inference, this much per megapixel of
    #: the AOI (generous: a timeout catches a hung run, not a slow one)
    task_base_timeout_s: float = Field(600.0, gt=0)
    infer_seconds_per_megapixel: float = Field(120.0, gt=0)

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
