"""Pack the Python packages the lent GPU machine lacks into ``.whl/site.tar.xz``, for
``scripts/device_check.sh``.

The device tool's GPU machine (../.library/device) has Python 3.12 with CUDA PyTorch, numpy, scipy
and the usual utilities, but reaches no registry: the geospatial stack this project reads and
writes with must travel with the working tree, within the tool's 64 MiB per call (working tree
included). As wheels they come to 63 MiB (rasterio alone 34), too much; installed here for
CPython 3.12 with ``pip install --target`` and packed with xz they come to about 45 MiB, and the
machine only unpacks them (no pip run there).

``CARRIED`` is what ``benchmarks/gpu_check.py`` and ``benchmarks/inference.py`` import that the
machine's package list (KINDS.md there, read 2026-11-17) does not hold, plus xarray, pandas and
typing_extensions so that their versions are the ones tested here. Versions are read from the
environment this runs in (the project's ``.venv``): the GPU run uses what CI tests.

Run here, in the repository root (``.whl/`` is git-ignored)::

    .venv/bin/python scripts/device_site.py

then call the device tool's ``run`` with ``carry: [".whl"]`` and ``bash scripts/device_check.sh``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path

#: distributions to carry (the GPU machine's Python lacks them, or has versions not tested here)
CARRIED = (
    # reading COGs and CRS
    "rasterio",
    "affine",
    "cligj",
    "click-plugins",
    "pyproj",
    "shapely",
    "rioxarray",
    # cubes, chunked compute and the Zarr store
    "stackstac",
    "dask",
    "distributed",
    "partd",
    "locket",
    "tblib",
    "tornado",
    "zict",
    "xarray",
    "pandas",
    "pytz",
    "tzdata",
    "zarr",
    "numcodecs",
    "donfig",
    "google-crc32c",
    # STAC items and settings
    "pystac",
    "pystac-core",
    "lazy-importer",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "importlib-metadata",
    "orjson",
)
#: pystac 1.15 ships its extensions as separate distributions, all imported with it
PYSTAC_EXTENSIONS_PREFIX = "pystac-ext-"

PYTHON = "3.12"  # the GPU machine's python3
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
LIMIT_MIB = 64  # what the device tool carries per call, working tree included
#: installed folders nothing imports at run time: the test suites of the carried packages
#: (``testing`` modules stay: xarray and pandas import theirs)
PRUNE = ("tests",)


def pinned() -> list[str]:
    """``name==version`` of every carried distribution as installed in this environment."""
    names = list(CARRIED) + sorted(
        {d.metadata["Name"] for d in distributions() if d.metadata["Name"].lower().startswith(PYSTAC_EXTENSIONS_PREFIX)}
    )
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            raise SystemExit(
                f"{name} is not installed in {sys.prefix}: run this with the project's venv "
                "(make venv), whose versions the GPU run must match"
            ) from None
    return pins


def pip_platform_args() -> list[str]:
    return [
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        *[a for plat in PLATFORMS for a in ("--platform", plat)],
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(".whl/site.tar.xz"))
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        pip = [sys.executable, "-m", "pip", "--quiet"]
        subprocess.run([*pip, "download", "--no-deps", *pip_platform_args(), "-d", str(wheels), *pinned()], check=True)
        subprocess.run(
            [
                *pip,
                "install",
                "--no-index",
                "--no-deps",
                "--no-compile",
                *pip_platform_args(),
                "--target",
                str(site),
                *map(str, sorted(wheels.glob("*.whl"))),
            ],
            check=True,
        )
        for top in site.iterdir():
            for name in PRUNE:
                if (top / name).is_dir() and (top / "__init__.py").exists():
                    shutil.rmtree(top / name)
        partial = args.out.with_suffix(".partial")
        with partial.open("wb") as f:  # a run cut short leaves the previous archive in place
            tar = subprocess.Popen(["tar", "-C", str(site), "-cf", "-", "."], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-9", "-T0"], stdin=tar.stdout, stdout=f, check=True)
            if tar.wait():
                raise SystemExit("tar failed")
        partial.replace(args.out)
        n_wheels = len(list(wheels.glob("*.whl")))
    size = args.out.stat().st_size / 2**20
    print(
        f"{n_wheels} distributions for CPython {PYTHON} packed into {args.out}: {size:.1f} MiB "
        f"(the device tool carries {LIMIT_MIB} MiB per call, working tree included)"
    )
    return 0 if size < LIMIT_MIB - 8 else 1


if __name__ == "__main__":
    sys.exit(main())
