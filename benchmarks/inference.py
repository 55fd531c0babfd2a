"""Inference throughput and memory: model-only vs the whole pipeline, and peak RSS vs AOI size.

Prints (never asserts):

1. **model-only** throughput: forward passes on pre-loaded tensors already on the device, in tile
   pixels/s, and the output-pixel rate those tiles give over the benchmark AOI: the tiles a one-shot
   run of that AOI needs (overlap and edge overhang included), each forwarded once (timed over as many
   tiles as that, so it spans a stretch of time comparable to the pipeline run);
2. **pipeline** throughput on the same device, AOI and tiling: COG read -> cube -> model -> Zarr
   mosaic, in output pixels/s, and its ratio to the model-only rate over the AOI (target >= 80 %):
   what the cube reads, chunking, blending and writing cost, median over interleaved rounds;
3. **memory**: peak RSS of the pipeline (fresh process each) for an AOI and one 16x its area
   (target: < 25 % growth, i.e. memory bounded by the chunk size, not the AOI), and the share of
   tiles recomputed along the borders of ``write_mosaic``'s blocks (none where border tile groups are
   carried between blocks, see :mod:`cloudlulc.store.blocks`). ``write_mosaic`` computes square
   blocks of ``--block-chunks`` chunks a side one at a time, so memory is bounded by the block; the
   default sizes are one block side and four times it (an AOI smaller than a block under-fills it).
   Memory limits are the pipeline's (``malloc_arena_max``, ``gdal_cachemax_mb``,
   :mod:`cloudlulc.runtime.worker`), in every run of this script; ``--malloc-arena-max 0`` and
   ``--gdal-cachemax 0`` show glibc's and GDAL's defaults, ``--nanny-malloc`` Dask's nanny setting.

Source of the pipeline input: ``--source demo`` writes a simulated Planetary-Computer-shaped catalog
sized for a ``--size`` x ``--size`` pixel AOI across its two Sentinel-2 tiles
(:func:`cloudlulc.simulate.write_demo_catalog`, SIMULATED DATA; ``--size 0``: the small demo AOI) and
reads it through ``cloudlulc.stac`` pairing and :func:`cloudlulc.cube.build_cube`.
``--source synthetic`` writes synthetic multi-band COGs and opens them lazily with
``rioxarray.open_rasterio``. The memory runs read a catalog sized for each of their AOIs the same way
(``--memory-source demo``, the default) or synthetic COGs (``--memory-source synthetic``).

Examples::

    python benchmarks/inference.py                       # CPU here, GPU where present
    python benchmarks/inference.py --skip-memory --model cloudlulc-net-base --size 1024   # the full-size network
    python benchmarks/inference.py --device cuda --tile 512 --batch-size 16 --chunk 2048 --read-chunk 2048
    python benchmarks/inference.py --skip-memory --source synthetic --size 1024
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------ inputs
def write_synthetic_cogs(out_dir: Path, size: int, seed: int = 0, block: int = 256) -> dict[str, Path]:
    """Optical (12 bands reflectance), SAR (2 bands dB) and cloud COG-layout GeoTIFFs, written in
    windows so that the writer itself never holds the whole AOI."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from cloudlulc.classes import S1_BANDS, S2_BANDS

    out_dir.mkdir(parents=True, exist_ok=True)
    transform = from_origin(500000.0, 4600000.0, 10.0, 10.0)
    common = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs="EPSG:32633",
        transform=transform,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
        predictor=1,
    )
    paths = {"optical": out_dir / "optical.tif", "sar": out_dir / "sar.tif", "cloud": out_dir / "cloud.tif"}
    rng = np.random.default_rng(seed)
    with (
        rasterio.open(paths["optical"], "w", count=len(S2_BANDS), dtype="float32", nodata=np.nan, **common) as o,
        rasterio.open(paths["sar"], "w", count=len(S1_BANDS), dtype="float32", nodata=np.nan, **common) as s,
        rasterio.open(paths["cloud"], "w", count=1, dtype="uint8", nodata=255, **common) as c,
    ):
        for y0 in range(0, size, block):
            for x0 in range(0, size, block):
                h, w = min(block, size - y0), min(block, size - x0)
                yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
                field = np.sin(yy / 37.0) * np.cos(xx / 53.0)
                opt = 0.15 + 0.1 * field[None] + 0.02 * rng.standard_normal((len(S2_BANDS), h, w), dtype=np.float32)
                sar = np.stack([-11 + 3 * field, -18 + 3 * field]) + rng.standard_normal((2, h, w), dtype=np.float32)
                cloud = (np.sin(xx / 71.0) * np.cos(yy / 61.0) > 0.6).astype(np.uint8)
                opt[:, cloud.astype(bool)] = np.nan  # cloud-masked optical: the SAR path fills in
                win = Window(x0, y0, w, h)
                o.write(opt.astype(np.float32), window=win)
                s.write(sar.astype(np.float32), window=win)
                c.write(cloud[None], window=win)
    return paths


