"""``pec-cutover check ...`` (plug-in; see cutover/cli). Placeholder until the checks issue lands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``check`` commands to the main CLI."""
