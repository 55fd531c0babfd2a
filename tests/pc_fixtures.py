"""Where the real Planetary Computer fixture JSON lives (``../shared/fixtures/pc-items``).

CI clones the project with ``shared/`` beside it; a developer's scratch clone elsewhere can point
``CLOUDLULC_PC_FIXTURES`` at the folder. One finder, so every test module looks in the same places.
"""

from __future__ import annotations

import os
from pathlib import Path


def find_pc_fixtures() -> Path | None:
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "shared" / "fixtures" / "pc-items", Path("/work/shared/fixtures/pc-items")]
    if os.environ.get("CLOUDLULC_PC_FIXTURES"):
        candidates.insert(0, Path(os.environ["CLOUDLULC_PC_FIXTURES"]))
    return next((c for c in candidates if c.is_dir()), None)


#: the fixture folder, or a path that does not exist (tests using it then fail naming it)
PC_FIXTURES: Path = find_pc_fixtures() or Path("../shared/fixtures/pc-items")
