"""Computing a chunked array block by block without recomputing what neighbouring blocks share.

Why
---
:func:`cloudlulc.mosaic.write_mosaic` computes a slice in square blocks of chunks, one
``dask.compute`` per block, so that memory is bounded by the block and not by the AOI. With
:func:`cloudlulc.inference.predict_cube` a block also needs the tile groups of its neighbours whose
tiles reach into it; computed per block, those groups would run the network once per block they
touch (about +20 % compute on large AOIs) and hold the neighbours' input chunks in memory.

Here each shared *expensive* task (keys whose name starts with given prefixes: the tile groups,
and the input chunks a block reads for its neighbours' halo) runs once, in the first block that
needs it; its result goes to a scratch directory on disk and later blocks load it instead of
recomputing (or re-reading) it. Memory stays bounded by the block (the carried results wait on disk,
not in RAM); disk use is a strip of tile sums and input chunks along block borders, deleted as soon
as the last block using it is done.

Carrying needs workers that see the scratch directory: the local schedulers (threads, sync,
processes) and a ``distributed`` cluster whose workers all run on this host. Anywhere else the blocks
are computed independently, recomputing shared tasks as before (same results either way).
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

try:  # dask's task objects (GraphNode.substitute): private API, so carrying degrades to recomputing
    from dask._task_spec import convert_legacy_graph
except ImportError:  # pragma: no cover - a dask without it
    convert_legacy_graph = None

__all__ = ["carry_supported", "compute_blocks"]

_LOCAL_HOSTS = ("inproc://", "tcp://127.0.0.1:", "tcp://localhost:", "tls://127.0.0.1:", "ucx://127.0.0.1:")


def carry_supported() -> bool:
    """Whether the current Dask scheduler runs every task on this host (so a scratch dir is shared)."""
    if convert_legacy_graph is None:
        return False
    get = dask.base.get_scheduler()
    if get is None:
        return True  # dask's default for arrays: the local threaded scheduler
    client = getattr(get, "__self__", None)
    if client is None or not hasattr(client, "scheduler_info"):
        return str(getattr(get, "__module__", "")).startswith("dask.")  # threaded / sync / multiprocessing
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001 - a scheduler we cannot query: do not assume a shared disk
        return False
    return bool(workers) and all(str(addr).startswith(_LOCAL_HOSTS) for addr in workers)


def _store(value: np.ndarray | tuple[np.ndarray | None, ...], path: str) -> None:
    """Save a task result (an array, or a tuple of arrays or None) to ``path`` (.npz, no pickle)."""
    if isinstance(value, np.ndarray):
        np.savez(path, n=np.array(-1), a0=value)
        return
    np.savez(path, n=np.array(len(value)), **{f"a{i}": v for i, v in enumerate(value) if v is not None})


def _load(path: str) -> np.ndarray | tuple[np.ndarray | None, ...]:
    with np.load(path, allow_pickle=False) as z:
        n = int(z["n"])
        return z["a0"] if n < 0 else tuple(z.get(f"a{i}") for i in range(n))


def _done(_: Sequence[Any]) -> None:
    """The one sink of a block's graph: its writes (and stores) have run."""


def compute_blocks(
    target: da.Array,
    blocks: Sequence[Sequence[tuple[int, int]]],
    task_for: Callable[[tuple[int, int], Hashable], tuple],
    *,
    carry_prefix: str | tuple[str, ...] | None,
    carry: bool = True,
) -> None:
    """Compute ``task_for(chunk, input_key)`` for every chunk, one block of chunks per ``dask.compute``.

    ``target`` is a (band, y, x) array with one chunk along its first axis; ``blocks`` lists the
    (row, col) chunk indices of each block in run order; ``task_for`` returns the task (a Dask tuple)
    that consumes the target chunk ``input_key`` (a side-effecting write, say). Tasks whose key name
    starts with ``carry_prefix`` (one prefix or a tuple) and that more than one block needs are computed once and carried
    between blocks on disk (see the module docstring); ``carry=False`` or an unsupported scheduler
    computes each block on its own.
    """
    token = dask.base.tokenize(target, [list(b) for b in blocks])
    name = f"cloudlulc-block-{token}"

    def block_tasks(b: int, block: Sequence[tuple[int, int]]) -> dict[Hashable, Any]:
        return {(name, b, bi, bj): task_for((bi, bj), (target.name, 0, bi, bj)) for bi, bj in block}

    if not (carry and carry_prefix and len(blocks) > 1 and carry_supported()):
        for b, block in enumerate(blocks):
            tasks = block_tasks(b, block)
            tasks[(name, b)] = (_done, list(tasks))
            graph = HighLevelGraph.from_collections((name, b), tasks, dependencies=[target])
            dask.compute(Delayed((name, b), graph))
        return

    (optimized,) = dask.optimize(target)
    writes = [block_tasks(b, block) for b, block in enumerate(blocks)]
    full = convert_legacy_graph({**dict(optimized.__dask_graph__()), **{k: v for t in writes for k, v in t.items()}})
    per_block = [cull(full, list(tasks))[0] for tasks in writes]  # each block's own graph, once
    needs = [{k for k in graph if _is_carried(k, carry_prefix)} for graph in per_block]
    del full
    first: dict[Hashable, int] = {}
    last: dict[Hashable, int] = {}
    for b, keys in enumerate(needs):
        for k in keys:
            first.setdefault(k, b)
            last[k] = b
    shared = {k for k in first if last[k] > first[k]}

    scratch = Path(tempfile.mkdtemp(prefix="cloudlulc-carry-"))
    ids = {k: i for i, k in enumerate(sorted(shared, key=str))}
    paths = {k: str(scratch / f"{i}.npz") for k, i in ids.items()}
    try:
        for b, tasks in enumerate(writes):
            # loaded results get keys of their own: a distributed scheduler must never see one key
            # with two different tasks (the group's, then the load's) across computes
            shared_here = needs[b] & shared
            loaded = {k: (f"{name}-carried", ids[k]) for k in shared_here if first[k] < b}
            stores = {(f"{name}-store", ids[k]): (_store, k, paths[k]) for k in shared_here if first[k] == b}
            out = (name, b)
            extra: dict[Hashable, Any] = {out: (_done, list(tasks) + list(stores)), **stores}
            extra.update({nk: (_load, paths[k]) for k, nk in loaded.items()})
            graph = dict(per_block[b])
            per_block[b] = {}  # done with it: free as we go
            graph.update(convert_legacy_graph(extra, all_keys=set(graph) | set(extra)))
            for k in loaded:
                del graph[k]
            for key, node in graph.items():
                if node.dependencies & loaded.keys():
                    graph[key] = node.substitute(loaded)
            culled, _ = cull(graph, [out])  # drops what only the loaded groups needed
            dask.compute(Delayed(out, culled))
            for k in shared_here:
                if last[k] == b:
                    Path(paths[k]).unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _is_carried(key: Hashable, prefix: str | tuple[str, ...]) -> bool:
    head = key[0] if isinstance(key, tuple) and key else key
    return isinstance(head, str) and head.startswith(prefix)
