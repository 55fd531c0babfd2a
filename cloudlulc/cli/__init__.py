"""The ``cloudlulc`` command: map, search, export, settings, demo, dataset, train, evaluate.

Built with Typer (Click underneath, already a dependency through Prefect): commands and their
``--help`` come from type-hinted functions, so the CLI cannot drift from the options it passes on.
Each command calls the library (:mod:`cloudlulc.pipeline`, :mod:`cloudlulc.store`...); only
``demo`` starts Prefect, as a separate process. A user error prints one line and exits with 2;
``--debug`` shows the traceback.
"""

from cloudlulc.cli import mapping, info, jobs  # noqa: F401, I001  (registers the commands, in this order)
from cloudlulc.cli.app import app, main

__all__ = ["app", "main"]
