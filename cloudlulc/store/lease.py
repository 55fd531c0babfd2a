"""One writer per store: a lease that a second writer waits for, and that a dead writer loses.

A write takes the store's lease for its whole duration (:func:`writer_lease`). A second writer of
the same store waits up to ``wait_s`` seconds, then fails with :class:`StoreBusyError` naming the
holder (owner, host, pid, since when). The lease lives inside the store, in ``.cloudlulc/``: an
empty Zarr group (a ``zarr.json`` saying what it is), so that Zarr readers listing the store see a
node they know, and xarray ignores it.

* Local stores: an exclusive ``flock`` on ``.cloudlulc/lock``, which the kernel releases the moment
  its process dies (``kill -9`` included): no stale lease can outlive a writer. The file also holds
  the holder's description for the message.
* Object stores (``s3://``, ``gs://``, ``az://``): ``.cloudlulc/lease.json`` created only if absent
  (the store's conditional write), renewed by a heartbeat thread; a lease whose heartbeat is older
  than ``stale_s`` is broken (deleted only if it still holds the stale token) and taken over. A
  writer that finds its own lease taken over stops before it commits anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudlulc.errors import CloudLULCError

__all__ = ["LeaseLostError", "StoreBusyError", "StoreLease", "writer_lease"]

LEASE_DIR = ".cloudlulc"

#: the lease directory's own ``zarr.json``: an empty group, not data
_LEASE_GROUP = {
    "zarr_format": 3,
    "node_type": "group",
    "attributes": {"description": "CloudLULC writer lease (bookkeeping, not data)"},
}


class StoreBusyError(CloudLULCError):
    """Another writer holds the store's lease."""


class LeaseLostError(CloudLULCError):
    """This writer's lease was broken by another writer (its heartbeat went stale)."""


@dataclass
class StoreLease:
    """A held lease: who holds it, and whether it is still ours."""

    store: str
    holder: dict[str, Any]
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another writer took the lease over."""
        if self.lost.is_set():
            raise LeaseLostError(
                f"{self.store}: this writer's lease was taken over by another writer (its heartbeat went stale); "
                "nothing more is committed. Run the write again once the other writer is done."
            )


def _holder(owner: str | None) -> dict[str, Any]:
    return {
        "owner": owner or "cloudlulc",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "heartbeat": time.time(),
    }


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"{holder.get('owner', '?')} (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"since {holder.get('since', '?')})"
    )


def is_local(store: str | Path) -> bool:
    text = str(store)
    return "://" not in text or text.startswith("file://")


@contextlib.contextmanager
def writer_lease(
    store: str | Path,
    *,
    wait_s: float = 300.0,
    stale_s: float = 120.0,
    owner: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[StoreLease]:
    """Hold the store's writer lease for the duration of the context (module docstring)."""
    if is_local(store):
        with _local_lease(Path(str(store).removeprefix("file://")), wait_s, owner) as lease:
            yield lease
    else:
        with _object_lease(str(store), wait_s, stale_s, owner, storage_options or {}) as lease:
            yield lease


@contextlib.contextmanager
def _local_lease(store: Path, wait_s: float, owner: str | None) -> Iterator[StoreLease]:
    import fcntl

    lock_dir = store / LEASE_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    marker = lock_dir / "zarr.json"
    if not marker.exists():
        marker.write_text(json.dumps(_LEASE_GROUP))
    path = lock_dir / "lock"
    holder = _holder(owner)
    deadline = time.monotonic() + wait_s
    with open(path, "a+") as f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    try:
                        other = json.loads(f.read() or "{}")
                    except ValueError:
                        other = {}
                    raise StoreBusyError(
                        f"{store}: another writer holds the store: {_describe(other)}; waited {wait_s:g} s "
                        "(store_lock_wait_s). Let it finish, or write to another store."
                    ) from None
                time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(holder))
            f.flush()
            yield StoreLease(str(store), holder)
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _object_lease(
    store: str, wait_s: float, stale_s: float, owner: str | None, storage_options: dict[str, Any]
) -> Iterator[StoreLease]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(store, **storage_options)
    path = f"{root.rstrip('/')}/{LEASE_DIR}/lease.json"
    marker = f"{root.rstrip('/')}/{LEASE_DIR}/zarr.json"
    if not fs.exists(marker):
        with contextlib.suppress(FileExistsError):
            fs.pipe_file(marker, json.dumps(_LEASE_GROUP).encode(), mode="create")
    holder = _holder(owner)
    deadline = time.monotonic() + wait_s
    while not _create_if_absent(fs, path, holder):
        other = _read_json(fs, path)
        if other is not None and time.time() - float(other.get("heartbeat", 0)) > stale_s:
            if _read_json(fs, path) == other:  # still the stale one: break it
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(path)
            continue
        if time.monotonic() >= deadline:
            raise StoreBusyError(
                f"{store}: another writer holds the store: {_describe(other or {})}; waited {wait_s:g} s "
                "(store_lock_wait_s). Let it finish, or write to another store."
            )
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    lease = StoreLease(store, holder)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(stale_s / 4):
            current = _read_json(fs, path)
            if current is None or current.get("token") != holder["token"]:
                lease.lost.set()
                return
            holder["heartbeat"] = time.time()
            fs.pipe_file(path, json.dumps(holder).encode())

    thread = threading.Thread(target=beat, name="cloudlulc-lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
        current = _read_json(fs, path)
        if current is not None and current.get("token") == holder["token"]:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)


def _create_if_absent(fs: Any, path: str, holder: dict[str, Any]) -> bool:
    """Write ``holder`` at ``path`` only if nothing is there; True if this call created it."""
    try:
        fs.pipe_file(path, json.dumps(holder).encode(), mode="create")
    except FileExistsError:
        return False
    current = _read_json(fs, path)
    return current is not None and current.get("token") == holder["token"]


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(fs.cat_file(path))
        return doc
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
