"""``pec-cutover check webmail|access|readiness`` (plug-in registered through the ``pec_cutover.cli`` entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cutover.cli._common import PlanOption, handle_errors
from cutover.inventory import load_inventory
from cutover.plan import Plan, load_plan
from cutover.results import CheckResult

check_app = typer.Typer(help="Probe the target: webmail, canary mail access, readiness of every mailbox.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``check`` commands to the main CLI."""
    app.add_typer(check_app, name="check")


def _results_table(title: str, results: list[CheckResult]) -> Table:
    table = Table(title=title)
    for column in ("check", "target", "ok", "expected", "observed", "reason", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        row = r.as_row()
        row.pop("seconds")
        ok = "[green]yes[/green]" if r.ok else "[red]NO[/red]"
        table.add_row(*(ok if k == "ok" else escape(str(v)) for k, v in row.items()))
    return table


def _finish(console: Console, results: list[CheckResult], what: str) -> None:
    failed = [r for r in results if not r.ok]
    if not results:
        console.print(f"[yellow]{what}: nothing to check[/yellow]")
        raise typer.Exit(1)
    if failed:
        console.print(f"[red]{what}: {len(failed)}/{len(results)} checks failed[/red]")
        raise typer.Exit(1)
    console.print(f"[green]{what}: all {len(results)} checks passed[/green]")


@check_app.command("webmail")
def webmail(plan: Path = PlanOption) -> None:
    """Probe every webmail URL of the target (DNS, TCP, TLS, certificate, status, markers, time)."""
    from checks.webmail import webmail_checks

    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        results = webmail_checks(loaded)
    console.print(_results_table(f"webmail of {loaded.target.name}", results))
    _finish(console, results, "webmail")


def _ledger(plan: Plan, use: bool) -> Any:
    """The copy ledger when asked for and present; imported lazily so the checks work before it exists."""
    if not use or (not getattr(plan, "ledger_url", None) and not Path(plan.ledger).exists()):
        return None
    try:
        from cutover.ledger import open_ledger  # type: ignore[import-not-found]
    except ImportError:
        return None
    return open_ledger(plan)


@check_app.command("access")
def access(plan: Path = PlanOption,
           ledger: bool = typer.Option(True, "--ledger/--no-ledger",
                                       help="compare INBOX counts with the ledger's verified counts")) -> None:
    """Canary mailboxes on the target: IMAP login, folders, INBOX (vs ledger); SMTP AUTH when configured."""
    from checks.imap import canary_logins
    from checks.smtp import smtp_logins

    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        inventory = load_inventory(loaded)
        results = canary_logins(loaded, inventory, ledger=_ledger(loaded, ledger))
        results += smtp_logins(loaded, inventory)
    console.print(_results_table(f"canary access on {loaded.target.name}", results))
    _finish(console, results, "access")


@check_app.command("readiness")
def readiness(plan: Path = PlanOption,
              csv: Optional[Path] = typer.Option(None, "--csv", help="write the per-mailbox CSV here "
                                                 "(default: <reports_dir>/readiness.csv when the plan has one)"),
              all_rows: bool = typer.Option(False, "--all", help="list ready mailboxes too")) -> None:
    """Every mailbox: source and target login, quota; who must act and what to do. Exit 1 if any is not ready."""
    from checks.readiness import readiness as probe

    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        inventory = load_inventory(loaded)
        with console.status(f"probing {len(inventory)} mailboxes …") as status:
            report = probe(loaded, inventory,
                           on_progress=lambda done, total, _m: status.update(f"probed {done}/{total} mailboxes"))
        path = csv or (Path(loaded.reports_dir) / "readiness.csv" if loaded.reports_dir else None)
        if path is not None:
            report.write_csv(path)

    table = Table(title=f"readiness {loaded.source.name} → {loaded.target.name}")
    for column in ("address", "status", "side", "action", "detail"):
        table.add_column(column, overflow="fold")
    for row in report.rows():
        if row["status"] == "ready" and not all_rows:
            continue
        colour = "green" if row["status"] == "ready" else "red"
        table.add_row(escape(row["address"]), f"[{colour}]{row['status']}[/{colour}]", row["side"],
                      escape(row["action"]), escape(row["detail"]))
    if table.row_count:
        console.print(table)
    for profile in report.providers:
        for line in profile.lines():
            console.print(escape(line), soft_wrap=True)
    summary = report.summary()
    console.print(", ".join(f"{k}: {v}" for k, v in summary.items() if v or k in ("ready", "total")))
    if path is not None:
        console.print(f"CSV for the people who must act: {path}")
    if not report.ok:
        console.print(f"[red]{summary['total'] - summary['ready']} mailbox(es) not ready[/red]")
        raise typer.Exit(1)
    console.print(f"[green]all {summary['total']} mailboxes ready[/green]")
