"""Start a throw-away PostgreSQL + PostGIS, migrate pgstac, load a catalog, serve stac-fastapi-pgstac.

This is the engine the Planetary Computer runs, so the integration test exercises the real
conformance, ``query``/``sortby`` and paging behaviour instead of rustac's in-memory subset.
Everything lives in a temporary directory and on free loopback ports; PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` user (created by the Debian package) via
``runuser``. Requires the Debian packages ``postgresql-15`` and ``postgresql-15-postgis-3``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cloudlulc.testing.processes import die_with_parent as _die_with_parent
from cloudlulc.testing.processes import free_port, stop_process, wait_until_ready

PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")


def missing_requirements() -> str | None:
    """Why PostgreSQL + PostGIS cannot be started here (None when they can)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return f"PostgreSQL 15 binaries not found in {PG_BIN} (apt-get install postgresql-15)"
    if not POSTGIS_CONTROL.exists():
        return f"PostGIS for PostgreSQL 15 not found ({POSTGIS_CONTROL}; apt-get install postgresql-15-postgis-3)"
    return None


@dataclass
class PgstacServer:
    dsn: str
    api_url: str
    workdir: Path


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], what: str, timeout: float = 60) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")


@contextmanager
def start_postgres() -> Iterator[tuple[str, Path]]:
    """A running PostgreSQL in a temp dir: yields (dsn, workdir); stopped and removed on exit."""
    why = missing_requirements()
    if why:
        raise RuntimeError(why)
    workdir = Path(tempfile.mkdtemp(prefix="cloudlulc-pg-"))
    data, sock = workdir / "data", workdir / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        for p in (workdir, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = free_port()
    log = workdir / "postgres.log"
    started = False
    try:
        _run(
            _as_pg_user(
                [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            "initdb",
        )
        opts = (
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=50"
        )
        _run(
            _as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"]),
            "pg_ctl start",
        )
        started = True
        yield f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres", workdir
    except Exception as e:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{e}\n--- postgres log ---\n{tail}") from e
    finally:
        if started:
            subprocess.run(
                _as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(workdir, ignore_errors=True)


def load_pgstac(dsn: str, collections: Iterable[dict], items: Iterable[dict]) -> None:
    """``pypgstac migrate`` then load collections and items (insert mode)."""
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    with PgstacDB(dsn=dsn) as db:
        Migrate(db).run_migration()
    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db=db)
        loader.load_collections(iter(list(collections)), Methods.insert)
        loader.load_items(iter(list(items)), Methods.insert)


@contextmanager
def serve_pgstac(collections: Iterable[dict], items: Iterable[dict], timeout: float = 60) -> Iterator[PgstacServer]:
    """PostgreSQL + pgstac loaded with ``collections``/``items`` and stac-fastapi-pgstac in front of it."""
    with start_postgres() as (dsn, workdir):
        load_pgstac(dsn, collections, items)
        port = free_port()
        env = {
            **os.environ,
            "PGUSER": "postgres",
            "PGPASSWORD": "postgres",
            "PGHOST": "127.0.0.1",
            "PGPORT": dsn.rsplit(":", 1)[1].split("/")[0],
            "PGDATABASE": "postgres",
            "DB_MIN_CONN_SIZE": "1",
            "DB_MAX_CONN_SIZE": "4",
            "ENABLE_TRANSACTIONS_EXTENSIONS": "true",  # map outputs are published to it (POST /collections)
        }
        log = open(workdir / "api.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "stac_fastapi.pgstac.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            preexec_fn=_die_with_parent,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(
                lambda: httpx.get(f"{url}/collections", timeout=2).status_code == 200,
                proc,
                timeout=timeout,
                on_exit=lambda code: RuntimeError(
                    f"stac-fastapi-pgstac exited with {code}: {(workdir / 'api.log').read_text()[-2000:]}"
                ),
                on_timeout=lambda: RuntimeError(f"stac-fastapi-pgstac did not answer on {url} within {timeout:.0f} s"),
            )
            yield PgstacServer(dsn=dsn, api_url=url, workdir=workdir)
        finally:
            stop_process(proc)
            log.close()
