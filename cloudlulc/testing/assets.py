"""A tiny HTTP file server with byte-range support, for tests and benchmarks.

Production COGs are read by GDAL over HTTP (``/vsicurl``) with range requests; Python's
``http.server`` ignores ``Range`` and would make GDAL download whole files. This serves a
directory with single-range ``206 Partial Content`` answers, ``HEAD``, and counts requests and
bytes so tests can prove that building a cube reads nothing and that computing it does.
Loopback only; not a production server.

The server runs in its own process: ``rasterio.open`` of an ``http://`` URL holds the GIL while GDAL
waits for the answer, so a server thread in the reading process would deadlock. Counters are read
back over HTTP (``GET /__stats__``, ``/__reset__``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cloudlulc.testing.processes import http_child, serve_http

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class _Counters:
    requests: int = 0
    range_requests: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, nbytes: int, ranged: bool) -> None:
        with self.lock:
            self.requests += 1
            self.range_requests += int(ranged)
            self.bytes_sent += nbytes

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {"requests": self.requests, "range_requests": self.range_requests, "bytes_sent": self.bytes_sent}

    def reset(self) -> None:
        with self.lock:
            self.requests = self.range_requests = self.bytes_sent = 0


@dataclass
class AssetServer:
    """A running server process: ``url`` (no trailing slash), ``root``, and its request counters."""

    url: str
    root: Path

    def href(self, path: str | Path) -> str:
        """The URL of a file under ``root`` (absolute or relative path)."""
        rel = Path(path).resolve().relative_to(self.root) if Path(path).is_absolute() else Path(path)
        return f"{self.url}/{rel.as_posix()}"

    def stats(self) -> dict[str, int]:
        """``requests``, ``range_requests`` and ``bytes_sent`` for files since start or the last reset."""
        import httpx

        return httpx.get(f"{self.url}/__stats__", timeout=10).json()

    @property
    def requests(self) -> int:
        return self.stats()["requests"]

    @property
    def range_requests(self) -> int:
        return self.stats()["range_requests"]

    @property
    def bytes_sent(self) -> int:
        return self.stats()["bytes_sent"]

    def reset_counters(self) -> None:
        import httpx

        httpx.get(f"{self.url}/__reset__", timeout=10).raise_for_status()


def _handler(root: Path, counters: _Counters, delay_s: float = 0.0) -> type[BaseHTTPRequestHandler]:

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: GDAL reuses connections

        def log_message(self, format: str, *args) -> None:
            pass

        def _resolve(self) -> Path | None:
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            target = (root / rel).resolve()
            if root not in target.parents and target != root:
                return None
            return target if target.is_file() else None

        def _send_empty(self, code: int, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            if delay_s:  # object-storage latency for benchmarks (each request waits, in its own thread)
                time.sleep(delay_s)
            path = urlsplit(self.path).path
            if path in ("/__stats__", "/__reset__"):
                if path == "/__reset__":
                    counters.reset()
                body = json.dumps(counters.as_dict()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
            target = self._resolve()
            if target is None:
                counters.count(0, False)
                self._send_empty(404)
                return
            size = target.stat().st_size
            start, end, ranged = 0, size - 1, False
            header = self.headers.get("Range")
            if header:
                m = _RANGE_RE.match(header.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    # Multi-range or malformed: answer with the whole file, which HTTP allows.
                    header = None
                else:
                    ranged = True
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:  # suffix range: last N bytes
                        start = max(0, size - int(m.group(2)))
                    if start >= size or start > end:
                        counters.count(0, True)
                        self._send_empty(416, {"Content-Range": f"bytes */{size}"})
                        return
            length = end - start + 1
            self.send_response(206 if ranged else 200)
            self.send_header(
                "Content-Type", "image/tiff" if target.suffix in (".tif", ".tiff") else "application/octet-stream"
            )
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                counters.count(0, ranged)
                return
            with open(target, "rb") as f:
                f.seek(start)
                remaining = length
                while remaining > 0:
                    chunk = f.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            counters.count(length, ranged)

    return Handler


@contextmanager
def serve_assets(
    root: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 30.0,
    delay_ms: float = 0.0,
) -> Iterator[AssetServer]:
    """Serve ``root`` over HTTP with range requests (in a child process) until the context exits;
    ``delay_ms`` holds every answer back that long, as a remote object store's latency would."""
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise FileNotFoundError(f"Cannot serve {root_path}: not a directory.")
    args = [
        "cloudlulc.testing.assets",
        str(root_path),
        "--host",
        host,
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    with http_child(args, f"The asset server for {root_path}", startup_timeout) as url:
        yield AssetServer(url=url, root=root_path)


def main(argv: list[str] | None = None) -> None:
    """``python -m cloudlulc.testing.assets ROOT [--host H] [--port P] [--delay-ms D]``: prints
    ``{"url": ...}`` then serves."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("root")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="latency added to every answer")
    args = ap.parse_args(argv)
    serve_http(_handler(Path(args.root).resolve(), _Counters(), args.delay_ms / 1000.0), args.host, args.port)


if __name__ == "__main__":
    main()
