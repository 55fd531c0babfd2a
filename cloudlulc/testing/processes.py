"""Helpers for the local servers the project starts (rustac, asset server, Prefect, pgstac in tests).

One place for picking a port and stopping a child process, so every launcher behaves alike.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (another process may still take it before the caller binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """``preexec_fn`` for a child server: SIGTERM it when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; reaps the child either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until_ready(
    ready: Callable[[], bool],
    proc: subprocess.Popen,
    *,
    timeout: float,
    on_exit: Callable[[int], Exception],
    on_timeout: Callable[[], Exception],
    interval: float = 0.2,
) -> None:
    """Poll ``ready()`` until it is true; raise ``on_exit(returncode)`` if ``proc`` dies first, or
    ``on_timeout()`` after ``timeout`` seconds. ``ready`` raising an ``httpx`` error or reading an
    unparsable body counts as "not yet": a server that is still starting refuses connections."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise on_exit(code)
        try:
            if ready():
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise on_timeout()
        time.sleep(interval)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """The standard library's threading server with a listen backlog fit for many readers: its
    default of 5 drops connections when a reader opens dozens at once, and each dropped connection
    costs the client a 1 s TCP retransmission (object stores accept them all)."""

    request_queue_size = 256
    daemon_threads = True


def serve_http(handler: type[BaseHTTPRequestHandler], host: str, port: int) -> None:  # pragma: no cover - child
    """Serve ``handler`` until interrupted, after printing ``{"url": ...}`` (for :func:`http_child`)."""
    httpd = LoopbackHTTPServer((host, port), handler)
    print(json.dumps({"url": f"http://{host}:{httpd.server_address[1]}"}), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


@contextmanager
def http_child(args: list[str], what: str, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run ``python -m <args>`` (a module ending in :func:`serve_http`) until exit; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout)
        if not ready or not ready[0].strip():
            raise RuntimeError(f"{what} did not start within {startup_timeout:.0f} s")
        yield str(json.loads(ready[0])["url"])
    finally:
        stop_process(proc)
