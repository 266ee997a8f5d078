"""``pec-cutover copy``: placeholder until the copy engine lands (issue: bulk mailbox copy)."""

from __future__ import annotations

import typer


def copy() -> None:
    """Copy mailboxes from source to target."""
    typer.echo("copy: not implemented yet")
    raise typer.Exit(3)