def synthetic_cube(paths: dict[str, Path], chunk: int):
    """A lazy cube with the build_cube schema read from the COGs (rioxarray.open_rasterio, dask)."""
    import rioxarray
    import xarray as xr

    from cloudlulc.classes import S1_BANDS, S2_BANDS

    def open_(p: Path):
        return rioxarray.open_rasterio(p, chunks={"band": -1, "y": chunk, "x": chunk}, lock=False, masked=False)

    optical = open_(paths["optical"]).assign_coords(band=list(S2_BANDS))
    sar = open_(paths["sar"]).rename(band="sar_band").assign_coords(sar_band=list(S1_BANDS))
    cloud = open_(paths["cloud"]).isel(band=0, drop=True)
    ds = xr.Dataset({"optical": optical, "sar": sar, "cloud": cloud})
    ds = ds.drop_vars([v for v in ds.coords if v == "spatial_ref"]).rio.write_crs("EPSG:32633")
    ds.attrs["pairing"] = {"source": "synthetic benchmark COGs"}
    return ds


def write_benchmark_catalog(out_dir: Path, size: int | None = None):
    """The simulated Planetary-Computer-shaped catalog the demo source reads (SIMULATED DATA).

    ``size=None``: the demo catalog. ``size=N``: a catalog with one acquisition (baseline 04.00, 85 %
    cloud, its S1 pass split in two frames) whose two S2 tiles are large enough for an N x N pixel AOI
    centred on their overlap (see :func:`catalog_cube`).
    """
    from cloudlulc.simulate import catalog as simcat
    from cloudlulc.simulate import write_demo_catalog

    if size is None:
        return write_demo_catalog(out_dir, seed=0)
    return write_demo_catalog(
        out_dir,
        seed=0,
        tile_size=_tile_for(size),
        s2_acquisitions=simcat.DEFAULT_S2[2:3],
        s1_passes=simcat.DEFAULT_S1[2:3],
    )


