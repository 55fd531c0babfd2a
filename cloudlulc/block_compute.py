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

On Dask's threaded scheduler (the pipeline's default) consecutive blocks overlap: the next block
starts as soon as the running one leaves a worker idle, so its reads fill the previous block's tail
(:class:`_OverlappingRunner`); a load then waits for the store it needs. Other schedulers run one
block after the other.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.optimization import cull
from dask.system import CPU_COUNT

try:  # dask's task objects (GraphNode.substitute): private API, so carrying degrades to recomputing
    from dask._task_spec import convert_legacy_graph
except ImportError:  # pragma: no cover - a dask without it
    convert_legacy_graph = None

__all__ = ["BlockAborted", "carry_supported", "compute_blocks"]

_LOCAL_HOSTS = ("inproc://", "tcp://127.0.0.1:", "tcp://localhost:", "tls://127.0.0.1:", "ucx://127.0.0.1:")


def _distributed_client() -> Any:
    """The ``distributed.Client`` Dask would compute on now, or None for a local scheduler."""
    client = getattr(dask.base.get_scheduler(), "__self__", None)
    return client if hasattr(client, "scheduler_info") else None


def carry_supported() -> bool:
    """Whether the current Dask scheduler runs every task on this host (so a scratch dir is shared)."""
    if convert_legacy_graph is None:
        return False
    get = dask.base.get_scheduler()
    if get is None:
        return True  # dask's default for arrays: the local threaded scheduler
    client = _distributed_client()
    if client is None:
        return str(getattr(get, "__module__", "")).startswith("dask.")  # threaded / sync / multiprocessing
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:
        return False
    return bool(workers) and all(str(addr).startswith(_LOCAL_HOSTS) for addr in workers)


def _annotated(array: da.Array) -> bool:
    """Whether any layer of the array's graph has annotations (task resources such as {"GPU": 1})."""
    return any(layer.annotations for layer in array.__dask_graph__().layers.values())


class BlockAborted(RuntimeError):
    """A block stopped because another block of the same run failed."""


class _CarryBoard:
    """Carried results on disk, with an event per result so that a block started before the
    previous one finished (threaded scheduler, see :class:`_OverlappingRunner`) waits for the stores
    it loads, or gives up once ``aborted`` (the runner's stop signal) is set: a failed block never
    stores, and the run waits for the loading block before it raises. In-process only: never pickled
    (the other schedulers use :func:`_store` / :func:`_load`)."""

    def __init__(self, paths: Sequence[str], aborted: threading.Event) -> None:
        self.paths = list(paths)
        self._stored = [threading.Event() for _ in self.paths]
        self.aborted = aborted

    def store(self, value: Any, i: int) -> None:
        _store(value, self.paths[i])
        self._stored[i].set()

    def load(self, i: int) -> Any:
        while not self._stored[i].wait(0.1):
            if self.aborted.is_set():
                raise BlockAborted("an earlier block failed before storing a result this block needs")
        return _load(self.paths[i])


def _store(value: np.ndarray | tuple[np.ndarray | None, ...], path: str) -> None:
    """Save a task result (an array, or a tuple of arrays or None) to ``path``: consecutive ``.npy``
    records (a count, for a tuple which items are present, then the arrays), no pickle.

    Not ``np.savez``: its zip container checksums every byte (CRC-32) and copies each array through a
    zip member, three times the CPU of plain ``.npy`` records for the tile sums carried at every
    block border, and the file never leaves this run's scratch directory.
    """
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
            return np.load(f, allow_pickle=False)
        present = np.load(f, allow_pickle=False)
        return tuple(np.load(f, allow_pickle=False) if p else None for p in present)


def _done(_: Sequence[Any]) -> None:
    """The one sink of a block's graph: its writes (and stores) have run."""


class _Run:
    """One submitted block: ``future`` resolves when its compute returns; ``spare`` is set once it
    leaves a worker idle (its tail) or has finished, i.e. when the next block may start."""

    def __init__(self, b: int, future: Future, spare: threading.Event) -> None:
        self.b, self.future, self.spare = b, future, spare


