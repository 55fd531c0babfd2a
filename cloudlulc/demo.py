"""``python -m cloudlulc.demo`` — what ``make demo`` runs.

The demo goes through Prefect (a local server, served deployments, ``prefect deployment run``), so
its orchestration lives in :mod:`flows.demo`; this entry module only hands over to it. It is the one
module under ``cloudlulc/`` that reaches Prefect, and only when run, never when the library is imported.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from flows.demo import main as demo_main

    return demo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
