"""Chunked, seam-free inference of a segmentation model over a lazy (Dask) cube.

Why this shape
--------------
A map of a large AOI is computed chunk by chunk (memory bounded by the chunk size), yet it must be
identical to running the model once over the whole image: no seams at chunk borders. Two choices
make that hold by construction:

* **Tiles sit on a global grid.** The model sees square tiles of ``tile`` pixels placed every
  ``tile - overlap`` pixels from an origin fixed to the *image* (``-overlap // 2``, so the image edge
  lies inside a tile's blending ramp rather than at its border). A chunk never invents its own tiles:
  a chunked run and a one-shot run feed the model exactly the same tile inputs. Tiles that reach past
  the image edge are filled by reflection of the *image* (never of the chunk), so edge tiles are equal
  too.
* **Blending is a weighted average of softmax probabilities** with a separable raised-cosine ramp over
  the ``overlap`` (the ramps of two neighbours sum to one; the accumulated weight is divided out anyway).

Each tile is run once per computation. The Dask graph has two stages: *group* tasks per output
chunk run the tiles whose origin falls inside that chunk (reading the chunk plus a one-sided halo of
``tile`` pixels) and return their weighted probability sums over the tiles' footprint; a *combine*
task per output chunk adds the footprints of the groups that touch it (fixed order), normalises, and
emits ``uint8`` products. Only floating-point summation order differs from a one-shot run.

A chunk's tiles are split into groups by the chunk row and column their footprint reaches (ending
inside the chunk, reaching down, right, down-right): a computation of some output chunks then runs
only the tiles that touch them, never a neighbour's interior tiles.

Memory: a task holds its padded window (its tiles only; a chunk's validity mask is taken from the
input chunk itself), its tile sums and one batch. Tiles reaching into the next chunk read a copy of
that chunk's first ``tile`` rows or columns (a *halo strip* task), never the whole chunk, so a chunk
read only for its halo is freed at once. Computing the whole array at once, Dask keeps the input
chunks and tile sums that the next chunk row still needs, so memory grows with the AOI *width* in
chunks. :func:`cloudlulc.mosaic.write_mosaic` therefore computes square blocks of chunks one at a
time: memory is bounded by the block (plus the halo strips along its far edges). The tile groups
crossing a block border run once and wait on disk for the next blocks, as do the input chunks read
for their halo (:mod:`cloudlulc.block_compute`; where workers do not share this host's disk both are
recomputed in each block instead). Either way the same group
tasks run on the same inputs: block-wise output equals a single computation, bit for bit with
deterministic kernels. ``benchmarks/inference.py`` prints the memory and the share of recomputed
tiles. Tiles whose footprint is entirely nodata are skipped.

Nodata: a pixel whose optical *and* SAR bands are all NaN is nodata (255 in every product). Missing
optical bands with valid SAR (clouds masked upstream, optical-only gaps) are filled with the model's
normalisation mean so that the SAR path still classifies them; the model always gets finite inputs.

Devices: ``device="auto"`` picks CUDA when present (resolved where the task runs, so a CPU client can
drive GPU workers). The model is copied to the device once per process and cached by a sha256 of its
weights; CUDA runs use autocast (:data:`AMP_DTYPE`), pinned host memory and non-blocking copies.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
import xarray as xr

from cloudlulc.classes import CLASS_NAMES, CLASSES, NODATA, S1_BANDS, S2_BANDS

log = logging.getLogger(__name__)

__all__ = [
    "TILE_GROUP_PREFIX",
    "INPUT_PREFIX",
    "TileGrid",
    "predict_cube",
    "predict_arrays",
    "weights_sha256",
    "resolve_device",
    "blend_window",
]


# --------------------------------------------------------------------------------------------------
# Tile geometry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``tile`` pixels every ``step = tile - overlap`` pixels, anchored to the image.

    Tile ``k`` along an axis covers ``[origin + k * step, origin + k * step + tile)``. The grid depends
    only on the image size, never on chunking: that is what makes chunked inference seam-free.
    """

    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile <= 0:
            raise ValueError(f"tile must be > 0, got {self.tile}")
        if not 0 <= 2 * self.overlap <= self.tile:
            raise ValueError(
                f"overlap must be in [0, tile/2] so blending ramps of one tile do not cross, got overlap="
                f"{self.overlap} for tile={self.tile}"
            )

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def origin(self) -> int:
        return -(self.overlap // 2)

    def start(self, k: int) -> int:
        return self.origin + k * self.step

    def count(self, n: int) -> int:
        """Number of tiles needed to cover an axis of ``n`` pixels (the last one may overhang)."""
        return max(1, math.ceil((n - self.origin - self.tile) / self.step) + 1)

    def owned(self, a: int, b: int, n: int) -> range:
        """Tiles whose first in-image pixel ``max(start, 0)`` lies in ``[a, b)``: each tile has one owner."""
        ks = [k for k in self._candidates(a, b, n) if a <= max(self.start(k), 0) < b]
        return range(ks[0], ks[-1] + 1) if ks else range(0)

    def _candidates(self, a: int, b: int, n: int) -> range:
        lo = max(0, (a - self.origin) // self.step - 1)
        hi = min(self.count(n), (b - self.origin) // self.step + 2)
        return range(lo, max(lo, hi))


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights: raised-cosine ramps over ``overlap`` pixels at both ends, 1 inside.

    The rising ramp of one tile and the falling ramp of its neighbour (which overlap by exactly
    ``overlap`` pixels) sum to one; every weight is > 0 so every covered pixel is defined.
    """
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / overlap)
        w[:overlap] = ramp
        w[tile - overlap :] = ramp[::-1]
    return w.astype(np.float32)


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Source index of each (possibly out-of-image) global index under mirror reflection (numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


# --------------------------------------------------------------------------------------------------
# Model handling: one device copy per process, keyed by the weights
# --------------------------------------------------------------------------------------------------
def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's class name and state dict (names, dtypes, shapes, bytes).

    Used as the per-process cache key of device copies and recordable as provenance.
    """
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _model_key(model: torch.nn.Module, weights_key: str | None = None) -> str:
    """Cache key of a model: its weights plus its configuration and simple attributes.

    Two models with equal weights but a different configuration (or behaviour flags) must not share
    a cached device copy.
    """
    config = getattr(model, "config", None)
    dump = getattr(config, "model_dump_json", None)
    config_repr = dump() if callable(dump) else repr(config)
    simple = sorted(
        (k, repr(v))
        for k, v in vars(model).items()
        if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, type(None), tuple))
    )
    h = hashlib.sha256((weights_key or weights_sha256(model)).encode())
    h.update(config_repr.encode())
    h.update(repr(simple).encode())
    return h.hexdigest()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: tile groups are cut into tasks of at most this many batches (see :func:`_chunk_plans`)
GROUP_BATCHES = 2

#: name prefix of the tile-group tasks (the network runs): what block-wise writers carry between blocks
TILE_GROUP_PREFIX = "cloudlulc-tiles-"

#: name prefix of the input chunks the tile groups read: a block-wise writer carries those that the
#: next block needs too (the chunks just past a block's edge), so no chunk is read from COGs twice
INPUT_PREFIX = "cloudlulc-input-"

#: the autocast dtype of CUDA forwards. float16 rather than bfloat16: the demo weights' softmax moves
#: 10x less under it (``tests/test_inference.py::test_amp_dtype_keeps_the_demo_weights_predictions``)
AMP_DTYPE = torch.float16

_CACHE_LOCK = threading.Lock()
_DEVICE_MODELS: OrderedDict[tuple[str, str], torch.nn.Module] = OrderedDict()
_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_MAX_CACHED_MODELS = 4


class _ModelHandle:
    """A picklable reference to a model that resolves to a cached per-process, per-device copy.

    It enters the Dask graph once (a single key), so a distributed worker receives the weights once
    and every task on it reuses the same device copy.
    """

    def __init__(self, model: torch.nn.Module, weights_key: str | None = None) -> None:
        self.model = model
        self.weights_key = weights_key or weights_sha256(model)
        self.key = _model_key(model, self.weights_key)

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("cloudlulc-model", self.key)

    def on(self, device: torch.device) -> torch.nn.Module:
        cache_key = (self.key, str(device))
        with _CACHE_LOCK:
            cached = _DEVICE_MODELS.get(cache_key)
            if cached is not None:
                _DEVICE_MODELS.move_to_end(cache_key)
                return cached
            # A private copy: never move the caller's model or flip its train/eval mode.
            m = copy.deepcopy(self.model).to(device).eval()
            _DEVICE_MODELS[cache_key] = m
            while len(_DEVICE_MODELS) > _MAX_CACHED_MODELS:
                _DEVICE_MODELS.popitem(last=False)
            return m


def share_cores_between_forwards(device: str | torch.device = "auto") -> int | None:
    """Cap torch's intra-op threads so that the threaded scheduler's concurrent CPU forwards fit the
    cores: ``cores // Dask threads``, never raising what is set. Returns the thread count, or None
    where nothing applies (a GPU here, or a distributed client, whose worker processes Dask's nanny
    already starts with ``OMP_NUM_THREADS=1``).

    Why: torch sizes its pool to all cores, and every Dask thread's forward would use it, so 2
    threads on 2 cores ran 4 compute threads. The pipeline then ran 0.94-0.99 M px/s, against
    1.09-1.14 M px/s with one torch thread per Dask thread (``benchmarks/inference.py``, tiny
    network).
    """
    import dask.threaded
    from dask.system import CPU_COUNT

    scheduler = dask.base.get_scheduler()  # None: nothing configured, so arrays use the threaded one
    if resolve_device(device).type != "cpu" or scheduler not in (None, dask.threaded.get):
        return None
    workers = dask.config.get("num_workers", None) or CPU_COUNT
    threads = min(torch.get_num_threads(), max(1, CPU_COUNT // workers))
    if threads != torch.get_num_threads():
        log.info(
            "torch intra-op threads %d -> %d: %d Dask threads share %d cores",
            torch.get_num_threads(),
            threads,
            workers,
            CPU_COUNT,
        )
        torch.set_num_threads(threads)
    return threads


def _device_lock(device: torch.device) -> threading.Lock | None:
    """One forward at a time per GPU in a process (threads would only contend for memory)."""
    if device.type == "cpu":
        return None
    with _CACHE_LOCK:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())


def _fill_values(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Per-band fill values for NaN inputs: the model's normalisation means (zeros after normalising)."""
    config = getattr(model, "config", None)
    opt = getattr(config, "optical_mean", None)
    sar = getattr(config, "sar_mean", None)
    opt_arr = np.asarray(opt, dtype=np.float32) if opt is not None else np.zeros(len(S2_BANDS), np.float32)
    sar_arr = np.asarray(sar, dtype=np.float32) if sar is not None else np.zeros(len(S1_BANDS), np.float32)
    return opt_arr, sar_arr


def _model_stride(model: torch.nn.Module) -> int:
    return int(getattr(model, "stride", 1) or 1)


def _forward(
    model: torch.nn.Module, optical: np.ndarray, sar: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run one batch; returns softmax probabilities [B,C,T,T] and reliability [B,T,T] (or None)."""
    o = torch.from_numpy(optical)
    s = torch.from_numpy(sar)
    lock = _device_lock(device)
    with torch.inference_mode():
        if device.type == "cuda":
            o = o.pin_memory().to(device, non_blocking=True)
            s = s.pin_memory().to(device, non_blocking=True)
            assert lock is not None
            with lock, torch.autocast("cuda", dtype=AMP_DTYPE):
                out = model(o, s)
                probs = torch.softmax(out.logits.float(), dim=1).cpu().numpy()
                rel = None if out.reliability is None else out.reliability.float()[:, 0].cpu().numpy()
        else:
            o, s = o.to(device), s.to(device)
            out = model(o, s)
            probs = torch.softmax(out.logits.float(), dim=1).cpu().numpy()
            rel = None if out.reliability is None else out.reliability.float()[:, 0].cpu().numpy()
    if probs.shape[-2:] != optical.shape[-2:]:
        raise ValueError(
            f"model returned logits of spatial size {probs.shape[-2:]} for input {optical.shape[-2:]}; the "
            "inference contract needs logits at input resolution"
        )
    return probs, rel


# --------------------------------------------------------------------------------------------------
# The two task kinds
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _GroupPlan:
    """Static geometry of one group task (all indices global, in pixels)."""

    chunk: tuple[int, int, int, int]  # y0, y1, x0, x1 of the output chunk the group belongs to
    tiles_y: tuple[int, ...]  # tile starts (may be < 0 or overhang the image)
    tiles_x: tuple[int, ...]
    window: tuple[int, int, int, int]  # gy0, gy1, gx0, gx1: padded window covering the tiles
    read: tuple[int, int, int, int]  # r0, r1, c0, c1: the in-image rows/cols to read (window, and chunk)
    extent: tuple[int, int, int, int]  # in-image footprint of the group's tiles ((0,0,0,0) if none)
    with_valid: bool = True  # the task also returns the chunk's validity mask (so it reads the chunk)


def _plan_group(
    grid: TileGrid,
    chunk: tuple[int, int, int, int],
    shape: tuple[int, int],
    tiles_y: tuple[int, ...] | None = None,
    tiles_x: tuple[int, ...] | None = None,
    with_valid: bool = True,
) -> _GroupPlan:
    """Geometry of a group running tiles ``tiles_y x tiles_x`` (default: all tiles ``chunk`` owns)."""
    h, w = shape
    y0, y1, x0, x1 = chunk
    ty = tuple(grid.start(k) for k in grid.owned(y0, y1, h)) if tiles_y is None else tuple(tiles_y)
    tx = tuple(grid.start(k) for k in grid.owned(x0, x1, w)) if tiles_x is None else tuple(tiles_x)
    if ty and tx:
        gy0, gy1 = ty[0], ty[-1] + grid.tile
        gx0, gx1 = tx[0], tx[-1] + grid.tile
        extent = (max(ty[0], 0), min(ty[-1] + grid.tile, h), max(tx[0], 0), min(tx[-1] + grid.tile, w))
        ys = _reflect_index(np.arange(gy0, gy1), h)
        xs = _reflect_index(np.arange(gx0, gx1), w)
        read = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    else:
        if not with_valid:
            raise ValueError("a group without tiles must at least report its chunk's validity")
        ty, tx = (), ()
        gy0, gy1, gx0, gx1 = y0, y0, x0, x0
        extent = (0, 0, 0, 0)
        read = chunk
    if with_valid:  # the validity mask is taken from the chunk's own inputs, not from a gathered copy
        read = (min(read[0], y0), max(read[1], y1), min(read[2], x0), max(read[3], x1))
    return _GroupPlan(chunk, ty, tx, (gy0, gy1, gx0, gx1), read, extent, with_valid)


def _by_reach(grid: TileGrid, starts: tuple[int, ...], chunk_starts: np.ndarray, n: int) -> list[tuple[int, ...]]:
    """Split tile starts along one axis by the chunk holding the tile's last in-image pixel.

    Tiles owned by a chunk either end inside it or reach into the next chunk(s). Keeping those
    classes in separate tasks lets a block of chunks recompute only the neighbour tiles that reach
    into it (see :func:`_chunk_plans`), never a neighbour's interior tiles.
    """
    classes: dict[int, list[int]] = {}
    for s in starts:
        last = min(s + grid.tile, n) - 1
        classes.setdefault(int(np.searchsorted(chunk_starts, last, "right")) - 1, []).append(s)
    return [tuple(classes[k]) for k in sorted(classes)]


def _chunk_plans(
    grid: TileGrid,
    chunk: tuple[int, int, int, int],
    shape: tuple[int, int],
    ystarts: np.ndarray,
    xstarts: np.ndarray,
    max_tiles: int | None = None,
) -> list[_GroupPlan]:
    """The group tasks of one chunk: its owned tiles split by the chunk row x column they reach.

    The first plan also carries the chunk's validity mask. Typically (tile <= chunk) there are four:
    tiles ending in the chunk, reaching down, reaching right, reaching down-right. With
    ``max_tiles``, a group holding more tiles is cut into bands of tile rows of at most that many
    tiles: several workers share a large chunk (a one-chunk AOI keeps them all busy) and no single
    long task leaves the others idle at the end of a block. The cut never changes which blocks
    need a tile (all tiles of a group reach the same chunks).
    """
    h, w = shape
    y0, y1, x0, x1 = chunk
    ty = tuple(grid.start(k) for k in grid.owned(y0, y1, h))
    tx = tuple(grid.start(k) for k in grid.owned(x0, x1, w))
    if not (ty and tx):
        return [_plan_group(grid, chunk, shape, (), (), with_valid=True)]
    plans = []
    for a, cy in enumerate(_by_reach(grid, ty, ystarts, h)):
        for b, cx in enumerate(_by_reach(grid, tx, xstarts, w)):
            rows = len(cy) if max_tiles is None else max(1, max_tiles // len(cx))
            for r in range(0, len(cy), rows):
                plans.append(
                    _plan_group(grid, chunk, shape, cy[r : r + rows], cx, with_valid=(a == 0 and b == 0 and r == 0))
                )
    return plans


def _run_group(
    optical: np.ndarray,
    sar: np.ndarray,
    plan: _GroupPlan,
    shape: tuple[int, int],
    handle: _ModelHandle,
    grid: TileGrid,
    batch_size: int,
    device: str,
) -> np.ndarray | None:
    """Run the group's tiles over its padded window (``optical``/``sar`` cover ``plan.window``, owned
    by this call: NaN are filled in place). Returns the weighted sums over ``plan.extent`` as
    [C+2, h, w] = C probability sums, reliability sum, weight sum (None when every tile was skipped)."""
    h, w = shape
    gy0, gy1, gx0, gx1 = plan.window
    opt, sr = optical, sar

    data = _has_data(opt, sr)
    t = grid.tile
    # A tile whose in-image footprint is all nodata only ever contributes to nodata pixels: skip it
    # (a decision made from global data, so chunked and one-shot runs skip the same tiles).
    starts = [
        (sy, sx)
        for sy in plan.tiles_y
        for sx in plan.tiles_x
        if data[max(sy, 0) - gy0 : min(sy + t, h) - gy0, max(sx, 0) - gx0 : min(sx + t, w) - gx0].any()
    ]
    if not starts:
        return None

    dev = resolve_device(device)
    model = handle.on(dev)
    opt_fill, sar_fill = _fill_values(model)
    bad = np.empty(opt.shape[1:], dtype=bool)
    for arr, fill in ((opt, opt_fill), (sr, sar_fill)):
        for b in range(arr.shape[0]):  # band by band into one mask: no window-sized temporaries
            np.logical_not(np.isfinite(arr[b], out=bad), out=bad)
            if bad.any():
                np.copyto(arr[b], fill[b], where=bad)

    ey0, ey1, ex0, ex1 = plan.extent
    win = blend_window(t, grid.overlap)
    weight2d = np.outer(win, win)
    acc: np.ndarray | None = None
    has_rel = True
    for b in range(0, len(starts), batch_size):
        batch = starts[b : b + batch_size]
        ob = np.stack([opt[:, sy - gy0 : sy - gy0 + t, sx - gx0 : sx - gx0 + t] for sy, sx in batch])
        sb = np.stack([sr[:, sy - gy0 : sy - gy0 + t, sx - gx0 : sx - gx0 + t] for sy, sx in batch])
        probs, rel = _forward(model, np.ascontiguousarray(ob), np.ascontiguousarray(sb), dev)
        if acc is None:
            acc = np.zeros((probs.shape[1] + 2, ey1 - ey0, ex1 - ex0), dtype=np.float32)
        has_rel = has_rel and rel is not None
        for i, (sy, sx) in enumerate(batch):
            # intersection of the tile with the in-image extent
            ay0, ay1 = max(sy, ey0), min(sy + t, ey1)
            ax0, ax1 = max(sx, ex0), min(sx + t, ex1)
            tsl = (slice(ay0 - sy, ay1 - sy), slice(ax0 - sx, ax1 - sx))
            asl = (slice(ay0 - ey0, ay1 - ey0), slice(ax0 - ex0, ax1 - ex0))
            wt = weight2d[tsl]
            p = probs[i][(slice(None),) + tsl]
            acc[(slice(0, -2),) + asl] += np.multiply(p, wt, out=p)  # probs is ours: weight in place
            if rel is not None:
                r = rel[i][tsl]
                acc[(-2,) + asl] += np.multiply(r, wt, out=r)
            acc[(-1,) + asl] += wt
    assert acc is not None
    if not has_rel:
        acc[-2] = np.nan  # marks "model has no reliability output" for the combine step
    return acc


def _has_data(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
    """Pixels with some optical or SAR value: the others are nodata in every product."""
    return ~(np.isnan(optical).all(axis=0) & np.isnan(sar).all(axis=0))


def _chunk_validity(
    optical_blocks: list[list[np.ndarray]],
    sar_blocks: list[list[np.ndarray]],
    origins: tuple[list[int], list[int]],
    chunk: tuple[int, int, int, int],
) -> np.ndarray:
    """The chunk's :func:`_has_data` mask, computed on the input pieces where they overlap it."""
    y0, y1, x0, x1 = chunk
    valid = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for orow, srow, by0 in zip(optical_blocks, sar_blocks, origins[0]):
        for ob, sb, bx0 in zip(orow, srow, origins[1]):
            ay0, ay1 = max(y0, by0), min(y1, by0 + ob.shape[1])
            ax0, ax1 = max(x0, bx0), min(x1, bx0 + ob.shape[2])
            if ay0 < ay1 and ax0 < ax1:
                sl = (slice(None), slice(ay0 - by0, ay1 - by0), slice(ax0 - bx0, ax1 - bx0))
                valid[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = _has_data(ob[sl], sb[sl])
    return valid


def _combine(
    chunk: tuple[int, int, int, int],
    group: tuple[np.ndarray | None, np.ndarray],
    parts: list[tuple[tuple[np.ndarray | None, np.ndarray], tuple[int, int, int, int]]],
    with_probabilities: bool = False,
) -> np.ndarray:
    """Sum the footprints touching ``chunk`` (fixed order), normalise, and encode uint8 products
    [lulc, confidence, optical_reliability] (or float probabilities when asked, for one-shot use)."""
    y0, y1, x0, x1 = chunk
    _, valid = group
    total: np.ndarray | None = None
    for (acc, _), (ey0, ey1, ex0, ex1) in parts:
        if acc is None:
            continue
        if total is None:
            total = np.zeros((acc.shape[0], y1 - y0, x1 - x0), dtype=np.float32)
        ay0, ay1, ax0, ax1 = max(y0, ey0), min(y1, ey1), max(x0, ex0), min(x1, ex1)
        if ay0 >= ay1 or ax0 >= ax1:
            continue
        total[:, ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] += acc[:, ay0 - ey0 : ay1 - ey0, ax0 - ex0 : ax1 - ex0]
    if total is None:  # every tile touching the chunk was skipped as all-nodata
        if valid.any():
            raise RuntimeError(f"no tile covers valid pixels of chunk {chunk}: tile planning is inconsistent")
        shape = (1, y1 - y0, x1 - x0) if with_probabilities else (3, y1 - y0, x1 - x0)
        return np.full(
            shape, np.nan if with_probabilities else NODATA, dtype=np.float32 if with_probabilities else np.uint8
        )
    wsum = total[-1]
    covered = wsum > 0
    valid = valid & covered
    safe = np.where(covered, wsum, np.float32(1.0))
    if with_probabilities:
        return np.where(valid, total[:-2] / safe, np.nan).astype(np.float32)
    # the class and its probability from the weighted sums: dividing by the (positive) weight sum
    # does not change which class is largest, so only the winning sum is normalised
    lulc = np.argmax(total[:-2], axis=0).astype(np.uint8)
    conf = np.rint(np.max(total[:-2], axis=0) / safe * 100).clip(0, 100).astype(np.uint8)
    rel_raw = total[-2]
    if np.isnan(rel_raw).any():
        rel = np.full(lulc.shape, NODATA, np.uint8)
    else:
        rel = np.rint(rel_raw / safe * 100).clip(0, 100).astype(np.uint8)
    out = np.stack([lulc, conf, rel])
    out[:, ~valid] = NODATA
    return out


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def _chunk_bounds(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    edges = np.concatenate([[0], np.cumsum(chunks)]).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _effective_grid(model: torch.nn.Module, tile: int, overlap: int) -> TileGrid:
    stride = _model_stride(model)
    tile_eff = int(math.ceil(tile / stride) * stride)  # tiles must be multiples of the network stride
    return TileGrid(tile_eff, overlap)


def _as_bands(arr: xr.DataArray | None, bands: tuple[str, ...], like: xr.DataArray, name: str) -> da.Array:
    """A (band, y, x) float32 dask array in the contract band order (all-NaN when the layer is absent)."""
    if arr is None:
        ny, nx = like.sizes["y"], like.sizes["x"]
        chunks = like.chunks[-2:] if like.chunks else ((ny,), (nx,))
        return da.full((len(bands), ny, nx), np.nan, dtype=np.float32, chunks=((len(bands),),) + tuple(chunks))
    extra = [d for d in arr.dims if d not in ("y", "x")]
    if len(extra) != 1 or set(arr.dims) - {"y", "x", *extra}:
        raise ValueError(f"cube variable {name!r} must have dims (band, y, x), has {arr.dims}")
    band_dim = extra[0]
    if band_dim in arr.coords:
        names = [str(b) for b in arr[band_dim].values]
        if set(bands) - set(names):
            raise ValueError(f"cube variable {name!r} lacks bands {sorted(set(bands) - set(names))}; needs {bands}")
        if names != list(bands):  # selecting copies every chunk: only when the order differs
            arr = arr.sel({band_dim: list(bands)})
    if arr.sizes[band_dim] != len(bands):
        raise ValueError(f"cube variable {name!r} needs {len(bands)} bands {bands}, has {arr.sizes[band_dim]}")
    arr = arr.transpose(band_dim, "y", "x")
    data = arr.data if isinstance(arr.data, da.Array) else da.from_array(np.asarray(arr.values), chunks=-1)
    return data.astype(np.float32)


def _halo_strip(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A copy of a block's first ``rows`` x ``cols`` pixels: what the tiles of the chunks above and to
    the left read of it. Groups reading a neighbour's halo depend on this copy, not on the block, so
    the block is freed as soon as its own groups have run (in a block-wise write, the chunks just
    past the block's edge are read only for their strips)."""
    return block[:, :rows, :cols].copy()


def _window_refs(
    name: str,
    bounds_y: list[tuple[int, int]],
    bounds_x: list[tuple[int, int]],
    plan: _GroupPlan,
    halo: int,
    dsk: dict[Any, Any],
) -> tuple[list[list[tuple]], list[int], list[int]]:
    """Keys of the input pieces covering ``plan.read`` and their origins (one grid of pieces).

    A block outside the group's own chunk row (column) that is read only within its first ``halo``
    rows (columns), and is at least four times that deep, is referenced through a :func:`_halo_strip`
    task (added to ``dsk``); anything else through the whole block. Shallower blocks are not worth a
    copy: within a block of the write the strip would sit next to the whole chunk, which its own
    tiles still need (measured: no gain at 512 px chunks with 256 px tiles, -9 % peak RSS at 1024 px).
    """
    r0, r1, c0, c1 = plan.read
    oy0, _, ox0, _ = plan.chunk

    def pieces(bounds: list[tuple[int, int]], lo: int, hi: int, own: int) -> list[tuple[int, int]]:
        out = []
        for i, (a, b) in enumerate(bounds):
            if a < hi and b > lo:
                partial = a != own and lo <= a and hi <= a + halo and 4 * halo <= b - a
                out.append((i, halo if partial else b - a))
        return out

    rows, cols = pieces(bounds_y, r0, r1, oy0), pieces(bounds_x, c0, c1, ox0)
    keys = []
    for i, nr in rows:
        row = []
        for j, nc in cols:
            full = (name, 0, i, j)
            if (nr, nc) == (bounds_y[i][1] - bounds_y[i][0], bounds_x[j][1] - bounds_x[j][0]):
                row.append(full)
                continue
            key = (f"cloudlulc-halo-{name}", i, j, nr, nc)
            dsk.setdefault(key, (_halo_strip, full, nr, nc))
            row.append(key)
        keys.append(row)
    return keys, [bounds_y[i][0] for i, _ in rows], [bounds_x[j][0] for j, _ in cols]


def _runs(dst: np.ndarray, src: np.ndarray) -> list[tuple[slice, Any]]:
    """Split index pairs into slices where both advance by one (the common, non-reflected case)."""
    if dst.size == 0:
        return []
    breaks = np.nonzero((np.diff(dst) != 1) | (np.diff(src) != 1))[0] + 1
    starts = np.concatenate([[0], breaks]).astype(int)
    ends = np.concatenate([breaks, [dst.size]]).astype(int)
    return [
        (slice(int(dst[a]), int(dst[b - 1]) + 1), slice(int(src[a]), int(src[b - 1]) + 1)) for a, b in zip(starts, ends)
    ]


def _gather_window(
    blocks: list[list[np.ndarray]], origins_y: list[int], origins_x: list[int], ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """``out[:, a, b] = image[:, ys[a], xs[b]]`` assembled from the image's blocks in one allocation.

    ``ys``/``xs`` are the (reflected) source rows/columns of the padded window; contiguous runs are
    copied as slices, so only the reflected margins cost index arithmetic.
    """
    nb = blocks[0][0].shape[0]
    out = np.empty((nb, ys.size, xs.size), dtype=np.float32)
    pos_y, pos_x = np.arange(ys.size), np.arange(xs.size)
    for row, by0 in zip(blocks, origins_y):
        by1 = by0 + row[0].shape[1]
        in_y = (ys >= by0) & (ys < by1)
        if not in_y.any():
            continue
        runs_y = _runs(pos_y[in_y], ys[in_y] - by0)
        for block, bx0 in zip(row, origins_x):
            bx1 = bx0 + block.shape[2]
            in_x = (xs >= bx0) & (xs < bx1)
            if not in_x.any():
                continue
            runs_x = _runs(pos_x[in_x], xs[in_x] - bx0)
            for dy, sy in runs_y:
                for dx, sx in runs_x:
                    out[:, dy, dx] = block[:, sy, sx]
    return out


def _run_group_blocks(
    optical_blocks: list[list[np.ndarray]],
    sar_blocks: list[list[np.ndarray]],
    origins: tuple[list[int], list[int]],
    plan: _GroupPlan,
    shape: tuple[int, int],
    *args: Any,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gather the group's padded window from the input blocks, then :func:`_run_group`; the chunk's
    validity mask (``plan.with_valid``) comes straight from the blocks."""
    h, w = shape
    valid = _chunk_validity(optical_blocks, sar_blocks, origins, plan.chunk) if plan.with_valid else None
    if not plan.tiles_y:
        return None, valid
    gy0, gy1, gx0, gx1 = plan.window
    ys = _reflect_index(np.arange(gy0, gy1), h)
    xs = _reflect_index(np.arange(gx0, gx1), w)
    optical = _gather_window(optical_blocks, origins[0], origins[1], ys, xs)
    sar = _gather_window(sar_blocks, origins[0], origins[1], ys, xs)
    return _run_group(optical, sar, plan, shape, *args), valid


def _combine_keys(chunk: tuple[int, int, int, int], group: Any, parts: list[Any], extents: list[Any]) -> np.ndarray:
    return _combine(chunk, group, [(p, tuple(e)) for p, e in zip(parts, extents)])


def _same(block: np.ndarray) -> np.ndarray:
    return block


def _named_input(arr: da.Array, what: str) -> da.Array:
    """``arr`` under a name starting with :data:`INPUT_PREFIX` (fused with the read when Dask
    optimises, so it costs no task of its own)."""
    return arr.map_blocks(_same, name=f"{INPUT_PREFIX}{what}-{dask.base.tokenize(arr.name)}", dtype=arr.dtype)


def _products_graph(
    optical: da.Array, sar: da.Array, grid: TileGrid, handle: _ModelHandle, batch_size: int, device: str
) -> da.Array:
    """The (3, y, x) uint8 product array as an explicit two-stage graph (group tasks, combine tasks).

    Built as one low-level graph rather than per-chunk ``dask.delayed`` calls, so construction stays
    linear in the number of chunks.
    """
    from dask.highlevelgraph import HighLevelGraph

    optical = _named_input(optical.rechunk({0: -1}), "optical")
    sar = _named_input(sar.rechunk({0: -1}), "sar")
    h, w = optical.shape[1:]
    ybounds, xbounds = _chunk_bounds(optical.chunks[1]), _chunk_bounds(optical.chunks[2])
    token = dask.base.tokenize(optical, sar, grid, handle, batch_size, device)
    hname, gname, cname = f"cloudlulc-model-{token}", f"{TILE_GROUP_PREFIX}{token}", f"cloudlulc-products-{token}"
    dsk: dict[Any, Any] = {hname: handle}
    ystarts = np.array([a for a, _ in ybounds])
    xstarts = np.array([a for a, _ in xbounds])
    plans: dict[tuple[int, int, int], _GroupPlan] = {}
    for i, (y0, y1) in enumerate(ybounds):
        for j, (x0, x1) in enumerate(xbounds):
            for k, plan in enumerate(
                _chunk_plans(grid, (y0, y1, x0, x1), (h, w), ystarts, xstarts, max_tiles=GROUP_BATCHES * batch_size)
            ):
                plans[i, j, k] = plan
                okeys, oy, ox = _window_refs(optical.name, ybounds, xbounds, plan, grid.tile, dsk)
                skeys, _, _ = _window_refs(sar.name, ybounds, xbounds, plan, grid.tile, dsk)
                dsk[(gname, i, j, k)] = (
                    _run_group_blocks,
                    okeys,
                    skeys,
                    [oy, ox],
                    plan,
                    [h, w],
                    hname,
                    grid,
                    batch_size,
                    device,
                )

    # which groups' footprints touch which chunks (linear: search the chunk edges per footprint)
    touching: dict[tuple[int, int], list[tuple[int, int, int]]] = {
        (i, j): [] for i in range(len(ybounds)) for j in range(len(xbounds))
    }
    for key in sorted(plans):
        ey0, ey1, ex0, ex1 = plans[key].extent
        if ey1 <= ey0 or ex1 <= ex0:
            continue
        for i in range(int(np.searchsorted(ystarts, ey0, "right")) - 1, int(np.searchsorted(ystarts, ey1, "left"))):
            for j in range(int(np.searchsorted(xstarts, ex0, "right")) - 1, int(np.searchsorted(xstarts, ex1, "left"))):
                touching[i, j].append(key)
    for (i, j), keys in touching.items():
        y0, y1 = ybounds[i]
        x0, x1 = xbounds[j]
        dsk[(cname, 0, i, j)] = (
            _combine_keys,
            (y0, y1, x0, x1),
            (gname, i, j, 0),  # the chunk's first group carries its validity mask
            [(gname, *key) for key in keys],
            [list(plans[key].extent) for key in keys],
        )
    graph = HighLevelGraph.from_collections(cname, dsk, dependencies=[optical, sar])
    return da.Array(graph, cname, chunks=((3,), optical.chunks[1], optical.chunks[2]), dtype=np.uint8)


def predict_cube(
    cube: xr.Dataset,
    model: torch.nn.Module,
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    halo: int | None = None,
) -> xr.Dataset:
    """Lazily classify a cube chunk by chunk; the result equals a one-shot run (see module docstring).

    Parameters
    ----------
    cube:
        Dataset per :func:`cloudlulc.cube.build_cube`: ``optical`` (band, y, x) reflectance and ``sar``
        (band, y, x) dB, float32 with NaN nodata; ``cloud`` (y, x) uint8 optional (passed through).
    model:
        ``model(optical[B,12,H,W], sar[B,2,H,W]) -> ModelOutput`` in physical units; ``model.stride``
        (default 1) is the divisibility requirement, ``model.config.optical_mean`` / ``sar_mean`` the
        fill values for NaN bands (zeros when absent).
    tile, overlap:
        Tile size (rounded up to a multiple of ``model.stride``) and blending overlap (<= tile/2).
    batch_size:
        Tiles per forward pass.
    device:
        ``"auto"`` (CUDA if available where the task runs, else CPU), ``"cpu"``, ``"cuda:0"``...
    halo:
        Context each chunk reads beyond its border. ``None`` = what the global tile grid needs (the
        tile size, one-sided). A smaller value is refused: it would cut tiles and create seams.

    Returns
    -------
    xr.Dataset with dask-backed uint8 ``lulc`` (classes, 255 nodata), ``confidence`` (0-100 top-class
    probability), ``optical_reliability`` (0-100; 255 where the model has no reliability output) and
    ``cloud`` (passthrough, 255 when the cube has none), on the cube's grid and (y, x) chunks.
    """
    if "optical" not in cube:
        raise ValueError("cube has no 'optical' variable; build it with cloudlulc.cube.build_cube")
    grid = _effective_grid(model, tile, overlap)
    if halo is not None and halo < grid.tile:
        raise ValueError(
            f"halo={halo} is smaller than the tile ({grid.tile}); chunks would not see every tile touching "
            "them and the mosaic would have seams. Leave halo=None."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    optical = _as_bands(cube["optical"], S2_BANDS, cube["optical"], "optical")
    sar = _as_bands(cube.get("sar"), S1_BANDS, cube["optical"], "sar")
    sar = sar.rechunk((sar.chunks[0],) + optical.chunks[1:])
    h, w = optical.shape[1:]
    ychunks, xchunks = optical.chunks[1], optical.chunks[2]

    share_cores_between_forwards(device)  # before any forward: the setting is process-wide
    model_handle = _ModelHandle(model)
    products = _products_graph(optical, sar, grid, model_handle, batch_size, str(device))
    device_arg = str(device)

    coords = {k: v for k, v in cube["optical"].coords.items() if set(v.dims) <= {"y", "x"}}
    dims = ("y", "x")
    out = xr.Dataset(coords=coords)
    attrs_common = {"nodata": NODATA}
    out["lulc"] = xr.DataArray(
        products[0],
        dims=dims,
        attrs={
            **attrs_common,
            "long_name": "land use / land cover class",
            "flag_values": [c.value for c in CLASSES],
            "flag_meanings": " ".join(n.replace("-", "_") for n in CLASS_NAMES),
        },
    )
    out["confidence"] = xr.DataArray(
        products[1], dims=dims, attrs={**attrs_common, "long_name": "top-class probability", "units": "percent"}
    )
    out["optical_reliability"] = xr.DataArray(
        products[2],
        dims=dims,
        attrs={**attrs_common, "long_name": "optical reliability estimated by the model", "units": "percent"},
    )
    if "cloud" in cube:
        cloud = cube["cloud"].transpose("y", "x")
        cdata = cloud.data if isinstance(cloud.data, da.Array) else da.from_array(np.asarray(cloud.values))
        cdata = cdata.astype(np.uint8).rechunk((ychunks, xchunks))
    else:
        cdata = da.full((h, w), NODATA, dtype=np.uint8, chunks=(ychunks, xchunks))
    out["cloud"] = xr.DataArray(
        cdata, dims=dims, attrs={**attrs_common, "long_name": "cloud or shadow from SCL", "flag_values": [0, 1]}
    )
    if "spatial_ref" in cube.coords:
        out = out.assign_coords(spatial_ref=cube["spatial_ref"])
        for v in out.data_vars:
            out[v].attrs["grid_mapping"] = "spatial_ref"
    out.attrs = dict(cube.attrs)
    out.attrs["inference"] = {
        "tile": grid.tile,
        "overlap": grid.overlap,
        "batch_size": batch_size,
        "device": device_arg,
        "model": getattr(getattr(model, "config", None), "name", type(model).__name__),
        # sha256 of the state dict (the weights *file* sha256 is the caller's provenance to add)
        "state_dict_sha256": model_handle.weights_key,
    }
    return out


def predict_arrays(
    optical: np.ndarray,
    sar: np.ndarray | None,
    model: torch.nn.Module,
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    return_probabilities: bool = False,
) -> dict[str, np.ndarray]:
    """One-shot inference on in-memory arrays with the same tiling and blending as :func:`predict_cube`.

    The whole image is one group: this is the reference the chunked run must reproduce, and a
    convenience for small scenes. Returns ``lulc``, ``confidence``, ``optical_reliability`` (uint8)
    and, when asked, ``probabilities`` (float32 [C, H, W], NaN over nodata).
    """
    optical = np.asarray(optical, dtype=np.float32)
    h, w = optical.shape[1:]
    if sar is None:
        sar = np.full((len(S1_BANDS), h, w), np.nan, np.float32)
    sar = np.asarray(sar, dtype=np.float32)
    grid = _effective_grid(model, tile, overlap)
    handle = _ModelHandle(model)
    chunk = (0, h, 0, w)
    plan = _plan_group(grid, chunk, (h, w))
    group = _run_group_blocks([[optical]], [[sar]], ([0], [0]), plan, (h, w), handle, grid, batch_size, str(device))
    parts = [(group, plan.extent)]
    products = _combine(chunk, group, parts)
    result = {"lulc": products[0], "confidence": products[1], "optical_reliability": products[2]}
    if return_probabilities:
        result["probabilities"] = _combine(chunk, group, parts, with_probabilities=True)
    return result
