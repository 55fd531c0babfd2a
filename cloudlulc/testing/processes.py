"""Helpers for the local servers the project starts (rustac, asset server, Prefect, pgstac in tests).

One place for picking a port and stopping a child process, so every launcher behaves alike.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

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
