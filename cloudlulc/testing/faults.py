"""A flaky HTTP proxy on loopback, for fault-injection tests: 5xx bursts, hangs, truncated bodies.

It forwards every request to an upstream server (a STAC API, an asset server) and, for requests whose
path contains a rule's ``match``, answers with the rule's fault instead: an HTTP status, no answer at
all (``hang``: the connection stays open and silent), or a body cut off half way (``truncate``).
Rules are set at run time through ``POST /__faults__`` (:meth:`FaultProxy.set`) and counted
(:meth:`FaultProxy.stats`). Links to the upstream in JSON answers (a STAC API's ``self``/``search``
links) are rewritten to the proxy, as a reverse proxy does, so a client never leaves it. The proxy
runs in its own process, as GDAL holds the GIL while it waits on a socket in some calls. Loopback
only; for tests.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from cloudlulc.testing.processes import http_child, serve_http

__all__ = ["FaultProxy", "FaultRule", "fault_proxy"]

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "host"}


@dataclass
class FaultRule:
    """Answer requests whose path contains ``match`` with a fault, ``count`` times (-1: always),
    after letting the first ``after`` matching requests through."""

    match: str
    mode: Literal["status", "hang", "truncate"] = "status"
    status: int = 503
    count: int = -1
    after: int = 0


@dataclass
class FaultProxy:
    """A running proxy: requests to ``url`` go to the upstream unless a rule says otherwise."""

    url: str

    def set(self, *rules: FaultRule) -> None:
        """Replace the rules (none: a faithful proxy) and reset the counters."""
        httpx.post(f"{self.url}/__faults__", json=[asdict(r) for r in rules], timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``requests`` forwarded, ``faults`` injected, per rule ``matched``."""
        return httpx.get(f"{self.url}/__faults__", timeout=10).json()


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.matched: list[int] = []
        self.requests = 0
        self.faults = 0

    def decide(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            self.requests += 1
            for i, rule in enumerate(self.rules):
                if rule["match"] in path:
                    self.matched[i] += 1
                    n = self.matched[i] - rule["after"]
                    if n >= 1 and (rule["count"] < 0 or n <= rule["count"]):
                        self.faults += 1
                        return rule
                    return None
            return None


def _handler(upstream: str, state: _State) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _control(self) -> bool:
            if urlsplit(self.path).path != "/__faults__":
                return False
            if self.command == "POST":
                rules = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"[]")
                with state.lock:
                    state.rules, state.matched = rules, [0] * len(rules)
                    state.requests = state.faults = 0
            with state.lock:
                body = json.dumps({"requests": state.requests, "faults": state.faults, "matched": state.matched})
            self._send(200, body.encode(), {"Content-Type": "application/json"})
            return True

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self) -> None:
            if self._control():
                return
            length = int(self.headers.get("Content-Length", 0) or 0)
            payload = self.rfile.read(length) if length else None
            rule = state.decide(self.path)
            if rule is not None and rule["mode"] == "hang":
                time.sleep(3600)  # the client times out; the daemon thread dies with the process
                return
            if rule is not None and rule["mode"] == "status":
                self._send(int(rule["status"]), b"injected fault", {"Content-Type": "text/plain"})
                return
            conn = http.client.HTTPConnection(str(up.hostname), up.port, timeout=60)
            # plain bodies only, so that links can be rewritten
            headers = {k: v for k, v in self.headers.items() if k.lower() not in (*_HOP_HEADERS, "accept-encoding")}
            conn.request(self.command, self.path, body=payload, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if "json" in (resp.getheader("Content-Type") or ""):
                own = f"http://{self.headers.get('Host') or up.netloc}"
                body = body.replace(upstream.encode(), own.encode())
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_HEADERS and k.lower() != "content-length":
                    self.send_header(k, v)
            # a HEAD answer has no body but the upstream's length
            size = str(resp.getheader("Content-Length") or 0) if self.command == "HEAD" else str(len(body))
            self.send_header("Content-Length", size)
            if rule is not None and rule["mode"] == "truncate":
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _forward

    return Handler


@contextmanager
def fault_proxy(upstream: str, host: str = "127.0.0.1", startup_timeout: float = 30.0) -> Iterator[FaultProxy]:
    """Run a proxy for ``upstream`` (an ``http://host:port`` root) in a child process until exit."""
    with http_child(
        ["cloudlulc.testing.faults", upstream, "--host", host], f"the fault proxy for {upstream}", startup_timeout
    ) as url:
        yield FaultProxy(url)


def main(argv: list[str] | None = None) -> None:
    """``python -m cloudlulc.testing.faults UPSTREAM [--host H] [--port P]``: prints ``{"url": ...}``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    serve_http(_handler(args.upstream.rstrip("/"), _State()), args.host, args.port)


if __name__ == "__main__":
    main()
