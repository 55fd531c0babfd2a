"""Print constraints.txt: the installed versions of everything ``cloudlulc`` with all its extras
needs, read from this environment's package metadata (the venv the tests passed in).

One file pins both installs: ``make`` (the test, pgstac and dev extras) and the image
(``object-store`` and ``kubernetes``), so that the image runs the versions the tests passed with and
a fresh venv resolves without backtracking.

    .venv/bin/python scripts/constraints.py > constraints.txt
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Versions cloudlulc and all its extras install with (pip install -c constraints.txt), as installed
# where the test suite passed (CPython {python}, Linux x86_64). `make` and the image (deploy/Dockerfile)
# both use it: pip then resolves without backtracking through old releases, and the image runs what
# the tests ran. torch's CUDA build comes from the PyTorch index at the same version; its nvidia-*
# wheels are left to torch's own pins. To upgrade: change pyproject.toml, install without this file in
# a fresh venv, run the tests, and regenerate it: .venv/bin/python scripts/constraints.py > constraints.txt"""


#: every extra of pyproject.toml
EXTRAS = ("object-store", "kubernetes", "test", "pgstac", "dev")


def closure(name: str, extras: set[str]) -> dict[str, str]:
    """Canonical name -> installed version of ``name[extras]`` and everything it requires here."""
    env = {k: str(v) for k, v in default_environment().items()}
    seen: dict[str, tuple[str, set[str]]] = {}

    def visit(dist_name: str, wanted: set[str]) -> None:
        key = canonicalize_name(dist_name)
        try:
            dist = distribution(dist_name)
        except PackageNotFoundError:
            return  # an optional dependency not installed on this platform
        version, done = seen.get(key, (dist.version, set()))
        if key in seen and wanted <= done:
            return
        seen[key] = (version, done | wanted)
        for text in dist.requires or []:
            req = Requirement(text)
            extras_here = ["", *sorted(done | wanted)]
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras_here):
                visit(req.name, set(req.extras))

    visit(name, extras)
    seen.pop(canonicalize_name(name), None)
    return {k: v.split("+")[0] for k, (v, _) in sorted(seen.items())}  # torch 2.13.0+cpu -> 2.13.0


def main() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise SystemExit("run this on Linux x86_64, the image's platform")
    print(HEADER.format(python=platform.python_version().rsplit(".", 1)[0]))
    for name, version in closure("cloudlulc", set(EXTRAS)).items():
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
