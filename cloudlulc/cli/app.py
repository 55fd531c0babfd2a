"""The Typer application, its global options, and how errors reach the user."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated

import click
import typer
from pydantic import ValidationError

from cloudlulc.console import configure_logging
from cloudlulc.errors import CloudLULCError

app = typer.Typer(
    name="cloudlulc",
    help="Land use / land cover maps under clouds from Sentinel-2 + Sentinel-1 over STAC catalogs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: exceptions that are the user's to fix: one line, no traceback
USER_ERRORS: tuple[type[BaseException], ...] = (
    CloudLULCError,
    ValidationError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    ValueError,
    PermissionError,
)


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and DEBUG logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    configure_logging(level, force=True)


def one_line(exc: BaseException) -> str:
    """An exception as the single line a user reads."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return "invalid parameters: " + "; ".join(parts)
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 a user error, 1 anything else)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="cloudlulc", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("cloudlulc: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"cloudlulc: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an environment failure: the traceback helps the report
        traceback.print_exc()
        print(f"cloudlulc: unexpected error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
