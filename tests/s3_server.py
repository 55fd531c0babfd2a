"""A real S3 API on loopback for the object-store tests: moto's server mode in a subprocess.

moto (``moto[server]`` from PyPI) answers the S3 REST API as AWS does, conditional writes
(``If-None-Match``, ``If-Match``) included, so s3fs, zarr's FsspecStore and the writer lease run
unchanged against it. Credentials reach every client the way production gives them: through the
standard ``AWS_*`` environment variables (:meth:`S3Server.env`), never as parameters.

``strip_conditions`` starts a proxy in front of it that drops those conditions, as some
S3-compatible servers do, to test that such a store is refused.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import httpx

from cloudlulc.testing.processes import die_with_parent, free_port, stop_process, wait_until_ready

BUCKET = "cloudlulc-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key_id: str
    secret: str
    log_path: Path

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The standard AWS variables that s3fs (botocore) reads: endpoint, region, credentials."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


@contextlib.contextmanager
def moto_s3(log_dir: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """``python -m moto.server`` on a free loopback port with bucket :data:`BUCKET`, until exit."""
    port = free_port()
    log_path = Path(log_dir) / "moto.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        wait_until_ready(
            lambda: httpx.get(f"{endpoint}/moto-api/", timeout=2.0).status_code < 500,
            proc,
            timeout=timeout,
            on_exit=lambda code: RuntimeError(f"moto server exited with {code}; log {log_path}"),
            on_timeout=lambda: RuntimeError(f"moto server not answering after {timeout:.0f} s; log {log_path}"),
        )
        server = S3Server(endpoint, "cloudlulc-test-key", f"test-secret-{secrets.token_hex(12)}", log_path)
        httpx.put(f"{endpoint}/{BUCKET}", timeout=10.0).raise_for_status()
        yield server
    finally:
        stop_process(proc)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the AWS variables of an :class:`S3Server`).

    fsspec keeps one filesystem per set of arguments, created with the environment of its time: the
    S3 ones are dropped on entry and exit, so that none outlives the server it was made for.
    """
    saved = {k: os.environ.get(k) for k in values}
    s3 = fsspec.get_filesystem_class("s3")
    s3.clear_instance_cache()
    os.environ.update(values)
    try:
        yield
    finally:
        s3.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_DROPPED = {"if-none-match", "if-match", "host", "connection", "transfer-encoding"}


@contextlib.contextmanager
def strip_conditions(upstream: str) -> Iterator[str]:
    """A loopback proxy to ``upstream`` that drops ``If-None-Match`` / ``If-Match`` from requests,
    as S3-compatible servers without conditional writes behave (they overwrite). Yields its URL."""
    target = upstream.removeprefix("http://")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROPPED}
            conn = http.client.HTTPConnection(target, timeout=30)
            conn.request(self.command, self.path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
