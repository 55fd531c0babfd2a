"""The demo machinery: AOI choice, and ONE end-to-end run through a real Prefect server (slow).

The slow test is what ``make demo`` does, on the session's small SIMULATED catalog: a real
``prefect server`` (temporary PREFECT_HOME), ``python -m flows.serve`` serving the deployments,
``prefect deployment run 'map-aoi/demo'`` from the CLI, the flow run followed to Completed, and the
Zarr store opened with xarray.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pyproj import Geod
from shapely.geometry import box

from flows.demo import HALF_SIDE_M, demo_aoi_and_time, run_demo


def test_demo_aoi_is_small_and_window_holds_two_acquisitions(sim_catalog):
    aoi, window = demo_aoi_and_time(sim_catalog)
    minx, miny, maxx, maxy = map(float, aoi.split(","))
    area_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(box(minx, miny, maxx, maxy))[0]) / 1e6
    # a (2 x HALF_SIDE_M)² UTM square, a little larger in lon/lat bounds: 2-3 km², seconds of CPU
    assert (2 * HALF_SIDE_M / 1000) ** 2 <= area_km2 < 3.0
    s2 = sim_catalog.items_of("sentinel-2-l2a")  # inside the simulated Sentinel-2 tiles
    assert min(i["bbox"][0] for i in s2) < minx < maxx < max(i["bbox"][2] for i in s2)
    assert min(i["bbox"][1] for i in s2) < miny < maxy < max(i["bbox"][3] for i in s2)
    start, end = window.split("/")
    inside = [d for d in sim_catalog.s2_dates if start <= f"{d:%Y-%m-%d}" <= end]
    assert len(inside) == 2


@pytest.mark.slow
def test_demo_end_to_end_through_prefect_server(sim_catalog, tmp_path):
    before = _children()
    result = run_demo(
        tmp_path / "demo-out", sim_catalog, half_side_m=300, timeout=480, extra_env={"CLOUDLULC_DEVICE": "cpu"}
    )
    assert result.state == "COMPLETED"
    assert result.store.is_dir() and result.crs == f"EPSG:{sim_catalog.epsg}"
    assert len(result.times) == 2
    assert len(result.quicklooks) == 2 and all(q.read_bytes()[:4] == b"\x89PNG" for q in result.quicklooks)
    assert "km²" in result.summary_markdown and str(result.store) in result.summary_markdown
    assert (tmp_path / "demo-out" / "logs" / "serve.log").is_file()
    assert _children() <= before, "the demo left processes running"


@pytest.mark.slow
def test_demo_stops_everything_on_sigterm(sim_catalog, tmp_path):
    """Interrupted while its servers start, the demo stops every process it started (marked by env)."""
    marker = f"CLOUDLULC_TEST_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.demo", "--out", str(tmp_path / "out"), "--catalog", str(sim_catalog.root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    lines = []
    for line in proc.stdout:  # wait until rustac is up and the Prefect server is starting
        lines.append(line)
        if "starting a local Prefect server" in line:
            break
    time.sleep(2)
    assert _marked(marker) - {proc.pid}, "the demo should have started rustac and the Prefect server"
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "everything the demo started was stopped" in rest
    assert _marked(marker) == set()


def _marked(marker: str) -> set[int]:
    """PIDs of live processes whose environment carries ``marker`` (the demo's children inherit it)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if (
                    marker.encode() in (entry / "environ").read_bytes()
                    and "Z" not in (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                ):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _children() -> set[int]:
    """PIDs of this process's live (non-zombie) children: the demo must stop every server it started."""
    me, kids = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            kids.add(int(entry.name))
    return kids