class _SequentialRunner:
    """Any scheduler but the local threaded one: each block's ``dask.compute`` in turn, in this thread."""

    def submit(self, b: int, graph: Mapping, out: Hashable) -> _Run:
        future: Future = Future()
        dask.compute(Delayed(out, graph))
        future.set_result(None)
        spare = threading.Event()
        spare.set()
        return _Run(b, future, spare)

    def stop(self, runs: Sequence[_Run]) -> None:
        pass

    def close(self) -> None:
        pass


class _DistributedRunner:
    """A ``distributed`` cluster, for blocks that do not depend on each other (nothing carried): two
    blocks are submitted at a time, the later one at a lower priority, so the scheduler gives idle
    workers (the earlier block's tail, a GPU waiting on reads) the next block's tasks and the earlier
    block's tasks always go first."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def submit(self, b: int, graph: Mapping, out: Hashable) -> _Run:
        spare = threading.Event()
        spare.set()
        return _Run(b, self.client.compute(Delayed(out, graph), priority=-b), spare)

    def stop(self, runs: Sequence[_Run]) -> None:
        self.client.cancel([run.future for run in runs])

    def close(self) -> None:
        pass


class _OverlappingRunner:
    """Dask's local threaded scheduler, the next block starting as soon as the running one leaves a
    worker idle, at most two blocks at a time.

    Why: each block's ``dask.compute`` ends with a tail of fewer tasks than workers (the last tile
    groups and writes) and starts with reads before the first forward; run back to back, both leave
    workers idle at every block border (on a GPU worker, the GPU). The two blocks run in separate
    thread pools, so a load waiting for the earlier block's store never holds a thread that store
    needs. Memory stays bounded: the later block starts only once the earlier one is down to its
    last tasks. (On 2 busy CPU cores the gain was within the run-to-run noise: 4096 px AOI, four
    blocks, 38-43 s overlapped against 37-42 s one after the other.)
    """

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.pools = [ThreadPoolExecutor(num_workers, thread_name_prefix="cloudlulc-block-worker") for _ in range(2)]
        self.drivers = ThreadPoolExecutor(2, thread_name_prefix="cloudlulc-block")
        self.abort = threading.Event()

    def submit(self, b: int, graph: Mapping, out: Hashable) -> _Run:
        spare = threading.Event()
        n = self.num_workers

        def pretask(key: Hashable, dsk: Any, state: dict) -> None:
            if self.abort.is_set():
                raise BlockAborted("another block of this run failed")

        def posttask(key: Hashable, result: Any, dsk: Any, state: dict, worker_id: Any) -> None:
            if len(state["ready"]) + len(state["running"]) < n:
                spare.set()

        future = self.drivers.submit(
            dask.compute,
            Delayed(out, graph),
            scheduler="threads",
            pool=self.pools[b % 2],
            callbacks=[(None, None, pretask, posttask, None)],
        )
        future.add_done_callback(lambda _: spare.set())
        return _Run(b, future, spare)

    def stop(self, runs: Sequence[_Run]) -> None:
        self.abort.set()

    def close(self) -> None:
        self.drivers.shutdown(wait=True)
        for pool in self.pools:  # tasks an aborted block had already started finish before we return
            pool.shutdown(wait=True)


_Runner = _SequentialRunner | _DistributedRunner | _OverlappingRunner


def _runner(independent: bool) -> _Runner:
    """How blocks run on the current scheduler; ``independent``: no block loads another's results."""
    get = dask.base.get_scheduler()
    if (get is None or get is dask.threaded.get) and dask.config.get("pool", None) is None:
        return _OverlappingRunner(dask.config.get("num_workers", None) or CPU_COUNT)
    client = _distributed_client()
    if independent and client is not None:
        return _DistributedRunner(client)
    return _SequentialRunner()


