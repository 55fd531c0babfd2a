"""One writer per store: a lease that a second writer waits for, and that a dead writer loses.

A write takes the store's lease for its whole duration (:func:`writer_lease`). A second writer of
the same store waits up to ``wait_s`` seconds, then fails with :class:`StoreBusyError` naming the
holder (owner, host, pid, since when). The lease lives inside the store, in ``.cloudlulc/``: an
empty Zarr group (a ``zarr.json`` saying what it is), so that Zarr readers listing the store see a
node they know, and xarray ignores it.

* Local stores: an exclusive ``flock`` on ``.cloudlulc/lock``, which the kernel releases the moment
  its process dies (``kill -9`` included): no stale lease can outlive a writer. The file also holds
  the holder's description for the message.
* Object stores (``s3://``, ``gs://``, ``az://``): ``.cloudlulc/lease.json``, created only if
  absent and renewed by a heartbeat thread, each write conditional on the version last read
  (:class:`LeaseFile`: on S3 a PUT with ``If-None-Match`` / ``If-Match``, which only one writer
  wins). A lease released by its writer, or whose heartbeat is older than ``stale_s`` (hosts' clocks
  agree within seconds), is taken over. A writer whose lease was taken over stops before it commits
  anything (:meth:`StoreLease.check` renews the lease, so it knows at once). A store that ignores
  conditional writes is refused (:class:`StoreLeaseError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudlulc.errors import CloudLULCError

__all__ = ["LeaseFile", "LeaseLostError", "StoreBusyError", "StoreLease", "StoreLeaseError", "writer_lease"]

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


class StoreLeaseError(CloudLULCError):
    """The store cannot hold a writer lease (an object store that ignores conditional writes)."""


@dataclass
class StoreLease:
    """A held lease: who holds it, and whether it is still ours."""

    store: str
    holder: dict[str, Any]
    lost: threading.Event = field(default_factory=threading.Event)
    #: object stores: renew the lease now, False if it was taken over (local leases cannot be)
    renew: Callable[[], bool] | None = None

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another writer took the lease over (object stores ask
        the store, by renewing the lease, rather than wait for the next heartbeat)."""
        if self.renew is not None:
            self.renew()
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
    lease_dir = f"{root.rstrip('/')}/{LEASE_DIR}"
    _check_conditional_writes(fs, f"{lease_dir}/zarr.json", store)
    lease_file = LeaseFile(fs, f"{lease_dir}/lease.json")
    holder = _holder(owner)
    version = _acquire(lease_file, holder, store, wait_s, stale_s)
    lease = StoreLease(store, holder)
    renewal = threading.Lock()

    def renew() -> bool:
        """Bump our heartbeat only if the lease is still the version we wrote; False: lost."""
        nonlocal version
        with renewal:
            if lease.lost.is_set():
                return False
            beat = {**holder, "heartbeat": time.time()}
            new = lease_file.replace(beat, version)
            if new is None:
                lease.lost.set()
                return False
            holder.update(beat)
            version = new
            return True

    lease.renew = renew
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(stale_s / 4) and renew():
            pass

    thread = threading.Thread(target=beat, name="cloudlulc-lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
        with renewal:
            if not lease.lost.is_set():  # hand it back as released, unless someone took it over
                lease_file.replace({**holder, "released": True, "heartbeat": time.time()}, version)


def _acquire(lease_file: LeaseFile, holder: dict[str, Any], store: str, wait_s: float, stale_s: float) -> str:
    """Take the lease: create it if absent, or replace it if released or stale (heartbeat older than
    ``stale_s`` by this host's clock), each a conditional write that only one writer wins. Waits for a
    live holder up to ``wait_s``; returns the version this writer wrote."""
    deadline = time.monotonic() + wait_s
    while True:
        current = lease_file.read()
        if current is None:
            version = lease_file.create(holder)
        else:
            other, other_version = current
            free = other.get("released") or time.time() - float(other.get("heartbeat", 0)) > stale_s
            version = lease_file.replace(holder, other_version) if free else None
            if not free and time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"{store}: another writer holds the store: {_describe(other)}; waited {wait_s:g} s "
                    "(store_lock_wait_s). Let it finish, or write to another store."
                )
        if version is not None:
            return version
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))


