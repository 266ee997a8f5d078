"""Shared pieces of the CLI: the default plan path and turning errors into one clear line."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Iterator, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from cutover.errors import CutoverError

DEFAULT_PLAN = Path("inventory/rehearsal/plan.yaml")

PlanOption = typer.Option(DEFAULT_PLAN, "--plan", "-p", help="plan YAML", show_default=True)


class Side(str, Enum):
    """A provider of the plan, as the CLI's ``--to``/``--expect`` take it."""

    target = "target"
    source = "source"


def fail(console: Console, exc: CutoverError) -> NoReturn:
    err = Console(stderr=True)
    err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # one line to grep and paste
    raise typer.Exit(getattr(exc, "exit_code", 2))


@contextlib.contextmanager
def handle_errors(console: Console | None = None) -> Iterator[None]:
    """Turn a CutoverError into one red line on stderr and its exit code; never a traceback."""
    try:
        yield
    except CutoverError as exc:
        fail(console or Console(stderr=True), exc)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/yellow]: nothing half-done is left marked as done; run again to resume")
        raise typer.Exit(130) from None
