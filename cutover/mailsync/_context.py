"""What the steps of a copy share: the run's progress totals, and one mailbox run's context."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Literal

from cutover.inventory import Mailbox
from cutover.ledger import Ledger
from cutover.mailsync._models import ProgressEvent
from cutover.mailsync._state import MailboxState
from cutover.mailsync._switch import SwitchView
from cutover.plan import Plan

log = logging.getLogger("cutover.mailsync")

Direction = Literal["forward", "reverse"]
ProgressCallback = Callable[[ProgressEvent], None]


class Progress:
    """Thread-safe run totals; each mailbox adds what it did."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.callback = callback
        self.mailboxes_done = 0
        self.messages = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, address: str, messages: int, nbytes: int) -> None:
        with self._lock:
            self.messages += messages
            self.bytes += nbytes
            event = ProgressEvent(self.mailboxes_done, self.total, self.messages, self.bytes, address)
        self._emit(event)

    def waiting(self, address: str, seconds: float, said: str) -> None:
        """A mailbox backs off after a "slow down" answer: shown in the progress with the wait and the words."""
        with self._lock:
            event = ProgressEvent(self.mailboxes_done, self.total, self.messages, self.bytes, address,
                                  waiting_s=seconds, detail=said[:200])
        self._emit(event)

    def mailbox_done(self, address: str) -> None:
        with self._lock:
            self.mailboxes_done += 1
            event = ProgressEvent(self.mailboxes_done, self.total, self.messages, self.bytes, address)
        self._emit(event)

    def _emit(self, event: ProgressEvent) -> None:
        if self.callback is None:
            return
        try:
            self.callback(event)
        except Exception:  # a broken progress display must not stop a copy
            log.exception("progress callback failed")


class MailboxContext:
    """One mailbox run in one direction: the plan, the mailbox, its ledger state, which side is read and which
    written; and what the run remembers across attempts (a retry resumes from the ledger, not from zero)."""

    def __init__(self, plan: Plan, mailbox: Mailbox, ledger: Ledger, direction: Direction, dry_run: bool,
                 verify_only: bool, progress: Progress, repair: str | None = None) -> None:
        self.plan = plan
        self.mailbox = mailbox
        self.address = mailbox.address
        self.ledger = ledger
        self.state = MailboxState(ledger, mailbox.address, direction)
        self.direction = direction
        self.dry_run = dry_run
        self.verify_only = verify_only
        self.progress = progress
        self.repair = repair  # the operator's reason for a full mirror after the switch (``copy --repair``)
        self.switch = SwitchView()  # read from the ledger at the start of each attempt (``_brain``)
        self.settings = plan.copy_settings
        self.src_side, self.dst_side = ("source", "target") if direction == "forward" else ("target", "source")
        self.src_provider = plan.provider(self.src_side)
        self.dst_provider = plan.provider(self.dst_side)
        self.src_server = f"{self.src_provider.name} {self.src_provider.imap}"
        self.dst_server = f"{self.dst_provider.name} {self.dst_provider.imap}"
        self.copied_total = 0  # across attempts: a retry must not count earlier appends as "skipped"
        # (target folder, UIDVALIDITY) -> target UIDs present when this run first listed it (across attempts):
        # a message under any other UID arrived during this run (see _verify.duplicates).
        self.target_before: dict[tuple[str, int], frozenset[int]] = {}
        # After a lost connection the next attempt moves smaller batches (halved each time, down to one message):
        # a link that drops every N bytes still carries every message smaller than N (see _brain.run_with_retries).
        self.batch_shrink = 0
        self.copied_now: set[tuple[str, int]] = set()  # (source folder, UID) appended by this run
        self.target_checked = False  # the run's first APPEND was read back at once (see _verify.check_target_keeps)

    @property
    def copied_once(self) -> bool:
        """A message the ledger says was copied is never copied again, whatever became of its copy: every
        rollback, and every forward run after the switch (the members own their copies), unless repairing."""
        return self.repair is None and (self.direction == "reverse" or self.switch.after)

    @property
    def batch_messages(self) -> int:
        return max(1, self.settings.batch_messages >> self.batch_shrink)

    @property
    def batch_bytes(self) -> int:
        return max(1, self.settings.batch_bytes >> self.batch_shrink)

    def shrink_batches(self) -> None:
        if self.batch_messages > 1:
            self.batch_shrink += 1
