"""``cloudlulc settings``: every ``CLOUDLULC_*`` setting, its value here, its default and meaning."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.table import Table

from cloudlulc.cli.app import app


def settings_rows() -> list[dict[str, Any]]:
    """One row per setting: environment variable, current value, default, meaning."""
    from cloudlulc.config import Settings, get_settings

    current = get_settings()
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        rows.append(
            {
                "variable": f"CLOUDLULC_{name.upper()}",
                "value": _shown(getattr(current, name)),
                "default": None if default is PydanticUndefined else default,
                "meaning": " ".join((field.description or "").split()),
            }
        )
    return rows


def _shown(value: Any) -> Any:
    """Settings as they may be shown: URLs without credentials or signatures."""
    from cloudlulc.stac.urls import redact

    return redact(value) if isinstance(value, str) else value


def settings_markdown() -> str:
    """The settings as a Markdown table (the README's is generated with it)."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for r in settings_rows():
        default = "" if r["default"] is None else f"`{r['default']}`"
        lines.append(f"| `{r['variable']}` | {default} | {r['meaning'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


@app.command("settings")
def settings_command(
    json_out: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="print as a Markdown table (defaults)")] = False,
) -> None:
    """Every CLOUDLULC_* setting: its value in this environment, its default, its meaning."""
    rows = settings_rows()
    if json_out:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return
    table = Table(title="CloudLULC settings (environment variables)")
    for col in ("variable", "value", "default", "meaning"):
        table.add_column(col, overflow="fold")
    for r in rows:
        changed = r["value"] != r["default"]
        value = f"[bold]{r['value']}[/bold]" if changed else str(r["value"])
        table.add_row(r["variable"], value, str(r["default"]), r["meaning"])
    Console().print(table)
