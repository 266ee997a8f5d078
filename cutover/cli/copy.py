"""``pec-cutover copy``: copy (or verify) mailboxes with a progress bar and a final table;
``pec-cutover copy approve-skipped``: an operator accepts a mailbox's skipped messages (recorded in the ledger)."""

from __future__ import annotations

import logging
from enum import Enum
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cutover.cli._common import PlanOption
from cutover.cli._common import handle_errors
from cutover.errors import OperatorError
from cutover.inventory import load_inventory
from cutover.ledger import open_ledger
from cutover.mailsync import CopyReport, ProgressEvent, copy_mailboxes
from cutover import freeze
from cutover.plan import load_plan


class DirectionChoice(str, Enum):
    forward = "forward"
    reverse = "reverse"


app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


@app.callback(invoke_without_command=True)
def copy(
    ctx: typer.Context,
    plan: str = PlanOption,
    mailbox: Optional[List[str]] = typer.Option(None, "--mailbox", "-m", help="only these addresses (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be copied; change nothing"),
    verify_only: bool = typer.Option(False, "--verify-only", help="compare SHA-256 of every message on both sides; copy nothing"),
    direction: DirectionChoice = typer.Option(DirectionChoice.forward, "--direction",
                                              help="forward: source -> target; reverse (rollback): new target mail -> source"),
    repair: bool = typer.Option(False, "--repair", help="after the switch: a full mirror (copies again what members "
                                "deleted or moved on the target); needs --reason, recorded in the ledger"),
    remap: Optional[List[str]] = typer.Option(None, "--remap", help="SRC=DST: source folder SRC goes to target folder "
                                             "DST from now on, when its mapping changed since the first copy "
                                             "(repeatable); needs --reason, recorded in the ledger"),
    reason: Optional[str] = typer.Option(None, "--reason", help="why (--repair, --remap): recorded in the ledger"),
) -> None:
    """Copy mailboxes from source to target, byte-exact, verified and resumable. Exit 1 if any is not verified."""
    if ctx.invoked_subcommand is not None:
        return
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    with handle_errors(console):
        why = (reason or "").strip()
        if repair and len(why) < 3:
            raise OperatorError("--repair needs --reason TEXT (a few words, recorded in the ledger): a full mirror "
                                "after the switch copies again what members deleted or moved on the target")
        remaps = [_remap_pair(item) for item in remap or []]
        if remaps and len(why) < 3:
            raise OperatorError("--remap needs --reason TEXT (a few words, recorded in the ledger)")
        the_plan = load_plan(plan)
        if not (dry_run or verify_only):
            # A copy by hand beside the cutover's own delta would race it on the same target and ledger.
            freeze.ensure_not_frozen(the_plan, f"copy {direction.value} by hand")
        inventory = load_inventory(the_plan)
        boxes = inventory.select(mailbox) if mailbox else inventory.mailboxes
        if remaps and not dry_run:
            ledger = open_ledger(the_plan)
            try:
                for box in boxes:
                    for src, dst in remaps:
                        ledger.record_remap(box.address, direction.value, src, dst, why)
            finally:
                ledger.close()
        report = _run_with_progress(console, the_plan, boxes, direction.value, dry_run, verify_only,
                                    why if repair else None)
    console.print(_table(report, console.width))
    console.print(_summary(report))
    if (late := report.late_mail()) is not None:
        console.print(late, soft_wrap=True, markup=False, highlight=False)
    for line in failure_lines(report):  # whole lines, never folded into cells: grep-able, paste-able
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    if not (report.ok or dry_run):
        raise typer.Exit(1)


def _remap_pair(item: str) -> tuple[str, str]:
    src, sep, dst = item.partition("=")
    if not sep or not src.strip() or not dst.strip():
        raise OperatorError(f"--remap {item!r}: write SOURCE_FOLDER=TARGET_FOLDER, e.g. --remap 'Posta inviata=Sent Items'")
    return src.strip(), dst.strip()


