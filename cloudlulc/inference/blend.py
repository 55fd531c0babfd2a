"""Run a group of tiles through the network and blend their probabilities into uint8 products.

A group task returns weighted sums (class probabilities, reliability, weight) over its tiles'
footprint; a combine task adds the footprints touching one output chunk (fixed order), normalises,
and encodes ``lulc``, ``confidence`` and ``optical_reliability``. Blending is a weighted average of
softmax probabilities with raised-cosine ramps over the overlap (:func:`~cloudlulc.inference.tiles.blend_window`).
"""

from __future__ import annotations

import numpy as np
import torch

from cloudlulc.classes import NODATA, NUM_CLASSES
from cloudlulc.inference.device import AMP_DTYPE, ModelHandle, device_lock, resolve_device
from cloudlulc.inference.tiles import GroupPlan, TileGrid, blend_window
from cloudlulc.model.calibration import calibration_of, scale_logits
from cloudlulc.model.inputs import fill_nan_inplace, fill_values


def _forward(
    model: torch.nn.Module,
    optical: np.ndarray,
    sar: np.ndarray,
    device: torch.device,
    optical_missing: np.ndarray | None = None,
    sar_missing: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run one batch; returns calibrated softmax probabilities [B,C,T,T] and reliability [B,T,T] (or
    None). ``optical_missing`` [B,T,T] marks pixels without optical data: their reliability is 0 and
    their logits take the calibration's own temperature (:mod:`cloudlulc.model.calibration`), as do
    those of ``sar_missing`` pixels (no radar)."""
    o = torch.from_numpy(optical)
    s = torch.from_numpy(sar)
    missing = None if optical_missing is None else torch.from_numpy(optical_missing)
    no_sar = None if sar_missing is None else torch.from_numpy(sar_missing)
    calibration = calibration_of(model)
    lock = device_lock(device)
    with torch.inference_mode():
        if device.type == "cuda":
            o = o.pin_memory().to(device, non_blocking=True)
            s = s.pin_memory().to(device, non_blocking=True)
            assert lock is not None
            with lock, torch.autocast("cuda", dtype=AMP_DTYPE):
                out = model(o, s)
                logits = scale_logits(out.logits.float(), calibration, missing, no_sar)
                probs = torch.softmax(logits, dim=1).cpu().numpy()
                rel = None if out.reliability is None else out.reliability.float()[:, 0].cpu().numpy()
        else:
            o, s = o.to(device), s.to(device)
            out = model(o, s)
            probs = torch.softmax(scale_logits(out.logits.float(), calibration, missing, no_sar), dim=1).cpu().numpy()
            rel = None if out.reliability is None else out.reliability.float()[:, 0].cpu().numpy()
    if rel is not None and optical_missing is not None:
        rel[optical_missing] = 0.0  # no optical observation: nothing optical to rely on
    if probs.shape[-2:] != optical.shape[-2:]:
        raise ValueError(
            f"model returned logits of spatial size {probs.shape[-2:]} for input {optical.shape[-2:]}; the "
            "inference contract needs logits at input resolution"
        )
    return probs, rel


def _run_group(
    optical: np.ndarray,
    sar: np.ndarray,
    plan: GroupPlan,
    shape: tuple[int, int],
    handle: ModelHandle,
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

    optical_missing = np.isnan(opt).all(axis=0)
    sar_missing = np.isnan(sr).all(axis=0)
    data = ~(optical_missing & sar_missing)  # as _has_data
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
    opt_fill, sar_fill = fill_values(model)
    fill_nan_inplace(opt, opt_fill)
    fill_nan_inplace(sr, sar_fill)

    ey0, ey1, ex0, ex1 = plan.extent
    win = blend_window(t, grid.overlap)
    weight2d = np.outer(win, win)
    acc: np.ndarray | None = None
    has_rel = True

    def tiles(a: np.ndarray, batch: list[tuple[int, int]]) -> np.ndarray:
        """The tiles of ``a`` (..., y, x) starting at ``batch``'s corners, stacked (a new, contiguous array)."""
        return np.stack([a[..., sy - gy0 : sy - gy0 + t, sx - gx0 : sx - gx0 + t] for sy, sx in batch])

    for b in range(0, len(starts), batch_size):
        batch = starts[b : b + batch_size]
        probs, rel = _forward(
            model, tiles(opt, batch), tiles(sr, batch), dev, tiles(optical_missing, batch), tiles(sar_missing, batch)
        )
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
    group: tuple[np.ndarray | None, np.ndarray | None],
    parts: list[tuple[tuple[np.ndarray | None, np.ndarray | None], tuple[int, int, int, int]]],
    with_probabilities: bool = False,
    class_percent: bool = False,
) -> np.ndarray:
    """Sum the footprints touching ``chunk`` (fixed order), normalise, and encode uint8 products
    [lulc, confidence, optical_reliability] followed, with ``class_percent``, by each class's
    probability in percent (or float probabilities when asked, for one-shot use)."""
    y0, y1, x0, x1 = chunk
    _, valid = group
    assert valid is not None, "the chunk's first group carries its validity mask"
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
        n_layers = 3 + (NUM_CLASSES if class_percent else 0)
        shape = (1, y1 - y0, x1 - x0) if with_probabilities else (n_layers, y1 - y0, x1 - x0)
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
    layers: list[np.ndarray] = [lulc, conf, rel]
    if class_percent:
        layers += list(np.rint(total[:-2] / safe * 100).clip(0, 100).astype(np.uint8))
    out = np.stack(layers)
    out[:, ~valid] = NODATA
    return out
