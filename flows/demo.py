"""The demo: one AOI mapped end to end through a real Prefect server (``make demo``).

What it does, all locally and offline, on SIMULATED data (:mod:`cloudlulc.simulate`):

1. writes the simulated Planetary-Computer-shaped catalog to ``.demo/catalog`` (deterministic; kept
   for the next run);
2. serves it as a STAC API with ``rustac serve`` (:func:`cloudlulc.testing.stac_server.serve_stac`);
3. starts a throwaway ``prefect server`` (temporary ``PREFECT_HOME``, SQLite, free port);
4. serves the deployments (``python -m flows.serve``) with the demo defaults in the environment;
5. runs ``prefect deployment run map-aoi/demo`` — the CLI, as a user would — and follows the flow
   run through the Prefect API until it is final;
6. checks the Zarr store opens with xarray and carries a CRS, prints the store, the quicklooks and
   the run summary the flow published as an artifact;
7. stops everything it started, also on Ctrl-C or an error.

The demo AOI is a 1.6 km x 1.6 km square in the middle of the simulated scene (about 2.6 km²) and
the window holds two acquisitions: a nearly clear one and one under heavy cloud.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudlulc.testing.stac_server import serve_stac
from flows.local_server import (
    LocalServerError,
    flow_run_artifacts,
    flow_run_message,
    prefect_server,
    run_deployment_cli,
    serve_deployments,
    wait_for_flow_run,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = Path(".demo/catalog")
DEFAULT_OUT = Path("demo-out")
DEMO_DEPLOYMENT = "map-aoi/demo"
#: half the side of the demo AOI in metres (1.6 km square, ~2.6 km²: seconds of CPU inference)
HALF_SIDE_M = 800.0


class DemoError(RuntimeError):
    """The demo did not complete; the message says which step and where its log is."""


@dataclass
class DemoResult:
    flow_run_id: str
    state: str
    store: Path
    quicklooks: list[Path]
    times: list[str]
    crs: str
    summary_markdown: str
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def load_or_write_catalog(catalog_dir: Path, seed: int = 0) -> Any:
    """The simulated catalog in ``catalog_dir``, written first if it is not there (deterministic)."""
    from cloudlulc.simulate import SimCatalog, write_demo_catalog

    if (catalog_dir / "simcatalog.json").is_file():
        return SimCatalog.load(catalog_dir)
    _say(f"writing the SIMULATED demo catalog to {catalog_dir} (once; about a minute)")
    return write_demo_catalog(catalog_dir, seed=seed)


def demo_aoi_and_time(cat: Any, half_side_m: float = HALF_SIDE_M) -> tuple[str, str]:
    """A small AOI (bbox text, lon/lat) in the middle of the catalog, and a window of two acquisitions.

    The window runs from the clearest to the cloudiest-but-one date so the demo shows both cases.
    """
    from pyproj import Transformer

    minx, miny, maxx, maxy = cat.aoi_bounds_utm
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    tr = Transformer.from_crs(cat.epsg, 4326, always_xy=True)
    lon0, lat0, lon1, lat1 = tr.transform_bounds(cx - half_side_m, cy - half_side_m, cx + half_side_m, cy + half_side_m)
    aoi = f"{lon0:.6f},{lat0:.6f},{lon1:.6f},{lat1:.6f}"
    dates = sorted(cat.s2_dates)
    first, last = (dates[1], dates[2]) if len(dates) >= 3 else (dates[0], dates[-1])
    return aoi, f"{first:%Y-%m-%d}/{last:%Y-%m-%d}"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so every context manager stops what it started."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. under a test runner's thread): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    out_dir: Path = DEFAULT_OUT,
    catalog: Any = DEFAULT_CATALOG,
    *,
    ui: bool = False,
    timeout: float = 540.0,
    keep_open: bool = False,
    extra_env: dict[str, str] | None = None,
    half_side_m: float = HALF_SIDE_M,
) -> DemoResult:
    """Run the demo; returns what it produced. Raises :class:`DemoError` naming the failed step."""
    t0 = time.monotonic()
    steps: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        now = time.monotonic()
        steps[name] = round(now - since, 1)
        return now

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = out_dir / "logs"
    store = out_dir / "demo.zarr"
    qdir = out_dir / "quicklooks"
    for stale in (store, qdir):  # a fresh result each time (the store would otherwise keep old slices)
        shutil.rmtree(stale, ignore_errors=True)
    logs.mkdir(exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()

    t = time.monotonic()
    cat = catalog if hasattr(catalog, "aoi_bounds_utm") else load_or_write_catalog(Path(catalog).resolve())
    aoi, window = demo_aoi_and_time(cat, half_side_m)
    t = step("catalog", t)
    home = Path(tempfile.mkdtemp(prefix="cloudlulc-prefect-"))
    try:
        with _sigterm_as_interrupt(), serve_stac(cat) as stac_url:
            _say(f"STAC API (rustac serve) of the SIMULATED catalog: {stac_url}")
            t = step("stac", t)
            _say("starting a local Prefect server (temporary PREFECT_HOME, SQLite) ...")
            with prefect_server(home, ui=ui, log_path=logs / "prefect-server.log") as server:
                t = step("prefect_server", t)
                _say(f"Prefect API: {server.api_url}" + (f"  UI: {server.ui_url}" if ui else ""))
                env = {
                    "CLOUDLULC_CATALOG_URL": stac_url,
                    "CLOUDLULC_DEMO_AOI": aoi,
                    "CLOUDLULC_DEMO_TIME": window,
                    "CLOUDLULC_DEMO_OUTPUT": str(store),
                    "CLOUDLULC_NRT_OUTPUT": str(out_dir / "nrt.zarr"),
                    "CLOUDLULC_NRT_PAUSED": "true",
                    "CLOUDLULC_RETRY_DELAY_SECONDS": "2",
                    "PREFECT_LOGGING_LEVEL": "INFO",
                    **(extra_env or {}),
                }
                _say(f"serving deployments (python -m flows.serve; log {logs / 'serve.log'}) ...")
                with serve_deployments(server, env, wait_for=[DEMO_DEPLOYMENT], log_path=logs / "serve.log", cwd=REPO):
                    t = step("serve", t)
                    _say(f"prefect deployment run '{DEMO_DEPLOYMENT}'  (AOI {aoi}, {window})")
                    run_id = run_deployment_cli(server, DEMO_DEPLOYMENT, cwd=REPO)
                    _say(f"flow run {run_id}")
                    state = wait_for_flow_run(server, run_id, timeout=timeout, on_state=lambda s: _say(f"  state: {s}"))
                    t = step("flow_run", t)
                    if state != "COMPLETED":
                        raise DemoError(
                            f"flow run {run_id} ended {state}: {flow_run_message(server, run_id)}\n"
                            f"see {logs / 'serve.log'} for the run's logs"
                        )
                    summary = next(
                        (a["data"] for a in flow_run_artifacts(server, run_id) if a["key"] == "map-aoi-summary"), ""
                    )
                    if keep_open:
                        _say(f"done; Prefect UI at {server.ui_url} -- Ctrl-C to stop everything")
                        with contextlib.suppress(KeyboardInterrupt):
                            while True:
                                time.sleep(3600)
    except LocalServerError as exc:
        raise DemoError(str(exc)) from exc
    finally:
        shutil.rmtree(home, ignore_errors=True)

    times, crs = verify_store(store)
    step("verify", t)
    quicklooks = sorted(qdir.glob("*.png"))
    return DemoResult(
        run_id, state, store, quicklooks, times, crs, str(summary), round(time.monotonic() - t0, 1), steps
    )


def verify_store(store: Path) -> tuple[list[str], str]:
    """Open the mosaic with xarray as any user would; require ``lulc``, a time axis and a CRS."""
    import numpy as np
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    if not store.exists():
        raise DemoError(f"the flow completed but {store} does not exist")
    ds = xr.open_zarr(store, decode_coords="all")
    if "lulc" not in ds or "time" not in ds["lulc"].dims or ds.sizes["time"] < 1:
        raise DemoError(f"{store} has no lulc (time, y, x) data: {ds}")
    crs = ds["lulc"].rio.crs
    if crs is None:
        raise DemoError(f"{store} has no CRS (spatial_ref grid mapping missing)")
    values = np.unique(ds["lulc"].values)
    if not set(values.tolist()) - {255}:
        raise DemoError(f"{store}: every lulc pixel is nodata")
    return [str(t)[:19] + "Z" for t in ds["time"].values], str(crs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default demo-out/)")
    ap.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="simulated catalog directory")
    ap.add_argument("--ui", action="store_true", help="enable the Prefect UI of the demo server")
    ap.add_argument("--keep-open", action="store_true", help="keep the servers up after the run (Ctrl-C stops)")
    ap.add_argument("--timeout", type=float, default=540.0, help="seconds to wait for the flow run")
    a = ap.parse_args(argv)
    try:
        r = run_demo(a.out, a.catalog, ui=a.ui or a.keep_open, timeout=a.timeout, keep_open=a.keep_open)
    except KeyboardInterrupt:
        _say("interrupted; everything the demo started was stopped")
        return 130
    except DemoError as exc:
        _say(f"FAILED: {exc}")
        return 1
    text = r.summary_markdown.split("### Quicklook")[0].strip()
    print("\n" + text + "\n")
    _say(f"flow run {r.flow_run_id}: {r.state} in {r.seconds:.0f} s (steps: {r.steps})")
    _say(f"Zarr store: {r.store}  ({len(r.times)} time(s): {', '.join(r.times)}; CRS {r.crs})")
    for q in r.quicklooks:
        _say(f"quicklook:  {q}")
    _say("all data above is SIMULATED (cloudlulc.simulate); servers stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
