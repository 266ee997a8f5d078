"""The switch mark: right before the MX changes, every mailbox's folders on both sides (UIDVALIDITY, UIDNEXT,
MESSAGES), recorded in the ledger.

It says what was on each side before the switch: a source message at or above the source mark reached the source
after the switch (late mail), a target message at or above the target mark reached the target after it (what a
rollback copies back). One STATUS round per mailbox and side (LIST, then STATUS of every folder), mailboxes in
parallel within the providers' session caps. The copy engine reads it back (``cutover.mailsync._switch``): after
it a forward run never copies again what the ledger copied, and a rollback copies back only what is above it.

A mailbox that cannot be marked (login refused, server gone) is recorded as failed with the reason and never stops
the switch: the MX change must not wait for one member's mailbox.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Literal, Sequence

from cutover.errors import CutoverError, MailboxError
from cutover.imap import map_imap_errors, session
from cutover.inventory import Mailbox
from cutover.ledger import Ledger, SwitchMarkFolder, SwitchMarkRun, open_ledger
from cutover.plan import Plan

Side = Literal["source", "target"]
_ITEMS = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]


@dataclass(frozen=True)
class SwitchMark:
    """One mark as taken: its id, the MX change it precedes, time and what it covered."""

    mark: str
    to: Side
    by: str
    at: datetime
    seconds: float
    mailboxes: int
    folders: int
    failed: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        text = (f"switch mark {self.mark}: {self.mailboxes} mailboxes, {self.folders} folders on both sides "
                f"(UIDVALIDITY, UIDNEXT) in {self.seconds:.1f} s")
        return text + (f"; NOT marked: {len(self.failed)} mailbox(es)" if self.failed else "")

    def failures(self) -> list[str]:
        return [f"{address}: {why}" for address, why in sorted(self.failed.items())]


def mark_mailbox(plan: Plan, mailbox: Mailbox) -> list[SwitchMarkFolder]:
    """Both sides' folders of one mailbox (raises a MailboxError family member when a side cannot be read)."""
    rows: list[SwitchMarkFolder] = []
    for side in ("source", "target"):
        provider = plan.provider(side)
        with session(plan, side, mailbox) as client, \
                map_imap_errors(mailbox.address, f"{provider.name} {provider.imap}", side=side):
            for flags, _delimiter, name in client.list_folders():
                if any(f.lower() == b"\\noselect" or f.lower() == b"\\nonexistent" for f in flags):
                    continue
                status = client.folder_status(name, _ITEMS)
                rows.append(SwitchMarkFolder(mailbox.address, side, name, int(status[b"UIDVALIDITY"]),
                                             int(status[b"UIDNEXT"]), int(status[b"MESSAGES"])))
    return rows


def take_switch_mark(plan: Plan, mailboxes: Sequence[Mailbox] | Iterable[Mailbox], *, to: Side, by: str,
                     ledger: Ledger | None = None) -> SwitchMark:
    """Mark every mailbox on both sides, in parallel, and record the mark in the ledger (the plan's, unless given)."""
    boxes = list(mailboxes)
    started_at = datetime.now(timezone.utc)
    mark_id = f"{started_at.strftime('%Y%m%dT%H%M%S.%fZ')}-to-{to}"
    started = time.monotonic()
    failed: dict[str, str] = {}
    rows: list[SwitchMarkFolder] = []

    def one(mb: Mailbox) -> list[SwitchMarkFolder] | str:
        try:
            return mark_mailbox(plan, mb)
        except MailboxError as exc:
            return f"{type(exc).__name__}: {exc}"

    # Each mailbox holds one session per side at a time; the providers' caps (cutover.imap) bound the total.
    workers = max(1, min(len(boxes) or 1, plan.copy_.mailboxes_in_parallel * 2,
                         plan.source.max_connections, plan.target.max_connections))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="switch-mark") as pool:
        for mb, result in zip(boxes, pool.map(one, boxes)):
            if isinstance(result, str):
                failed[mb.address] = result
            else:
                rows += result
    seconds = time.monotonic() - started
    own = ledger is None
    book = ledger or open_ledger(plan)
    try:
        book.record_switch_mark(SwitchMarkRun(mark_id, to, by, started_at.timestamp(), seconds,
                                              len(boxes) - len(failed), failed), rows)
    finally:
        if own:
            book.close()
    return SwitchMark(mark_id, to, by, started_at, seconds, len(boxes) - len(failed), len(rows), failed)


def try_switch_mark(plan: Plan, mailboxes: Iterable[Mailbox], *, to: Side, by: str) -> SwitchMark | str:
    """:func:`take_switch_mark`, or why it could not be taken at all (a ledger that cannot be written): the MX change
    goes on either way."""
    try:
        return take_switch_mark(plan, list(mailboxes), to=to, by=by)
    except CutoverError as exc:
        return f"switch mark NOT recorded: {exc}"


__all__ = ["SwitchMark", "mark_mailbox", "take_switch_mark", "try_switch_mark"]