def _tile_for(size: int) -> int:
    """S2 tile side for an N px AOI: a multiple of 6, the AOI plus a margin inside each tile's height."""
    return -(-(size + 120) // 6) * 6


def catalog_cube(cat, chunk: int, size: int | None = None, serve: Any = None):
    """A build_cube cube over a :func:`write_benchmark_catalog` catalog, through catalog pairing.

    ``size=None``: the demo catalog's first acquisition over its small demo AOI. ``size=N``: an N x N
    pixel AOI centred on the two tiles' overlap, so the cube mosaics both tiles, harmonises, reads SCL
    and S1 over a realistic extent. ``serve``: a callable taking the catalog directory and returning
    the URL it is served at; the cube then reads the COGs over HTTP, as from a remote catalog.
    """
    from pyproj import Transformer

    from cloudlulc.cube import build_cube, grid_for_aoi
    from cloudlulc.stac import Pair, group_acquisitions, parse_aoi, select_s1

    if size is None:
        aoi = parse_aoi(list(cat.aoi_bbox_lonlat))
    else:
        to_utm = Transformer.from_crs(4326, cat.epsg, always_xy=True)
        to_ll = Transformer.from_crs(cat.epsg, 4326, always_xy=True)
        tiles = cat.items_of("sentinel-2-l2a")
        east_edge = min(to_utm.transform_bounds(*it["bbox"])[2] for it in tiles)  # the western tile's east edge
        top = min(to_utm.transform_bounds(*it["bbox"])[3] for it in tiles)
        cx, cy = east_edge - 300.0, top - (_tile_for(size) * 10.0) / 2
        half = size * 10.0 / 2 - 1.0
        aoi = parse_aoi([*to_ll.transform(cx - half, cy - half), *to_ll.transform(cx + half, cy + half)])
    items = cat.with_href_base(serve(cat.root)) if serve is not None else cat.items
    s2 = [it for it in items if it["collection"] == "sentinel-2-l2a"]
    acq = group_acquisitions(s2, aoi)[0]
    s1 = select_s1(acq, [it for it in items if it["collection"] == "sentinel-1-rtc"], aoi)
    pair = Pair(s2=acq, s1=s1, aoi=aoi)
    return build_cube(pair, grid_for_aoi(aoi), chunksize=chunk), pair


# ------------------------------------------------------------------------------------------ measures
def load_model(name: str):
    from cloudlulc.model import build_model

    return build_model(name).eval()


def model_only(model, device: str, tile: int, batch: int, repeats: int, streams: int = 1, threads: int = 1) -> float:
    """Tile pixels per second of forward + softmax on tensors already on the device.

    ``streams`` threads run forwards concurrently (``threads`` intra-op threads each on CPU), as the
    pipeline's Dask worker threads do on the CPU (on a GPU the pipeline runs one forward at a time per
    device, so ``main`` passes one stream there): the same compute resources on both sides.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from cloudlulc.inference import resolve_device

    dev = resolve_device(device)
    previous = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    m = model.to(dev)
    stride = int(getattr(model, "stride", 1))
    tile = -(-tile // stride) * stride
    g = torch.Generator().manual_seed(0)
    inputs = [
        (
            (0.05 + 0.3 * torch.rand((batch, 12, tile, tile), generator=g)).to(dev),
            (-15 + 5 * torch.randn((batch, 2, tile, tile), generator=g)).to(dev),
        )
        for _ in range(streams)
    ]

    def run(k: int, n: int) -> None:
        optical, sar = inputs[k]
        amp = (
            torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
        )
        with torch.inference_mode(), amp:
            for _ in range(n):
                torch.softmax(m(optical, sar).logits.float(), 1)

    try:
        with ThreadPoolExecutor(streams) as pool:
            list(pool.map(run, range(streams), [1] * streams))  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            list(pool.map(run, range(streams), [repeats] * streams))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
    finally:
        model.to("cpu")
        torch.set_num_threads(previous)
    return streams * batch * tile * tile * repeats / dt


def pipeline(cube, model, store: Path, args) -> tuple[float, int]:
    """Seconds and output pixels of predict_cube + write_mosaic (the COG reads happen inside)."""
    from cloudlulc.inference import is_shared_work, predict_cube
    from cloudlulc.store import write_mosaic

    t = time.perf_counter()
    result = predict_cube(
        cube, model, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device
    )
    write_mosaic(
        result,
        store,
        time="2024-04-19T10:00:00Z",
        attrs={"benchmark": True},
        chunk_size=args.chunk,
        block_chunks=args.block_chunks or None,
        shared_work=is_shared_work if args.carry else None,
    )
    return time.perf_counter() - t, cube.sizes["y"] * cube.sizes["x"]


@contextlib.contextmanager
def forward_timer():
    """Accumulate the time spent in the inference's batch forward (a measurement wrapper)."""
    import threading

    import cloudlulc.inference.blend as inference

    stats = {"seconds": 0.0, "calls": 0, "tiles": 0}
    lock = threading.Lock()
    original = inference._forward

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            with lock:
                stats["seconds"] += time.perf_counter() - t
                stats["calls"] += 1
                stats["tiles"] += int(a[1].shape[0])  # _forward(model, optical[B,...], sar, device)

    inference._forward = timed
    try:
        yield stats
    finally:
        inference._forward = original


def warm_up(cube, model, workdir: Path, args) -> None:
    """One small run first: imports, the per-process device copy of the model, Zarr codecs. A
    long-running worker has these warm; timing them would measure start-up, not throughput."""
    small = cube.isel(
        y=slice(0, min(args.read_chunk, cube.sizes["y"])), x=slice(0, min(args.read_chunk, cube.sizes["x"]))
    )
    pipeline(small, model, workdir / "warmup.zarr", args)


@contextlib.contextmanager
def scheduler(args):
    """The Dask scheduler of the pipeline runs: ``threads`` is what the ``map-aoi`` flow uses by
    default (``dask_cluster="threads"``: Dask's threaded scheduler, ``--dask-workers`` threads);
    ``distributed`` is ``dask_cluster="local"`` (an in-process LocalCluster, one worker with
    ``--dask-workers`` threads, as the flow creates it)."""
    import dask

    if args.scheduler == "threads":
        with dask.config.set(scheduler="threads", num_workers=args.dask_workers):
            yield
        return
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            processes=False, n_workers=1, threads_per_worker=args.dask_workers, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        yield


def memory_run(args) -> None:
    """Child process: one pipeline run over the input its parent wrote; prints JSON with peak RSS."""
    import torch

    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_source == "demo":
            from cloudlulc.simulate import SimCatalog

            cube, _ = catalog_cube(SimCatalog.load(args.input_dir), args.read_chunk, args.size)
        else:
            cube = synthetic_cube(
                {k: Path(args.input_dir) / f"{k}.tif" for k in ("optical", "sar", "cloud")}, args.read_chunk
            )
        model = load_model(args.model)
        with scheduler(args):
            warm_up(cube, model, Path(tmp), args)
            rss0 = _rss_kb("VmRSS")
            reset = _reset_peak_rss()  # so the peak below is the timed run's, not the warm-up's
            with forward_timer() as fwd:
                seconds, pixels = pipeline(cube, model, Path(tmp) / "m.zarr", args)
        peak = _rss_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "pixels": pixels,
                "seconds": seconds,
                "peak_rss_mb": peak / 1024,
                "rss_before_mb": rss0 / 1024,
                "peak_is_run_only": reset,
                "tiles_run": fwd["tiles"],
                "tiles_unique": unique_tiles(model, cube.sizes["y"], cube.sizes["x"], args),
            }
        )
    )


