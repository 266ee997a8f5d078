"""``pec-cutover dns``: placeholder until the DNS issue lands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
