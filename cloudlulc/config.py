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

    model_config = SettingsConfigDict(env_prefix="CLOUDLULC_", extra="ignore", use_attribute_docstrings=True)

    # --- catalog --------------------------------------------------------------------------------
    catalog_url: CatalogUrl = PLANETARY_COMPUTER_URL
    """STAC API root to search (default: the Microsoft Planetary Computer)"""
    sign: bool | None = None
    """sign asset hrefs with planetary_computer; None = only when the catalog is the Planetary Computer"""
    s2_collection: str = S2_COLLECTION
    """Sentinel-2 L2A collection id on the catalog"""
    s1_collection: str = S1_COLLECTION
    """Sentinel-1 RTC collection id on the catalog"""
    label_collection: str = DEFAULT_LABEL_COLLECTION
    """label product for datasets and evaluation (esa-worldcover or io-lulc-annual-v02)"""
    max_cloud_cover: float = Field(100.0, ge=0, le=100)
    """cloud over the AOI (percent) above which a Sentinel-2 acquisition is dropped whole. 100 keeps every
    acquisition: mapping under cloud is what the radar is for, and each pixel's ``input_quality`` and calibrated
    ``confidence`` say what it rests on. Lower it for maps led by clear optical views."""
    max_s1_gap_days: float = Field(12.0, ge=0, le=60)
    """largest gap in days between a Sentinel-2 acquisition and the Sentinel-1 pass paired with it"""
    allow_optical_only: bool = False
    """map with optical only (recorded in the output) when no Sentinel-1 pass is within the gap"""
    nrt_without_s1: Literal["optical-only", "skip"] = "optical-only"
    """near-real-time runs: an acquisition without a Sentinel-1 pass yet is retried while one may still be
    published (max_s1_gap_days + s1_latency_days after it); after that it is mapped optical-only (marked so in
    the store) or given up"""
    s1_latency_days: float = Field(3.0, ge=0)
    """days a Sentinel-1 pass may take to appear in the catalog (near-real-time runs wait this long)"""
    stac_timeout_s: float = Field(60.0, gt=0)
    """seconds a STAC API request may wait for an answer, and to connect; then it is retried"""
    stac_connect_timeout_s: float = Field(15.0, gt=0)
    """seconds to connect to the STAC API"""
    stac_retries: int = Field(4, ge=0)
    """retries of a failed STAC request (connection error, timeout, HTTP 429/5xx), with backoff"""

    # --- cube / inference -----------------------------------------------------------------------
    chunk_size: int = Field(1024, ge=64)
    """chunk side of the Zarr mosaic (store chunks, DESIGN.md: about 1024)"""
    read_chunk_size: int | None = Field(None, ge=32)
    """chunk side of the input cube (reads and inference tasks); must divide the store chunk. None = the largest
    divisor of ``chunk_size`` up to 512 (several read chunks per store chunk keep every worker busy on small
    AOIs)"""
    tile: int = Field(256, ge=32)
    """inference tile side in pixels (rounded up to the network's stride)"""
    overlap: int = Field(64, ge=0)
    """pixels neighbouring tiles overlap and blend over (at most a quarter of the tile)"""
    batch_size: int = Field(4, ge=1)
    """tiles per forward pass"""
    device: DeviceName = "auto"
    """where the network runs: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"""
    weights: WeightsPath = None
    """weights (.safetensors or its JSON); None = the committed demo weights"""
    output_root: str | None = None
    """directory that relative local outputs (stores, quicklooks) resolve against; None: the directory the process
    runs in (for a served deployment: the serving process's). Results always report absolute paths."""
    probabilities: bool = False
    """store each class's probability too (``probabilities``: class, y, x; uint8 percent), opt-in"""
    quicklook: bool = True
    """draw a PNG quicklook of each mapped slice (small NRT runs save about a second without it)"""
    export_cog: bool = False
    """export each mapped slice's ``lulc`` as a Cloud Optimized GeoTIFF beside the store"""
    max_grid_pixels: int = Field(1_000_000_000, ge=1)
    """AOIs whose grid has more pixels than this are refused (one run maps one grid in one graph)"""
    block_pixels: int = Field(2048, ge=64)
    """side in pixels of the square blocks a slice is computed and written in: memory is bounded by it"""
    carry_border_tiles: bool = True
    """compute tile groups and input chunks shared by neighbouring blocks once, carried on local disk between
    blocks (local schedulers only); off: each block recomputes and re-reads its borders"""
    store_lock_wait_s: float = Field(300.0, ge=0)
    """how long a write waits for another writer of the same store before it fails"""
    store_lock_stale_s: float = Field(120.0, gt=0)
    """an object-store lease whose heartbeat is older than this is taken over (its writer is gone)"""

    # --- pixel reads ----------------------------------------------------------------------------
    read_timeout_s: float = Field(60.0, gt=0)
    """seconds for one HTTP request of a pixel read (GDAL_HTTP_TIMEOUT) and for connecting"""
    read_connect_timeout_s: float = Field(15.0, gt=0)
    """seconds to connect for a pixel read (GDAL_HTTP_CONNECTTIMEOUT)"""
    read_retries: int = Field(3, ge=0)
    """retries of a transient pixel-read failure on a freshly opened handle, after GDAL's own retries"""
    read_retry_delay_s: float = Field(1.0, ge=0)
    """seconds before each retry of a pixel read on a fresh handle"""
    remote_read_threads: int = Field(8, ge=1, le=64)
    """bands of one remote item read at once within a chunk task, so their HTTP waits overlap"""

    # --- dask -----------------------------------------------------------------------------------
    dask_address: DaskAddress = None
    """scheduler address of a running cluster; overrides ``dask_cluster``"""
    dask_cluster: Literal["threads", "local", "kubernetes", "coiled"] = "threads"
    """threads: Dask's threaded scheduler in this process (fastest on one machine, no dashboard); local: a
    distributed LocalCluster (dashboard, task resources); kubernetes / coiled: see runtime/"""
    dask_n_workers: int | None = Field(None, ge=1)
    """workers of a LocalCluster (None: Dask's default for the machine)"""
    dask_threads_per_worker: int | None = Field(None, ge=1)
    """threads per worker (LocalCluster) or of the threaded scheduler; None = one per core"""
    dask_processes: bool = False
    """LocalCluster with worker processes (True) or threads in this process (False, lighter)"""
    dask_kubernetes_spec: Path = Path("deploy/dask/kubernetes-cluster.yaml")
    """KubeCluster spec (dask-kubernetes operator ``DaskCluster`` resource)"""
    image: str | None = None
    """the CloudLULC image (deploy/Dockerfile; a version tag or digest) the Dask pods of Kubernetes and Coiled
    runs use, so that they run the flow's code; `prefect deploy` needs it for the Kubernetes deployments"""
    dask_coiled_config: Path = Path("deploy/dask/coiled.yaml")
    """keyword arguments for ``coiled.Cluster``"""
    dask_connect_timeout: str = "30s"
    """how long to wait for a scheduler given by address"""
    dask_task_resources: dict[str, float] = Field(default_factory=dict)
    """Dask resources every inference task requires, e.g. {"GPU": 1} on GPU worker pools"""
    malloc_arena_max: int = Field(2, ge=0)
    """glibc malloc arenas of this process and the worker processes it starts (cloudlulc.runtime.worker): 2 keeps
    peak memory bounded by the chunk size at full speed; 0 leaves glibc's default"""
    gdal_cachemax_mb: int = Field(64, ge=0)
    """GDAL block cache (MB) of the processes that read: GDAL's default (5 % of RAM) fills with the blocks of
    every open COG handle; 0 keeps GDAL's default"""

    # --- orchestration --------------------------------------------------------------------------
    retries: int = Field(3, ge=0)
    """retries of tasks that touch the network (search, pairing, reading pixels)"""
    retry_delay_seconds: float = Field(10.0, ge=0)
    """seconds between retries of a network task"""
    task_base_timeout_s: float = Field(600.0, gt=0)
    """Prefect task timeouts: a base for every task plus, for inference, this much per megapixel of the AOI
    (generous: a timeout catches a hung run, not a slow one)"""
    infer_seconds_per_megapixel: float = Field(120.0, gt=0)
    """inference task timeout per megapixel of the AOI, on top of task_base_timeout_s"""

    # --- served deployments (flows.serve) -------------------------------------------------------
    demo_aoi: str | None = None
    """`map-aoi/demo` defaults; the deployment is served only when aoi and time are set"""
    demo_time: str | None = None
    """`map-aoi/demo` default date or range (served with demo_aoi)"""
    demo_output: str = "demo-out/demo.zarr"
    """`map-aoi/demo` default output store"""
    nrt_name: str = "demo"
    """`map-aoi-nrt/<nrt_name>`: served when nrt_aoi (or demo_aoi) is set"""
    nrt_aoi: str | None = None
    """AOI of the served `map-aoi-nrt/<nrt_name>` deployment (served only when set, or when demo_aoi is)"""
    nrt_output: str = "demo-out/nrt.zarr"
    """output store of the served NRT deployment"""
    nrt_cron: str = "0 */6 * * *"
    """cron schedule of the served NRT deployment (UTC)"""
    nrt_interval_minutes: float | None = Field(None, gt=0)
    """an interval schedule instead of the cron (minutes), e.g. 360"""
    nrt_lookback_days: float = Field(30.0, gt=0)
    """how far back the NRT deployment's first run (empty store) searches"""
    nrt_paused: bool = False
    """create the NRT schedule paused (the demo does, so no scheduled run competes with it)"""
    serve_limit: int | None = Field(2, ge=1)
    """concurrent flow runs one `flows.serve` process executes"""


def get_settings() -> Settings:
    """Fresh settings from the current environment (not cached: tests and the demo change env)."""
    return Settings()
