"""Start and stop local Prefect processes: a throwaway ``prefect server``, ``python -m flows.serve``,
the ``prefect`` CLI (``prefect deploy``) and a work pool's worker.

Used by the demo (``flows/demo.py``) and the end-to-end and deployment tests. Everything runs with a temporary
``PREFECT_HOME`` so nothing touches the user's Prefect profile or database, on a free port, and is
stopped (process group: SIGTERM, then SIGKILL) when the context exits, also on Ctrl-C or errors.

The demo server uses SQLite, which is fine for one user; production runs the server on PostgreSQL
(``PREFECT_API_DATABASE_CONNECTION_URL``, see ``deploy/README.md``): SQLite logs "database is locked"
under concurrent load.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx

from cloudlulc.testing.processes import free_port, wait_until_ready

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class LocalServerError(RuntimeError):
    """A local Prefect process did not start or a run did not finish; the message says where the log is."""


@dataclass
class PrefectServer:
    api_url: str
    ui_url: str
    home: Path
    log_path: Path

    def env(self) -> dict[str, str]:
        """Environment for clients of this server (the CLI, ``flows.serve``, flow-run subprocesses)."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen, name: str, timeout: float = 20.0) -> None:
    """Stop ``proc`` and its children (it was started in its own session, so its group id is its pid)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    raise LocalServerError(f"{name} (pid {proc.pid}) did not stop")


@contextlib.contextmanager
def _process(
    cmd: list[str], env: Mapping[str, str], log_path: Path, name: str, cwd: Path | None = None
) -> Iterator[subprocess.Popen]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        _stop(proc, name)


@contextlib.contextmanager
def prefect_server(
    home: Path, *, port: int | None = None, ui: bool = False, timeout: float = 180.0, log_path: Path | None = None
) -> Iterator[PrefectServer]:
    """Run ``prefect server start`` (SQLite under ``home``) until the context exits.

    Waits for ``/api/health``; raises :class:`LocalServerError` with the log tail if it does not come up.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = PrefectServer(
        api_url=api,
        ui_url=f"http://127.0.0.1:{port}",
        home=home,
        log_path=Path(log_path) if log_path else home / "server.log",
    )
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": "",  # the server itself must not point at another API
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _process(cmd, env, server.log_path, "prefect server") as proc:
        wait_until_ready(
            lambda: httpx.get(f"{api}/health", timeout=2.0).status_code == 200,
            proc,
            timeout=timeout,
            interval=0.5,
            on_exit=lambda code: LocalServerError(
                f"prefect server exited with {code}; log {server.log_path}:\n{_tail(server.log_path)}"
            ),
            on_timeout=lambda: LocalServerError(
                f"prefect server not healthy after {timeout:.0f} s; log {server.log_path}:\n{_tail(server.log_path)}"
            ),
        )
        yield server


@contextlib.contextmanager
def serve_deployments(
    server: PrefectServer,
    env: Mapping[str, str],
    *,
    wait_for: list[str],
    log_path: Path,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> Iterator[subprocess.Popen]:
    """Run ``python -m flows.serve`` against ``server`` until every deployment in ``wait_for`` exists."""
    full_env = {**server.env(), **env}
    cmd = [sys.executable, "-m", "flows.serve"]
    with _process(cmd, full_env, log_path, "flows.serve", cwd=cwd) as proc:
        deadline = time.monotonic() + timeout
        pending = list(wait_for)
        while pending:
            if proc.poll() is not None:
                raise LocalServerError(f"flows.serve exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}")
            name = pending[0]
            flow_name, dep_name = name.split("/", 1)
            r = httpx.get(f"{server.api_url}/deployments/name/{flow_name}/{dep_name}", timeout=5.0)
            if r.status_code == 200:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"deployment {name} not registered after {timeout:.0f} s; log {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield proc


def prefect_cli(
    server: PrefectServer,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``prefect --no-prompt ARGS`` against ``server`` (as an operator types it); raises
    :class:`LocalServerError` with the output when it fails."""
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", *args]
    proc = subprocess.run(
        cmd, env={**os.environ, **server.env(), **(env or {})}, capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    if proc.returncode != 0:
        raise LocalServerError(f"`prefect {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def pool_worker(
    server: PrefectServer,
    pool: str,
    env: Mapping[str, str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> Iterator[subprocess.Popen]:
    """``prefect worker start --pool POOL`` against ``server`` until the context exits; waits until the
    pool lists the worker. It polls every second (``PREFECT_WORKER_QUERY_SECONDS``) unless ``env`` says."""
    full_env = {"PREFECT_WORKER_QUERY_SECONDS": "1", **server.env(), **env}
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    with _process(cmd, full_env, log_path, f"worker of {pool}", cwd=cwd) as proc:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise LocalServerError(f"the worker exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}")
            r = httpx.post(f"{server.api_url}/work_pools/{pool}/workers/filter", json={}, timeout=5.0)
            if r.status_code == 200 and r.json():
                break
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"no worker of {pool} online after {timeout:.0f} s; log {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield proc


def run_deployment_cli(
    server: PrefectServer, name: str, params: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """``prefect deployment run NAME`` (the CLI, as a user would); returns the flow run id it printed."""
    cmd = [sys.executable, "-m", "prefect", "deployment", "run", name]
    for k, v in (params or {}).items():
        cmd += ["--param", f"{k}={v}"]
    proc = subprocess.run(cmd, env={**os.environ, **server.env()}, capture_output=True, text=True, cwd=cwd, timeout=120)
    if proc.returncode != 0:
        raise LocalServerError(
            f"`prefect deployment run {name}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    m = re.search(r"UUID:\s*(" + _UUID_RE.pattern + ")", proc.stdout) or _UUID_RE.search(proc.stdout)
    if not m:
        raise LocalServerError(f"no flow run id in the output of `prefect deployment run {name}`:\n{proc.stdout}")
    return m.group(1) if m.groups() else m.group(0)


def wait_for_flow_run(
    server: PrefectServer, flow_run_id: str, *, timeout: float = 600.0, on_state: Callable[[str], None] | None = None
) -> str:
    """Poll the flow run through the Prefect client until it is final; returns the state type name."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    last = None
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(UUID(flow_run_id))
                state = run.state.type.value if run.state else "PENDING"
                name = (run.state.name or state) if run.state else state  # Prefect names every state
                if name != last:
                    last = name
                    if on_state:
                        on_state(name)
                if state in FINAL_STATES:
                    return state
                if time.monotonic() > deadline:
                    raise LocalServerError(f"flow run {flow_run_id} still {name} after {timeout:.0f} s")
                time.sleep(1.0)


def flow_run_message(server: PrefectServer, flow_run_id: str) -> str:
    """The final state's message (Prefect puts the exception text there on failure)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            return (run.state.message or "") if run.state else ""


def flow_run_artifacts(server: PrefectServer, flow_run_id: str) -> list[dict[str, object]]:
    """Artifacts (key, type, description, data) a flow run published, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
    return [
        {"key": a.key, "type": a.type, "description": a.description, "data": a.data}
        for a in sorted(arts, key=lambda a: a.created or 0)
    ]
