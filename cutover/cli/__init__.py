"""The ``pec-cutover`` command line.

Core sub-commands live beside this file; ``check`` (checks/) and the flow commands (flows/) are plug-ins
registered through the ``pec_cutover.cli`` entry-point group, so this package imports neither.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cutover.cli import clients as clients_cli
from cutover.cli import copy as copy_cli
from cutover.cli import dns as dns_cli
from cutover.cli import evidence as evidence_cli
from cutover.cli import sandbox as sandbox_cli
from cutover.cli import server as server_cli
from cutover.cli._common import DEFAULT_PLAN, fail, handle_errors
from cutover.errors import CutoverError
from cutover.inventory import load_inventory
from cutover.plan import load_plan

app = typer.Typer(
    name="pec-cutover",
    help="Move a PEC domain between providers: readiness, copy, DNS switch, checks, rollback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
plan_app = typer.Typer(help="Validate and show a cutover plan.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
app.add_typer(sandbox_cli.app, name="sandbox", help="Start, stop, seed and inspect the local sandbox servers.")
app.add_typer(dns_cli.app, name="dns", help="Show and change the domain's MX and TTLs (Ansible + checks).")
app.add_typer(clients_cli.app, name="clients", help="Point the organisation's PEC clients at a provider (Ansible).")
app.add_typer(copy_cli.app, name="copy", help="Copy mailboxes from source to target, verified and resumable; "
                                             "approve-skipped: accept messages the target refused.")
app.add_typer(server_cli.app, name="server")
app.add_typer(evidence_cli.app, name="evidence")
app.command(name="doctor")(evidence_cli.doctor)
app.add_typer(server_cli.operator_app, name="operator")
app.command(name="prefect", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            help="Run `prefect ARGS...` with the plan's server auth string (e.g. `pec-cutover prefect --plan P "
                 "-- worker start --pool pec-cutover`).")(server_cli.prefect)


@plan_app.command("check")
def plan_check(path: Path = typer.Argument(DEFAULT_PLAN, help="plan YAML")) -> None:
    """Validate a plan and its inventory; print a summary."""
    console = Console()
    with handle_errors(console):
        plan = load_plan(path)
        inventory = load_inventory(plan)
        table = Table(title=f"plan {path}", show_header=False)
        for key, value in plan.summary():
            table.add_row(key, value)
        table.add_row("mailboxes", f"{len(inventory)} ({len(inventory.canaries)} canaries)")
        console.print(table)
        console.print("[green]plan OK[/green]")


_loaded: set[str] = set()


def load_plugins() -> None:
    """Register the plug-in commands (checks, flows) once."""
    for ep in entry_points(group="pec_cutover.cli"):
        if ep.name in _loaded:
            continue
        _loaded.add(ep.name)
        try:
            register = ep.load()
        except ImportError as exc:  # a broken plug-in must not take the core commands down
            print(f"pec-cutover: plug-in {ep.name} not loaded ({exc})", file=sys.stderr)
            continue
        register(app)


def main() -> None:
    # No telemetry from Prefect's embedded server (it would try to reach the internet); an operator can still
    # set these explicitly. Done before the plug-ins import Prefect, which reads settings at import.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    load_plugins()
    try:
        app()
    except CutoverError as exc:  # last line of defence; commands already use handle_errors
        fail(Console(stderr=True), exc)


__all__ = ["app", "main", "load_plugins"]