def tile_grid(model, args):
    """The inference's tile grid for this model (tile rounded up to the model's stride)."""
    from cloudlulc.inference.predict import _effective_grid

    return _effective_grid(model, args.tile, args.overlap)


def unique_tiles(model, h: int, w: int, args) -> int:
    """Tiles of the global grid (what a one-shot run computes; no tile of the benchmark AOIs, synthetic
    or catalog, is all nodata, so every one runs)."""
    grid = tile_grid(model, args)
    return grid.count(h) * grid.count(w)


def _rss_kb(field: str) -> int:
    """VmRSS / VmHWM of this process in kB (Linux), else the high-water mark from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--model", default="cloudlulc-net-tiny")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--chunk", type=int, default=1024, help="mosaic (Zarr) chunk size, as the pipeline's chunk_size")
    p.add_argument(
        "--read-chunk",
        type=int,
        default=None,
        help="cube chunk size (reads and inference); default: the pipeline's read_chunk_size(--chunk)",
    )
    p.add_argument("--source", choices=("demo", "synthetic"), default="demo")
    p.add_argument(
        "--no-carry",
        dest="carry",
        action="store_false",
        help="recompute (and re-read) the tile groups that neighbouring blocks share instead of carrying "
        "them between blocks (the carry_border_tiles setting, on by default)",
    )
    p.add_argument(
        "--asset-latency-ms",
        type=float,
        default=None,
        help="demo source: read the COGs over HTTP from a loopback server that answers every "
        "request after this many ms, as a remote object store would (default: local files)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=2048,
        help="AOI side in pixels (demo: a simulated catalog sized for it; 0 = the small demo AOI)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed batches per stream for model-only (default: the AOI's tile count, so both "
        "sides run the same number of tiles over a comparable stretch of time)",
    )
    p.add_argument("--rounds", type=int, default=3, help="pipeline runs, each between two model-only runs")
    p.add_argument(
        "--memory-sizes",
        default="auto",
        help="two AOI sides, the second 4x the first = 16x area (auto: one block side and 4x it)",
    )
    p.add_argument(
        "--memory-source",
        choices=("demo", "synthetic"),
        default="demo",
        help="input of the memory runs: demo = a simulated catalog sized for each AOI, read through "
        "catalog pairing and build_cube (the pipeline's path; the 8192 px catalog takes a few "
        "minutes and about 15 GB to write); synthetic = multi-band COGs via rioxarray",
    )
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument(
        "--block-chunks",
        type=int,
        default=None,
        help="write_mosaic block side in chunks (default: auto_block_chunks(--chunk); 0: no blocks)",
    )
    p.add_argument(
        "--gdal-cachemax",
        type=int,
        default=None,
        help="GDAL block cache in MB, as the pipeline sets it (default: the gdal_cachemax_mb setting; "
        "0: GDAL's default, 5 %% of RAM)",
    )
    p.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--dask-workers", type=int, default=2, help="Dask worker threads")
    p.add_argument(
        "--scheduler",
        choices=("threads", "distributed"),
        default="threads",
        help="threads: the map-aoi default (dask_cluster=threads); distributed: dask_cluster=local "
        "(in-process LocalCluster)",
    )
    p.add_argument(
        "--malloc-arena-max",
        type=int,
        default=None,
        help="glibc malloc arenas, as the pipeline sets them (default: the malloc_arena_max setting; "
        "0: glibc's default). --nanny-malloc runs the memory runs as Dask's nanny starts workers",
    )
    p.add_argument(
        "--nanny-malloc",
        action="store_true",
        help="memory runs with Dask's nanny default MALLOC_TRIM_THRESHOLD_=65536 (low memory, much slower)",
    )
    p.add_argument("--_memory-run", dest="memory_run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_input-dir", dest="input_dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    from cloudlulc.config import Settings
    from cloudlulc.runtime import apply_worker_limits

    settings = Settings()
    if args.malloc_arena_max is None:
        args.malloc_arena_max = 0 if args.nanny_malloc else settings.malloc_arena_max
    if args.gdal_cachemax is None:
        args.gdal_cachemax = settings.gdal_cachemax_mb
    # as dask_client() does before the workers start (cloudlulc.runtime.worker): here before any thread
    args.memory_limits = apply_worker_limits(args.malloc_arena_max, args.gdal_cachemax)
    if args.nanny_malloc:  # the memory runs' children get Dask nanny's variable (see below)
        args.memory_limits += "; memory runs with MALLOC_TRIM_THRESHOLD_=65536 (Dask's nanny)"
    from cloudlulc.pipeline import read_chunk_size

    args.read_chunk = read_chunk_size(args.chunk, args.read_chunk)
    if args.block_chunks is None:
        from cloudlulc.store import auto_block_chunks

        args.block_chunks = auto_block_chunks(args.chunk)

    if args.memory_run:
        memory_run(args)
        return

    import torch

    from cloudlulc.inference import resolve_device

    torch.set_num_threads(args.torch_threads)
    dev = resolve_device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"device={dev} model={args.model} tile={args.tile} overlap={args.overlap} batch={args.batch_size} "
        f"chunk={args.chunk} read_chunk={args.read_chunk} torch_threads={args.torch_threads} dask_workers={args.dask_workers} "  # noqa: E501
        f"scheduler={args.scheduler} carry={args.carry} "
        f"cpus={os.cpu_count()} load_avg_1min={load:.1f}"
    )
    print(f"memory limits: {args.memory_limits}")
    model = load_model(args.model)
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
            tmp_path = Path(tmp)
            if args.source == "demo":
                serve = None
                if args.asset_latency_ms is not None:
                    from cloudlulc.testing.assets import serve_assets

                    def serve(root):
                        return servers.enter_context(serve_assets(root, delay_ms=args.asset_latency_ms)).url

                cat = write_benchmark_catalog(tmp_path / "catalog", args.size or None)
                cube, _ = catalog_cube(cat, args.read_chunk, args.size or None, serve=serve)
                what = "simulated catalog (COGs, 2 S2 tiles, 2 S1 frames) -> catalog pairing -> build_cube"
                if serve is not None:
                    what += f" (COGs over loopback HTTP, {args.asset_latency_ms:g} ms per request)"
            else:
                cube = synthetic_cube(write_synthetic_cogs(tmp_path / "cogs", args.size), args.read_chunk)
                what = "synthetic COGs -> rioxarray.open_rasterio"
            with scheduler(args):
                warm_up(cube, model, tmp_path, args)
                # model-only before and after each pipeline run: on a shared machine the available
                # CPU drifts by tens of percent, so each run is compared with the mean of the two
                # model-only runs around it, and the median over the rounds is reported
                # CPU: as many concurrent forwards as Dask worker threads. GPU: one, as the pipeline runs one
                # forward at a time per device (cloudlulc.inference._device_lock)
                streams = args.dask_workers if dev.type == "cpu" else 1
                # as many tiles as the pipeline runs: a few batches would take a second or two, short
                # enough for a neighbour's burst on a shared machine to swing the figure by 20 %
                repeats = args.repeats or -(
                    -unique_tiles(model, cube.sizes["y"], cube.sizes["x"], args) // (args.batch_size * streams)
                )
                mo_runs = [
                    model_only(model, args.device, args.tile, args.batch_size, repeats, streams, args.torch_threads)
                ]
                runs = []
                for r in range(args.rounds):
                    with forward_timer() as fwd:
                        seconds, pixels = pipeline(cube, model, tmp_path / f"mosaic{r}.zarr", args)
                    mo_runs.append(
                        model_only(model, args.device, args.tile, args.batch_size, repeats, streams, args.torch_threads)
                    )
                    runs.append((seconds, dict(fwd)))
        h, w = cube.sizes["y"], cube.sizes["x"]
        grid_tiles = unique_tiles(model, h, w, args)
        tile_px = tile_grid(model, args).tile ** 2
        print(
            f"AOI:        {h} x {w} px = {grid_tiles} tiles of {args.tile} px at overlap {args.overlap} "
            f"({grid_tiles * tile_px / (h * w):.2f} tile px per output px); {what} -> model -> Zarr"
        )
        ratios = []
        for r, (seconds, fwd) in enumerate(runs):
            mo = (mo_runs[r] + mo_runs[r + 1]) / 2
            # the same AOI on pre-loaded tensors: the tiles a one-shot run needs (overlap and edge
            # overhang included), each forwarded once, at the model-only tile rate
            mo_aoi = h * w / (grid_tiles * tile_px / mo)
            rate = pixels / seconds
            ratios.append(rate / mo_aoi)
            print(
                f"round {r + 1}: model-only {mo:,.0f} tile px/s (before {mo_runs[r]:,.0f}, after {mo_runs[r + 1]:,.0f}; "  # noqa: E501
                f"{streams} concurrent stream(s), as the pipeline's forwards run) = {mo_aoi:,.0f} output px/s over this AOI; "  # noqa: E501
                f"pipeline {rate:,.0f} output px/s ({seconds:.1f} s) = {rate / mo_aoi:.0%}"
            )
            print(
                f"         {fwd['tiles']} tiles in {fwd['calls']} forwards ({fwd['tiles'] / grid_tiles - 1:+.0%} "
                f"recomputed along block borders); forward time (incl. host<->device copies, summed over threads) "
                f"{fwd['seconds']:.1f} s = {fwd['seconds'] / (seconds * streams):.0%} of the workers' time"
            )
        med = float(np.median(ratios))
        print(
            f"ratio pipeline / model-only over this AOI, median of {len(ratios)} rounds: {med:.0%} "
            f"(range {min(ratios):.0%}-{max(ratios):.0%}; target >= 80 %): {'MET' if med >= 0.8 else 'NOT MET'}"
        )

    if not args.skip_memory:
        block_side = args.chunk * max(args.block_chunks, 1)
        if args.memory_sizes == "auto":
            sizes = [block_side, 4 * block_side]
        else:
            sizes = [int(s) for s in args.memory_sizes.split(",")]
        source = (
            "simulated catalog -> catalog pairing -> build_cube"
            if args.memory_source == "demo"
            else "synthetic COGs -> rioxarray.open_rasterio"
        )
        print(f"memory: {args.memory_limits} (fresh process per AOI; input: {source})")
        if args.block_chunks and sizes[0] < block_side:
            print(
                f"memory: note: the smaller AOI ({sizes[0]} px) is below one block ({block_side} px), so it "
                "under-fills the block and the growth overstates the AOI dependence"
            )
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                input_dir = Path(tmp) / f"input{size}"
                written = time.perf_counter()
                if args.memory_source == "demo":
                    write_benchmark_catalog(input_dir, size)
                else:
                    write_synthetic_cogs(input_dir, size)
                print(f"memory: input for {size} px written in {time.perf_counter() - written:.0f} s", flush=True)
                cmd = [
                    sys.executable,
                    __file__,
                    "--_memory-run",
                    "--_input-dir",
                    str(input_dir),
                    "--memory-source",
                    args.memory_source,
                    "--size",
                    str(size),
                    "--device",
                    args.device,
                    "--model",
                    args.model,
                    "--tile",
                    str(args.tile),
                    "--overlap",
                    str(args.overlap),
                    "--batch-size",
                    str(args.batch_size),
                    "--chunk",
                    str(args.chunk),
                    "--read-chunk",
                    str(args.read_chunk),
                    "--torch-threads",
                    str(args.torch_threads),
                    "--dask-workers",
                    str(args.dask_workers),
                    "--scheduler",
                    args.scheduler,
                    "--block-chunks",
                    str(args.block_chunks),
                    "--malloc-arena-max",
                    str(args.malloc_arena_max),
                    "--gdal-cachemax",
                    str(args.gdal_cachemax),
                    *([] if args.carry else ["--no-carry"]),
                ]
                # the limits as the pipeline sets them (the child applies them), or as Dask's nanny does
                env = dict(os.environ)
                if args.nanny_malloc:
                    env["MALLOC_TRIM_THRESHOLD_"] = "65536"
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                run = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(run)
                scope = "during the run" if run["peak_is_run_only"] else "process high-water mark"
                print(
                    f"memory: AOI {size}x{size} px ({run['pixels'] / 1e6:.2f} Mpx): peak RSS {scope} "
                    f"{run['peak_rss_mb']:.0f} MB (RSS before it, after imports, model and a warm-up chunk: "
                    f"{run['rss_before_mb']:.0f} MB), {run['seconds']:.1f} s, "
                    f"{run['pixels'] / run['seconds']:,.0f} px/s; tiles run {run['tiles_run']} for "
                    f"{run['tiles_unique']} grid tiles ({run['tiles_run'] / run['tiles_unique'] - 1:+.1%} recomputed "
                    "along block borders)"
                )
        if len(runs) >= 2:
            area = runs[-1]["pixels"] / runs[0]["pixels"]
            growth = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"] - 1
            extra = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
            print(
                f"memory growth for {area:.0f}x the area: {growth:+.0%} of peak RSS ({extra:+.0f} MB) "
                f"(target < +25 %): {'MET' if growth < 0.25 else 'NOT MET'}"
            )
            print(
                f"  note: write_mosaic computes square blocks of {args.block_chunks} chunks a side one at a time "
                "(memory bounded by the block, not the AOI, once the smaller AOI spans a block); 0 = no blocks: "
                "Dask then keeps about one row of input chunks and tile sums alive (memory grows with the "
                "AOI width)"
            )


if __name__ == "__main__":
    main()