def _run_blocks(
    prepared: Iterable[tuple[Mapping, Hashable]], runner: _Runner, on_done: Callable[[int], None] = lambda b: None
) -> None:
    """Submit each prepared (graph, output key) in order once the previous block has spare workers;
    blocks finish in order (``on_done(b)`` after each); the first failure stops the others."""
    inflight: deque[_Run] = deque()
    try:
        for b, (graph, out) in enumerate(prepared):  # the next graph is prepared while a block runs
            if inflight:
                inflight[-1].spare.wait()
            while inflight and (len(inflight) >= 2 or inflight[0].future.done()):
                run = inflight.popleft()
                run.future.result()
                on_done(run.b)
            inflight.append(runner.submit(b, graph, out))
        while inflight:
            run = inflight.popleft()
            run.future.result()
            on_done(run.b)
    except BaseException:
        runner.stop(list(inflight))
        for run in inflight:  # let the others stop at their next task before the caller cleans up
            with contextlib.suppress(BaseException):
                run.future.result()
        raise
    finally:
        runner.close()


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
    starts with ``carry_prefix`` (one prefix or a tuple) and that more than one block needs are
    computed once and carried between blocks on disk (see the module docstring); ``carry=False`` or an
    unsupported scheduler computes each block on its own. On the local threaded scheduler a block
    starts while the previous one finishes its last tasks (:class:`_OverlappingRunner`).
    """
    token = dask.base.tokenize(target, [list(b) for b in blocks])
    name = f"cloudlulc-block-{token}"

    def block_tasks(b: int, block: Sequence[tuple[int, int]]) -> dict[Hashable, Any]:
        return {(name, b, bi, bj): task_for((bi, bj), (target.name, 0, bi, bj)) for bi, bj in block}

    # carried graphs are flattened to plain task dicts, which lose layer annotations: on a cluster
    # that would drop the inference tasks' resource restrictions (one model per GPU), so recompute
    carry = carry and not (_annotated(target) and _distributed_client() is not None)
    if not (carry and carry_prefix and len(blocks) > 1 and carry_supported()):
        runner = _runner(independent=True)

        def independent() -> Iterator[tuple[Mapping, Hashable]]:
            for b, block in enumerate(blocks):
                tasks = block_tasks(b, block)
                tasks[(name, b)] = (_done, list(tasks))
                yield HighLevelGraph.from_collections((name, b), tasks, dependencies=[target]), (name, b)

        _run_blocks(independent(), runner)
        return

    runner = _runner(independent=False)
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
    paths = {k: str(scratch / f"{i}.npy") for k, i in ids.items()}  # in id order
    # only the threaded runner starts a block before the previous one has stored everything, and
    # only there are events shared with the tasks; elsewhere loads simply read the file
    board = _CarryBoard(list(paths.values()), runner.abort) if isinstance(runner, _OverlappingRunner) else None

    def carried() -> Iterator[tuple[Mapping, Hashable]]:
        for b, tasks in enumerate(writes):
            # loaded results get keys of their own: a distributed scheduler must never see one key
            # with two different tasks (the group's, then the load's) across computes
            shared_here = needs[b] & shared
            loaded = {k: (f"{name}-carried", ids[k]) for k in shared_here if first[k] < b}
            stores = {
                (f"{name}-store", ids[k]): (board.store, k, ids[k]) if board else (_store, k, paths[k])
                for k in shared_here
                if first[k] == b
            }
            out = (name, b)
            extra: dict[Hashable, Any] = {out: (_done, list(tasks) + list(stores)), **stores}
            extra.update({nk: (board.load, ids[k]) if board else (_load, paths[k]) for k, nk in loaded.items()})
            graph = dict(per_block[b])
            per_block[b] = {}  # done with it: free as we go
            graph.update(convert_legacy_graph(extra, all_keys=set(graph) | set(extra)))
            for k in loaded:
                del graph[k]
            for key, node in graph.items():
                if node.dependencies & loaded.keys():
                    graph[key] = node.substitute(loaded)
            culled, _ = cull(graph, [out])  # drops what only the loaded groups needed
            yield culled, out

    def delete_finished(b: int) -> None:
        for k in needs[b] & shared:
            if last[k] == b:
                Path(paths[k]).unlink(missing_ok=True)

    try:
        _run_blocks(carried(), runner, delete_finished)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _is_carried(key: Hashable, prefix: str | tuple[str, ...]) -> bool:
    head = key[0] if isinstance(key, tuple) and key else key
    return isinstance(head, str) and head.startswith(prefix)
