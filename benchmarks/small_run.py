"""Where a small near-real-time run's time goes: process start and imports, model loading, catalog
search and pairing, inference and writing, publishing (quicklook, STAC items).

Each round maps one acquisition in a fresh process (as a Prefect flow run does) over a small AOI of
the SIMULATED demo catalog served by rustac on loopback, with and without the quicklook, timing
each stage of :func:`cloudlulc.pipeline.map_aoi`. Prints figures; asserts nothing.

    python benchmarks/small_run.py [--size 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudlulc.simulate import write_demo_catalog
from cloudlulc.testing.stac_server import serve_stac
from flows.demo import demo_aoi_and_time

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch  # noqa: F401
t_torch = time.perf_counter()
from cloudlulc.config import Settings
from cloudlulc.model.io import load_model
from cloudlulc.params import MapParams
from cloudlulc.pipeline import stages
t_import = time.perf_counter()
aoi, url, out, quicklook = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
s = Settings(catalog_url=url, device="cpu", quicklook=quicklook)
run = MapParams.model_validate({"aoi": aoi, "time": "2022-01-16", "output": out}).resolved(s)
acqs, _ = stages.search_stage(run)
pairs, _ = stages.pair_stage(run, acqs)
t_search = time.perf_counter()
model, info = load_model(run.weights)
t_model = time.perf_counter()
cubes = stages.cube_stage(run, pairs, s)
times = [stages.infer_write_stage(run, p, c, model, info, s) for p, c in zip(pairs, cubes)]
t_write = time.perf_counter()
stages.publish_stage(run, times, pairs)
t_publish = time.perf_counter()
print(json.dumps({
    "import torch": t_torch - t0, "import cloudlulc": t_import - t_torch, "search + pair": t_search - t_import,
    "load model": t_model - t_search, "cube, infer, write": t_write - t_model,
    "publish (areas, quicklook, STAC)": t_publish - t_write,
}))
"""


def run_once(aoi: str, url: str, out: Path, quicklook: bool) -> dict[str, float]:
    """Wall seconds of one run in a fresh process, and of its phases."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, aoi, url, str(out), "1" if quicklook else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    phases = json.loads(proc.stdout.strip().splitlines()[-1])
    phases["interpreter start and exit"] = wall - sum(phases.values())
    return {"wall": wall, **phases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="AOI side in pixels (10 m)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudlulc-small-") as tmp:
        cat = write_demo_catalog(Path(tmp) / "catalog", seed=0, tile_size=max(720, args.size + 200))
        aoi, _ = demo_aoi_and_time(cat, half_side_m=args.size * 5)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        torch_import = time.perf_counter() - t0
        with serve_stac(cat) as url:
            print(f"AOI {args.size} px, CPU, {os.cpu_count()} cores; `python -c 'import torch'` {torch_import:.2f} s")
            for quicklook in (True, False):
                runs = [run_once(aoi, url, Path(tmp) / f"r{quicklook}{i}.zarr", quicklook) for i in range(args.rounds)]
                walls = [r["wall"] for r in runs]
                span = f"{min(walls):.2f}-{max(walls):.2f}"
                print(f"quicklook={quicklook}: wall median {statistics.median(walls):.2f} s (range {span})")
                for key in runs[0]:
                    if key != "wall":
                        values = [r.get(key, float("nan")) for r in runs]
                        print(f"    {key:<40} {statistics.median(values):6.2f} s")


if __name__ == "__main__":
    main()
