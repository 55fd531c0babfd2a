"""Compute a chunked array block by block, optionally carrying the work that neighbouring blocks share.

:func:`cloudlulc.store.writer.write_mosaic` computes a slice in square blocks of chunks, one
``dask.compute`` per block, so that memory is bounded by the block and not by the AOI. Chunked
inference makes neighbouring blocks share work: the tile groups reaching across a block border and
the input chunks read for their halo. Computed block by block, that work runs (and is read from
the COGs) once per block that needs it.

With ``shared`` (a predicate naming the expensive keys, :func:`cloudlulc.inference.is_shared_work`)
and a local scheduler, such a key is computed once, in the first block that needs it; its result is
stored in a scratch directory and later blocks load it instead of recomputing it. Memory stays
bounded by the block (the carried results wait on disk); the files are deleted after the last block
that uses them. Elsewhere (a distributed cluster, whose workers may not share this disk) every block
is computed on its own: same results, more work.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.optimization import cull

__all__ = ["carry_supported", "compute_blocks"]

Key = Hashable


def carry_supported() -> bool:
    """Whether the current Dask scheduler runs every task in this process or on this host (so a
    scratch directory is shared): the local threaded, synchronous and multiprocessing schedulers."""
    get = dask.base.get_scheduler()
    if get is None:
        return True  # dask's default for arrays: the local threaded scheduler
    return hasattr(get, "__module__") and str(get.__module__).startswith("dask.")


def _store(value: np.ndarray | tuple[np.ndarray | None, ...], path: str) -> None:
    """Save a task result (an array, or a tuple of arrays or None) as consecutive ``.npy`` records: a
    count, for a tuple which items are present, then the arrays. No pickle, no zip container."""
    with open(path, "wb") as f:
        if isinstance(value, np.ndarray):
            np.save(f, np.array(-1), allow_pickle=False)
            np.save(f, value, allow_pickle=False)
            return
        np.save(f, np.array(len(value)), allow_pickle=False)
        np.save(f, np.array([v is not None for v in value], dtype=bool), allow_pickle=False)
        for v in value:
            if v is not None:
                np.save(f, v, allow_pickle=False)


def _load(path: str) -> np.ndarray | tuple[np.ndarray | None, ...]:
    with open(path, "rb") as f:
        n = int(np.load(f, allow_pickle=False))
        if n < 0:
            return np.asarray(np.load(f, allow_pickle=False))
        present = np.load(f, allow_pickle=False)
        return tuple(np.load(f, allow_pickle=False) if p else None for p in present)


def _done(_: Sequence[Any]) -> None:
    """The one sink of a block's graph: its tasks (writes and stores) have run."""


def compute_blocks(
    target: da.Array,
    blocks: Sequence[Sequence[tuple[int, int]]],
    task_for: Callable[[tuple[int, int], Key], tuple[Any, ...]],
    *,
    shared: Callable[[Key], bool] | None = None,
    after_block: Callable[[list[Key]], None] | None = None,
) -> None:
    """Compute ``task_for(chunk, input_key)`` for every chunk, one block of chunks per compute.

    ``target`` is a (band, y, x) array with one chunk along its first axis; ``blocks`` lists the
    (row, col) chunk indices of each block in run order; ``task_for`` returns the task (a Dask tuple)
    that consumes the target chunk ``input_key`` (a side-effecting write, say). Keys for which
    ``shared`` is true and that more than one block needs are carried between blocks where the
    scheduler allows (module docstring); results are the same either way. ``after_block`` gets the
    keys of each block's ``task_for`` tasks once that block is computed.
    """
    token = dask.base.tokenize(target, [list(b) for b in blocks])
    name = f"cloudlulc-block-{token}"
    writes: list[dict[Any, Any]] = [
        {(name, b, bi, bj): task_for((bi, bj), (target.name, 0, bi, bj)) for bi, bj in block}
        for b, block in enumerate(blocks)
    ]
    if shared is None or len(blocks) < 2 or not carry_supported():
        for b, tasks in enumerate(writes):
            keys = list(tasks)
            tasks[(name, b)] = (_done, keys)
            # the layer is named by the sink's key, as Delayed requires
            graph = HighLevelGraph.from_collections((name, b), tasks, dependencies=[target])  # type: ignore[arg-type,list-item]
            dask.compute(Delayed((name, b), graph))
            if after_block is not None:
                after_block(keys)
        return

    (optimized,) = dask.optimize(target)
    full = {**dict(optimized.__dask_graph__()), **{k: v for t in writes for k, v in t.items()}}
    per_block = [cull(full, list(tasks))[0] for tasks in writes]  # each block's own graph
    del full
    needs: list[set[Key]] = [{k for k in graph if shared(k)} for graph in per_block]
    first: dict[Key, int] = {}
    last: dict[Key, int] = {}
    for b, needed in enumerate(needs):
        for k in needed:
            first.setdefault(k, b)
            last[k] = b
    carried = sorted((k for k in first if last[k] > first[k]), key=str)
    scratch = Path(tempfile.mkdtemp(prefix="cloudlulc-carry-"))
    paths = {k: str(scratch / f"{i}.npy") for i, k in enumerate(carried)}
    try:
        for b, tasks in enumerate(writes):
            graph = per_block[b]
            per_block[b] = {}
            here = needs[b] & paths.keys()
            stores = {(f"{name}-store", paths[k]): (_store, k, paths[k]) for k in here if first[k] == b}
            for k in here:
                if first[k] < b:
                    graph[k] = (_load, paths[k])  # a later block loads what an earlier one stored
            graph.update(stores)
            graph[(name, b)] = (_done, list(tasks) + list(stores))
            culled, _ = cull(graph, [(name, b)])  # drops what only the loaded results needed
            dask.compute(Delayed((name, b), culled))
            if after_block is not None:
                after_block(list(tasks))
            for k in here:
                if last[k] == b:
                    Path(paths[k]).unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