class LeaseFile:
    """``lease.json`` on an object store: read with its version, created only if absent, replaced
    only if unchanged since a version was read. Returns None where another writer got there first.

    On S3 (s3fs) every write is one conditional PUT (``If-None-Match: *`` to create, ``If-Match:
    <ETag>`` to replace), which the store applies atomically. Elsewhere (``gs://``, ``az://``)
    creation is the filesystem's own create-if-absent (fsspec ``mode="create"``: GCS generation 0,
    Azure ``If-None-Match``); a replacement compares, deletes and creates, so a takeover racing a
    stalled holder's renewal may let the holder delete the new lease, which it then detects.
    """

    def __init__(self, fs: Any, path: str) -> None:
        self.fs = fs
        self.path = path
        self.s3 = _is_s3(fs)

    def read(self) -> tuple[dict[str, Any], str] | None:
        """The lease's content and version (the S3 ETag, else a digest of the bytes); None if absent.

        On S3 the ETag is read first: a later content change makes a replace with it fail, so a
        decision is never made on content newer than the version it is conditioned on.
        """
        try:
            if self.s3:
                self.fs.invalidate_cache(self.path)
                etag = str(self.fs.info(self.path)["ETag"])
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            content = json.loads(data)
        except ValueError:
            content = {}  # a torn or foreign file: no heartbeat, so stale
        if not isinstance(content, dict):
            content = {}
        return content, (etag if self.s3 else hashlib.sha256(data).hexdigest())

    def create(self, content: dict[str, Any]) -> str | None:
        """Write ``content`` if there is no lease; its version, or None if one exists."""
        data = json.dumps(content).encode()
        try:
            self.fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return None
        except OSError as exc:
            if _lost_race(exc):
                return None
            raise
        return self._version_written(content)

    def replace(self, content: dict[str, Any], version: str) -> str | None:
        """Write ``content`` if the lease is still at ``version``; its new version, or None."""
        data = json.dumps(content).encode()
        if not self.s3:
            current = self.read()
            if current is None or current[1] != version:
                return None
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)
            return self.create(content)
        try:
            self.fs.pipe_file(self.path, data, IfMatch=version)
        except (FileNotFoundError, FileExistsError):
            return None
        except OSError as exc:
            if _lost_race(exc):
                return None
            raise
        return self._version_written(content)

    def _version_written(self, content: dict[str, Any]) -> str | None:
        """The version of what this writer just wrote, read back; None if it is already someone else's."""
        current = self.read()
        if current is None or current[0].get("token") != content.get("token"):
            return None
        if current[0].get("heartbeat") != content.get("heartbeat"):
            return None
        return current[1]


def _is_s3(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"s3", "s3a"} & set(protocols))


def _lost_race(exc: OSError) -> bool:
    """Whether an S3 write failed on its condition: the object changed (HTTP 412 PreconditionFailed),
    or a concurrent conditional write to it was in progress (409 ConditionalRequestConflict)."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("PreconditionFailed", "ConditionalRequestConflict")


def _check_conditional_writes(fs: Any, marker: str, store: str) -> None:
    """Create the lease directory's ``zarr.json`` if absent, then make sure the store honours
    conditional writes: creating it again must fail (and on S3, so must a PUT on a wrong ETag).

    Some S3-compatible servers ignore ``If-None-Match`` / ``If-Match`` and overwrite; there two
    writers could both believe they hold the lease, so the write is refused instead.
    """
    data = json.dumps(_LEASE_GROUP).encode()
    with contextlib.suppress(FileExistsError):
        fs.pipe_file(marker, data, mode="create")
    honoured = False
    try:
        fs.pipe_file(marker, data, mode="create")
    except FileExistsError:
        honoured = True
    except OSError as exc:
        honoured = _lost_race(exc)
    if honoured and _is_s3(fs):
        try:
            fs.pipe_file(marker, data, IfMatch='"00000000000000000000000000000000"')
            honoured = False
        except OSError as exc:
            honoured = _lost_race(exc) or isinstance(exc, FileNotFoundError | FileExistsError)
    if not honoured:
        raise StoreLeaseError(
            f"{store}: this object store ignores conditional writes (If-None-Match / If-Match), so one writer "
            "per store cannot be guaranteed. Use a store that supports them (AWS S3, Google Cloud Storage, Azure "
            "Blob Storage, MinIO; see deploy/README.md) or write to a local path."
        )
