"""A tiny HTTP file server with byte-range support, for tests and benchmarks.

Production COGs are read by GDAL over HTTP (``/vsicurl``) with range requests; Python's
``http.server`` ignores ``Range`` and would make GDAL download whole files. This serves a
directory with single-range ``206 Partial Content`` answers, ``HEAD``, and counts requests and
bytes so tests can prove that building a cube reads nothing and that computing it does.
Loopback only; not a production server.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class AssetServer:
    """A running server: ``url`` (no trailing slash), request and byte counters, ``root`` directory."""

    url: str
    root: Path
    requests: int = 0
    range_requests: int = 0
    bytes_sent: int = 0
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def href(self, path: str | Path) -> str:
        """The URL of a file under ``root`` (absolute or relative path)."""
        rel = Path(path).resolve().relative_to(self.root) if Path(path).is_absolute() else Path(path)
        return f"{self.url}/{rel.as_posix()}"

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = self.range_requests = self.bytes_sent = 0
            self.paths.clear()

    def _count(self, path: str, nbytes: int, ranged: bool) -> None:
        with self._lock:
            self.requests += 1
            self.range_requests += int(ranged)
            self.bytes_sent += nbytes
            self.paths.append(path)


def _handler(server_state: AssetServer) -> type[BaseHTTPRequestHandler]:
    root = server_state.root

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: GDAL reuses connections

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence stderr access logs
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

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            target = self._resolve()
            if target is None:
                server_state._count(self.path, 0, False)
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
                        server_state._count(self.path, 0, True)
                        self._send_empty(416, {"Content-Range": f"bytes */{size}"})
                        return
            length = end - start + 1
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", "image/tiff" if target.suffix in (".tif", ".tiff") else "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                server_state._count(self.path, 0, ranged)
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
            server_state._count(self.path, length, ranged)

    return Handler


@contextmanager
def serve_assets(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0) -> Iterator[AssetServer]:
    """Serve ``root`` over HTTP with range requests until the context exits; yields an :class:`AssetServer`."""
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise FileNotFoundError(f"Cannot serve {root_path}: not a directory.")
    state = AssetServer(url="", root=root_path)
    httpd = ThreadingHTTPServer((host, port), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="cloudlulc-assets", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
