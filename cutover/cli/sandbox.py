"""``pec-cutover sandbox``: start, stop, inspect and seed the local sandbox servers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cutover.cli._common import DEFAULT_PLAN, handle_errors
from cutover.inventory import load_inventory
from cutover.plan import load_plan
from cutover.sandbox import OPTIONAL_SERVICES, SERVICE_NAMES, Sandbox, ServiceStatus, seed as seed_mailboxes
from cutover.sandbox._wan import LinkSettings, request as wan_request

app = typer.Typer(no_args_is_help=True, help="Start, stop, seed and inspect the local sandbox servers.")

_PLAN_HELP = "plan YAML (its 'sandbox:' section says where state lives)"
_SERVICES_HELP = (f"only these services (repeatable): {', '.join(SERVICE_NAMES)}, and with the plan's surroundings "
                  f"{', '.join(OPTIONAL_SERVICES)}")


def _status_table(rows: list[ServiceStatus], title: str) -> Table:
    table = Table(title=title)
    for column in ("service", "kind", "port", "pid", "state"):
        table.add_column(column)
    for s in rows:
        state = "[green]up[/green]" if s.running else "[red]down[/red]"
        if s.detail not in ("up", "down"):
            state += f" ({s.detail})"
        table.add_row(s.name, s.kind, f"127.0.0.1:{s.port}" if s.port else "-", str(s.pid or "-"), state)
    return table


@app.command()
def up(plan: Path = typer.Option(DEFAULT_PLAN, "--plan", "-p", help=_PLAN_HELP),
       service: list[str] = typer.Option(None, "--service", "-s", help=_SERVICES_HELP),
       no_users: bool = typer.Option(False, "--no-users", help="do not create the inventory's mailboxes"),
       rtt_ms: float = typer.Option(None, "--rtt-ms", min=0, help="put a WAN proxy adding this round-trip time in "
                                    "front of both IMAP servers (until `sandbox down`)"),
       bandwidth_kbps: float = typer.Option(None, "--bandwidth-kbps", min=1, help="with the WAN: per connection "
                                            "and direction")) -> None:
    """Start the sandbox (already running services are left alone) and create the inventory's mailboxes."""
    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        if (rtt_ms is not None or bandwidth_kbps is not None) and loaded.sandbox is not None:
            wan_request(loaded, Path(loaded.sandbox.state_dir),
                        LinkSettings(rtt_ms=rtt_ms or 0.0, bandwidth_kbps=bandwidth_kbps))
        box = Sandbox(loaded)
        rows = box.up(service or None)
        if not no_users:
            box.ensure_users(load_inventory(loaded).mailboxes)
        console.print(_status_table(rows, f"sandbox {loaded.name} ({box.state_dir})"))


@app.command()
def down(plan: Path = typer.Option(DEFAULT_PLAN, "--plan", "-p", help=_PLAN_HELP),
         service: list[str] = typer.Option(None, "--service", "-s", help=_SERVICES_HELP)) -> None:
    """Stop the sandbox processes this sandbox started (nothing else is signalled)."""
    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        rows = Sandbox(loaded).down(service or None)
        console.print(_status_table(rows, f"sandbox {loaded.name}"))


@app.command()
def status(plan: Path = typer.Option(DEFAULT_PLAN, "--plan", "-p", help=_PLAN_HELP)) -> None:
    """Show each service, its port, pid and whether it answers; exit 1 if any is down."""
    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        rows = Sandbox(loaded).status()
        console.print(_status_table(rows, f"sandbox {loaded.name}"))
    if not all(r.running for r in rows):
        raise typer.Exit(1)


@app.command()
def seed(plan: Path = typer.Option(DEFAULT_PLAN, "--plan", "-p", help=_PLAN_HELP),
         messages: int = typer.Option(100, "--messages", "-n", min=0, help="messages per mailbox"),
         big: int = typer.Option(2, "--big", min=0, help="messages per mailbox with a 3-5 MB attachment"),
         reset: bool = typer.Option(False, "--reset", help="wipe each mailbox first (else seeded ones are skipped)"),
         side: str = typer.Option("source", "--side", help="source (aruba) or target (infocert)"),
         rng_seed: int = typer.Option(2026, "--seed", help="random seed: the same seed gives the same messages")) -> None:
    """Fill the inventory's mailboxes with PEC-shaped mail over IMAP (the sandbox must be up)."""
    console = Console()
    with handle_errors(console):
        loaded = load_plan(plan)
        box = Sandbox(loaded)
        mailboxes = load_inventory(loaded).mailboxes
        box.ensure_users(mailboxes)
        report = seed_mailboxes(loaded, mailboxes, messages, big_attachments=big, rng_seed=rng_seed, side=side,
                                reset=reset, sandbox=box)
        table = Table(title=f"seeded {report.side} in {report.seconds:.1f}s")
        for column in ("mailbox", "folders", "messages", "MB", "note"):
            table.add_column(column)
        for m in report.mailboxes:
            table.add_row(m.address, str(len(m.folders)), str(m.messages), f"{m.bytes / 1e6:.1f}",
                          "already seeded (use --reset)" if m.skipped else "")
        console.print(table)
        console.print(f"{report.messages} messages, {report.bytes / 1e6:.1f} MB")
