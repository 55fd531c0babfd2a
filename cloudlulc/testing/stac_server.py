"""An embedded STAC API: ``rustac serve`` over a simulated (or any static) catalog, as a context manager.

``rustac serve`` (PyPI ``rustac``) loads collection and item-collection JSON files into an
in-memory backend and starts in a fraction of a second, which makes it the default STAC API for
the demo and for tests that need a *real* HTTP STAC API (pystac-client talks to it like to the
Planetary Computer).

What the in-memory backend of rustac 0.9 does and does not do (measured here):

- supports ``collections``, ``ids``, ``bbox``, ``intersects``, ``datetime``, ``limit``, ``fields``,
  and paging with POST ``/search`` (pystac-client's default method);
- a GET ``/search`` that needs a *next* link while ``collections`` is set answers HTTP 500
  ("unsupported value"): use POST (pystac-client does) or a limit above the result count;
- ``query`` and ``filter`` are *not* ignored: any request that carries them returns **no items**;
  ``sortby`` is ignored. Its ``/conformance`` lists neither the query, filter nor sort extension,
  so clients must check conformance and filter / sort client-side (``cloudlulc.catalog`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from cloudlulc.simulate.catalog import SimCatalog
from cloudlulc.testing.processes import free_port, stop_process, wait_until_ready

_NAV_RELS = frozenset({"self", "root", "parent", "collection"})

__all__ = ["StacServer", "StacServerError", "find_rustac", "serve_inputs", "serve_stac"]


class StacServerError(RuntimeError):
    """The embedded STAC API could not be started (message says why and what to do)."""


def find_rustac(explicit: str | os.PathLike[str] | None = None) -> str:
    """Path of the ``rustac`` executable.

    ``explicit`` when given (and nothing else), else ``$CLOUDLULC_RUSTAC``, the one next to this
    Python (the virtual environment's ``bin/``, where ``pip install rustac`` puts it), or ``PATH``.
    """
    if explicit is not None:
        candidates = [str(explicit)]
        where = str(explicit)
    else:
        found = [
            os.environ.get("CLOUDLULC_RUSTAC"),
            str(Path(sys.executable).parent / "rustac"),
            shutil.which("rustac"),
        ]
        candidates = [c for c in found if c]
        where = f"$CLOUDLULC_RUSTAC, {Path(sys.executable).parent}, and PATH"
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise StacServerError(
        f"the `rustac` executable was not found (looked at {where}): "
        "install it with `pip install rustac` in this environment or set $CLOUDLULC_RUSTAC"
    )


def serve_inputs(catalog: SimCatalog | str | os.PathLike[str]) -> list[Path]:
    """The JSON files to hand to ``rustac serve`` for ``catalog``.

    Accepts a :class:`SimCatalog`, a directory written by ``cloudlulc.simulate`` (or any directory
    with ``api/*.collection.json`` and ``api/*.items.json``), or a single collection / item
    collection file.
    """
    if isinstance(catalog, SimCatalog):
        paths = [*catalog.collection_paths, *catalog.item_collection_paths]
    else:
        p = Path(catalog)
        if p.is_file():
            paths = [p]
        elif (p / "simcatalog.json").is_file():
            sim = SimCatalog.load(p)
            paths = [*sim.collection_paths, *sim.item_collection_paths]
        elif p.is_dir():
            paths = sorted((p / "api").glob("*.collection.json")) + sorted((p / "api").glob("*.items.json"))
        else:
            raise StacServerError(f"catalog {p} does not exist: write one with `python -m cloudlulc.simulate {p}`")
    missing = [str(x) for x in paths if not Path(x).is_file()]
    if not paths or missing:
        raise StacServerError(
            f"nothing to serve from {catalog}: expected collection and item-collection JSON files"
            + (f", missing {missing}" if missing else "")
        )
    return [Path(x).resolve() for x in paths]


def _port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``port`` (SO_REUSEADDR like rustac/tokio: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class StacServer:
    """A running ``rustac serve`` process; prefer the :func:`serve_stac` context manager."""

    def __init__(
        self,
        inputs: Sequence[Path],
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        startup_timeout: float = 30.0,
        expected_collections: int | None = None,
        rustac: str | os.PathLike[str] | None = None,
    ) -> None:
        self.rustac = rustac
        self.inputs = list(inputs)
        self.host = host
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.expected_collections = expected_collections
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.served_inputs: list[Path] = []

    @property
    def url(self) -> str:
        if self.port is None:
            raise StacServerError("the STAC server is not running")
        return f"http://{self.host}:{self.port}"

    def _prepare_inputs(self) -> list[Path]:
        """Copies of item collections without navigation links, in a private temporary directory.

        rustac appends its own ``self``/``root``/``parent``/``collection`` links to every item without
        removing the item's own, so served items would carry two of each; pystac takes the first.
        """
        self._tmp = tempfile.TemporaryDirectory(prefix="cloudlulc-rustac-")
        out = []
        for i, path in enumerate(self.inputs):
            if _is_collection_file(path):
                out.append(path)
                continue
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise StacServerError(f"cannot read {path} as JSON for `rustac serve`: {err}") from err
            features = doc.get("features") if isinstance(doc, dict) else None
            if doc.get("type") != "FeatureCollection" or not isinstance(features, list):
                out.append(path)  # a single item or something rustac may know: pass through unchanged
                continue
            for f in features:
                f["links"] = [ln for ln in f.get("links", []) if ln.get("rel") not in _NAV_RELS]
            copy = Path(self._tmp.name) / f"{i:02d}-{path.name}"
            copy.write_text(json.dumps(doc))
            out.append(copy)
        return out

    def start(self) -> str:
        """Start rustac and wait until ``/`` and ``/collections`` answer; returns the root URL."""
        exe = find_rustac(self.rustac)
        self.served_inputs = self._prepare_inputs()
        if self.requested_port is not None:
            if not _port_is_free(self.host, self.requested_port):
                raise StacServerError(
                    f"port {self.requested_port} on {self.host} is already in use: stop what listens there "
                    "or leave the port unset to pick a free one"
                )
            attempts = [self.requested_port]
        else:
            attempts = [free_port(self.host) for _ in range(3)]  # a port can be taken between pick and bind
        last_error: StacServerError | None = None
        for port in attempts:
            try:
                self._launch(exe, port)
                return self.url
            except StacServerError as err:
                last_error = err
                self.stop()
                if self.requested_port is not None or _port_is_free(self.host, port):
                    break  # the failure was not a lost race for the port: retrying will not help
        assert last_error is not None
        raise last_error

    def _launch(self, exe: str, port: int) -> None:
        self._log.seek(0)
        self._log.truncate()
        cmd = [exe, "serve", "--addr", f"{self.host}:{port}", *[str(p) for p in self.served_inputs]]
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.port = port
        base = f"http://{self.host}:{port}"
        with httpx.Client(timeout=2.0, trust_env=False) as http:

            def serving_all_collections() -> bool:
                root = http.get(base + "/")
                cols = http.get(base + "/collections")
                if root.status_code != 200 or cols.status_code != 200:
                    return False
                n = len(cols.json().get("collections", []))
                return self.expected_collections is None or n >= self.expected_collections

            wait_until_ready(
                serving_all_collections,
                self.process,
                timeout=self.startup_timeout,
                interval=0.05,
                on_exit=lambda code: StacServerError(
                    f"`rustac serve` exited with status {code} before serving on {self.host}:{port}. "
                    f"Command: {' '.join(cmd)}\nOutput:\n{self.output()}"
                ),
                on_timeout=lambda: StacServerError(
                    f"`rustac serve` did not become ready on {base} within {self.startup_timeout:.0f} s "
                    f"(expected {self.expected_collections} collections). Output:\n{self.output()}"
                ),
            )

    def output(self) -> str:
        """What rustac printed so far (stdout and stderr)."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-8000:]

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc, timeout=5)
        self.port = None

    def close(self) -> None:
        self.stop()
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@contextmanager
def serve_stac(
    catalog: SimCatalog | str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    startup_timeout: float = 30.0,
    rustac: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Serve ``catalog`` with ``rustac serve`` and yield the STAC API root URL (no trailing slash).

    ``port=None`` picks a free port. Readiness is awaited by polling ``/`` and ``/collections``
    (until every collection is loaded); the process is stopped on exit. Raises
    :class:`StacServerError` when rustac is missing, the port is in use, or rustac exits early
    (its output is included). ``rustac`` overrides the executable (see :func:`find_rustac`).
    See the module docstring for what rustac's search supports:
    it returns nothing for ``query``/``filter`` and ignores ``sortby``.
    """
    inputs = serve_inputs(catalog)
    n_collections = sum(1 for p in inputs if _is_collection_file(p))
    server = StacServer(
        inputs, host, port, startup_timeout=startup_timeout, expected_collections=n_collections, rustac=rustac
    )
    try:
        yield server.start()
    finally:
        server.close()


def _is_collection_file(path: Path) -> bool:
    if path.name.endswith(".collection.json") or path.name == "collection.json":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"type": "Collection"' in head or b'"type":"Collection"' in head


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m cloudlulc.testing.stac_server serve <catalog_dir> [--port N] [--host H]``."""
    parser = argparse.ArgumentParser(
        prog="python -m cloudlulc.testing.stac_server", description=(__doc__ or "").splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="serve a catalog directory written by `python -m cloudlulc.simulate`")
    srv.add_argument("catalog_dir")
    srv.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    srv.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    stop = {"now": False}

    def _handle(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)
    try:
        with serve_stac(args.catalog_dir, args.host, args.port) as url:
            print(f"STAC API (rustac, in-memory) serving {args.catalog_dir} at {url}", flush=True)
            while not stop["now"]:
                time.sleep(0.2)
    except StacServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
