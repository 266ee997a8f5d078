"""``pec-cutover clients``: the organisation's PEC clients (plan ``clients:``) switched by the pec_client role."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cutover import freeze
from cutover.cli._common import PlanOption, Side, handle_errors
from cutover.clients import ClientsChange, switch_clients
from cutover.plan import load_plan

app = typer.Typer(no_args_is_help=True)


@app.command("switch")
def switch(
    to: Side = typer.Option(..., "--to", help="provider the clients should use"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check mode: every host reached, the diff, nothing changed"),
    plan_path: Path = PlanOption,
) -> None:
    """Point every PEC client of the plan's group at the target (or back at the source) and prove each works;
    exit 1 if a client is not working (or, with --dry-run, not reachable)."""
    console = Console()
    with handle_errors(console):
        plan = load_plan(plan_path)
        if not dry_run:
            freeze.ensure_not_frozen(plan, f"PEC clients switch to {to.value} by hand")
        change = switch_clients(plan, to.value, dry_run=dry_run)
        _show(console, change)
        if not change.ok:
            raise typer.Exit(1)


def _show(console: Console, change: ClientsChange) -> None:
    table = Table(title=f"PEC clients to {change.provider}" + (" (check mode)" if change.dry_run else ""))
    columns = ("host", "client", "kind", "endpoint", "login", "changed", "working", "evidence / error")
    for column in columns:
        table.add_column(column, overflow="fold")
    for client in change.clients:
        row = client.as_row()
        table.add_row(*(escape(str(row[c])) for c in columns))
    console.print(table)
    for problem in change.unreachable + change.failures:
        console.print(f"[red]{escape(problem)}[/red]", soft_wrap=True)
    if change.diff:
        console.print(escape(change.diff.rstrip("\n")))
    colour = "green" if change.ok else "red"
    console.print(f"[{colour}]{escape(change.summary())}[/{colour}] ({change.duration_s:.1f} s)")
