"""``pec-cutover run|gate|history|serve`` (plug-in; see cutover/cli). Placeholder until the flows issue lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the flow commands to the main CLI."""
