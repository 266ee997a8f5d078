"""``pec-cutover dns``: show what every server and resolver says about the MX, switch it, move its TTL."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cutover.cli._common import PlanOption, Side, handle_errors
from cutover.dnschange import DnsChange, append_journal, set_ttl, switch_mx
from cutover import freeze
from cutover.errors import CutoverError
from cutover.plan import load_plan
from cutover.rollback_deadline import require_rollback_allowed
from cutover.ttl import restore_due

app = typer.Typer(no_args_is_help=True)


@app.command("status")
def status(
    plan_path: Path = PlanOption,
    expect: Side | None = typer.Option(None, "--expect", help="provider whose MX is expected (default: what the primary serves)"),
) -> None:
    """Table of what each authoritative server and resolver answers vs the expected MX; exit 1 if any differs."""
    console = Console()
    with handle_errors(console):
        plan = load_plan(plan_path)
        # Lazy import: cutover/ does not depend on checks/; this command is the one place that renders probes.
        from checks.dns import dns_status, infer_expect, render_status

        side = expect.value if expect is not None else infer_expect(plan)
        if side is None:
            console.print("[yellow]the primary did not answer, or serves neither provider's MX set: cannot tell "
                          "which to expect; showing against the target's (pass --expect source|target)[/yellow]",
                          soft_wrap=True)
            side = "target"
        results = dns_status(plan, side)
        console.print(render_status(results, title=f"DNS of {plan.dns.zone}: expecting the {side} MX "
                                                   f"({plan.provider(side).name})"))
        bad = [r for r in results if not r.ok]
        if bad:
            console.print(f"[red]{len(bad)} of {len(results)} checks failed[/red]")
            raise typer.Exit(1)
        console.print(f"[green]all {len(results)} checks ok[/green]")


@app.command("switch")
def switch(
    to: Side = typer.Option(..., "--to", help="provider whose MX the zone should serve"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check mode: show the change, make none"),
    emergency: str = typer.Option(None, "--emergency", metavar="REASON",
                                  help="with --to source: switch back even while a cutover holds the freeze "
                                       "(when the rollback flow cannot run); recorded in the freeze marker"),
    override: str = typer.Option(None, "--override", metavar="REASON",
                                 help="with --to source: switch back after the rollback deadline (plan rollback_until, "
                                      "else the switch + 7 days) anyway"),
    plan_path: Path = PlanOption,
) -> None:
    """Replace the zone's MX set with the target's (cutover) or the source's (rollback), through Ansible."""
    console = Console()
    with handle_errors(console):
        plan = load_plan(plan_path)
        if emergency and to.value != "source":
            raise CutoverError("--emergency only switches back to the source (the safe side)")
        if to.value == "source" and not dry_run:
            # Back to the source after the deadline points the domain's mail at a provider that may have dropped it.
            late = require_rollback_allowed(plan, override_reason=override)
            if late.passed:
                console.print(f"[yellow]{escape(late.describe())}[/yellow]", soft_wrap=True)
                append_journal(plan, {"action": "rollback_override", "by": "dns switch --to source",
                                      "reason": late.override_reason, "deadline": late.deadline.isoformat()})
                if emergency:
                    emergency = f"{emergency} ({late.describe()})"
        if not dry_run and not emergency:
            freeze.ensure_not_frozen(plan, f"DNS switch to {to.value} by hand")
        if emergency and not dry_run:
            # Like the rollback flow: take the freeze over (never from another rollback), keep it, say why.
            run = f"emergency-dns-{os.getpid()}"
            freeze.acquire(plan, "rollback", run)
            freeze.keep_after_failure(plan, run, f"emergency MX switch back by hand: {emergency}; "
                                                 "run the rollback flow to copy new mail back and lift the freeze")
            console.print("[yellow]freeze taken for an emergency switch back; it stays until a rollback run "
                          f"(which copies new mail back) lifts it, or it is removed from {freeze.marker_path(plan)}"
                          "[/yellow]", soft_wrap=True)
        if not dry_run:
            _mark(console, plan, to.value, "emergency switch by hand" if emergency else "dns switch by hand")
        _show(console, switch_mx(plan, to.value, dry_run=dry_run))


@app.command("ttl")
def ttl(
    lower: bool = typer.Option(False, "--lower", help="to the plan's cutover TTL (days before the switch)"),
    restore: bool = typer.Option(False, "--restore", help="back to the plan's normal TTL"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check mode: show the change, make none"),
    plan_path: Path = PlanOption,
) -> None:
    """Move the MX TTL to the cutover value (--lower) or back to normal (--restore), through Ansible."""
    console = Console()
    if lower == restore:
        Console(stderr=True).print("[red]error:[/red] give exactly one of --lower or --restore")
        raise typer.Exit(2)
    with handle_errors(console):
        plan = load_plan(plan_path)
        if not dry_run:
            freeze.ensure_not_frozen(plan, "TTL change by hand")
        if restore and (due := restore_due(plan)) and due > datetime.now(timezone.utc):
            console.print(f"[yellow]restoring before the end of hypercare ({due.isoformat(timespec='minutes')}, "
                          "ttl.restore_after): a rollback from now on propagates at the normal TTL[/yellow]",
                          soft_wrap=True)
        _show(console, set_ttl(plan, "cutover" if lower else "normal", dry_run=dry_run))


def _mark(console: Console, plan, to: str, by: str) -> None:
    """The switch mark right before the MX changes (recorded in the ledger); never a reason not to switch."""
    from cutover.inventory import load_inventory
    from cutover.switch_mark import try_switch_mark

    try:
        mailboxes = list(load_inventory(plan))
    except CutoverError as exc:
        console.print(f"[yellow]switch mark NOT recorded: {escape(str(exc))}[/yellow]", soft_wrap=True)
        return
    mark = try_switch_mark(plan, mailboxes, to=to, by=by)  # type: ignore[arg-type]
    if isinstance(mark, str):
        console.print(f"[yellow]{escape(mark)}[/yellow]", soft_wrap=True)
        return
    console.print(escape(mark.describe()), soft_wrap=True)
    for line in mark.failures():
        console.print(f"[yellow]  not marked: {escape(line)}[/yellow]", soft_wrap=True)


def _show(console: Console, change: DnsChange) -> None:
    table = Table(title=change.action + (" (dry run)" if change.dry_run else ""), show_header=False)
    for key, value in change.as_row().items():
        table.add_row(key, escape(str(value).rstrip("\n")))
    console.print(table)
    if change.diff:
        console.print(escape(change.diff.rstrip("\n")))
    elif not change.changed:
        console.print("[green]nothing to change[/green]: the zone already serves this")