@app.command("approve-skipped")
def approve_skipped(
    plan: str = PlanOption,
    mailbox: str = typer.Option(..., "--mailbox", "-m", help="the member's address"),
    operator: str = typer.Option(..., "--operator", help="who approves (recorded, shown in every later report)"),
    reason: str = typer.Option(..., "--reason", help="why these messages may stay behind"),
    direction: DirectionChoice = typer.Option(DirectionChoice.forward, "--direction"),
) -> None:
    """Accept the messages the target refused for one mailbox: gates stop counting them as missing."""
    console = Console()
    with handle_errors(console):
        the_plan = load_plan(plan)
        address = load_inventory(the_plan).get(mailbox).address
        if len(operator.strip()) < 2 or len(reason.strip()) < 3:
            raise OperatorError("approve-skipped needs who approves (--operator NAME) and why (--reason, a few words)")
        ledger = open_ledger(the_plan)
        try:
            skipped = ledger.refusals(address, direction.value)
            if not skipped:
                console.print(f"{address}: no skipped messages to approve")
                return
            count = ledger.approve_skipped(address, direction.value, operator.strip(), reason.strip())
        finally:
            ledger.close()
    table = Table(title=f"{address}: {count} skipped message(s) approved by {escape(operator)}")
    for column in ("folder", "UID", "bytes", "the target said"):
        table.add_column(column, overflow="fold")
    for folder, _, uid, size, said, _ in skipped:
        table.add_row(escape(folder), str(uid), str(size), escape(said))
    console.print(table)
    console.print("the next copy or verification counts them as approved, not missing")


def _run_with_progress(console: Console, plan, boxes, direction: str, dry_run: bool, verify_only: bool,
                       repair: str | None = None) -> CopyReport:
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("mailboxes"),
               TextColumn("{task.fields[messages]} msgs, {task.fields[mb]:.1f} MB, {task.fields[rate]:.1f} MB/s"),
               TimeElapsedColumn(), TextColumn("{task.fields[current]}")]
    verb = "dry run" if dry_run else "verify" if verify_only else f"copy {direction}"
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(verb, total=len(boxes), messages=0, mb=0.0, rate=0.0, current="")

        def on_progress(event: ProgressEvent) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            bar.update(task, completed=event.mailboxes_done, messages=event.messages_done, mb=event.bytes_done / 1e6,
                       rate=(event.bytes_done / 1e6 / elapsed) if elapsed else 0.0, current=escape(event.current))

        return copy_mailboxes(plan, boxes, direction=direction, dry_run=dry_run, verify_only=verify_only,  # type: ignore[arg-type]
                              on_progress=on_progress, repair=repair)


# Under this width (80 columns, or piped) the table keeps the columns that fit; the reasons go below, one line each.
WIDE = 120
NARROW_COLUMNS = ("mailbox", "status", "messages", "copied", "missing", "verified")


def _table(report: CopyReport, width: int = WIDE) -> Table:
    rows = report.rows()
    table = Table(title=f"mail copy ({report.direction})")
    keys = list(rows[0] if rows else {"mailbox": ""})
    if width < WIDE:
        keys = [k for k in keys if k in NARROW_COLUMNS]
        rows = [{k: row[k] for k in keys} | {"status": row["status"], "verified": row["verified"]} for row in rows]
    for key in keys:
        table.add_column(key, overflow="fold", no_wrap=width < WIDE and key != "mailbox")
    for row in rows:
        style = "green" if row["verified"] == "yes" else ("yellow" if row["status"] == "dry-run" else "red")
        table.add_row(*(escape(str(row[k])) for k in keys), style=style)
    return table


def failure_lines(report: CopyReport) -> list[str]:
    """One line per mailbox that is not verified: ``mailbox: reason: server's words: what to do``."""
    advice = _advice()
    lines = []
    for m in report.mailboxes:
        if m.verified or m.status == "dry-run":
            continue
        reason = m.reason or ("missing messages" if m.missing else m.status)
        todo = advice.get(m.reason, "run the copy again; if it stays, look at the run's report")
        said = (m.error or "-").replace(f" ({todo})", "")
        lines.append(f"{m.address}: {reason}: {said}: {todo}")
    return lines


def _advice() -> dict[str, str]:
    """What to do per failure reason, from the error classes' own hints (one place says it)."""
    from cutover import errors

    out: dict[str, str] = {}
    stack = [errors.MailboxError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "hint", ""):
            out.setdefault(cls.reason, cls.hint)
    return out


def _summary(report: CopyReport) -> str:
    rate = report.total_bytes / 1e6 / report.seconds if report.seconds else 0.0
    head = (f"{len(report.mailboxes)} mailboxes, {report.total_messages} messages, {report.total_bytes / 1e6:.1f} MB "
            f"in {report.seconds:.1f} s ({rate:.1f} MB/s); copied {report.copied_messages}, missing {report.missing_messages}")
    if report.dry_run:
        return f"[yellow]dry run[/yellow]: {head} (copied = would copy)"
    if report.ok:
        return f"[green]all {report.verified_count} mailboxes verified[/green]: {head}"
    return f"[red]{report.unverified_count} mailbox(es) NOT verified[/red]: {head}"
