"""The copy engine's entry points: many mailboxes with a bounded pool, one mailbox under its lock.

Shaped like Dovecot's dsync (``src/doveadm/dsync/``): per mailbox a *brain* (``_brain``) runs every folder
through its *plan* (``_plan``: LIST and mapping of both trees, the ledger's twins, what is to do, the delta
fast path), its *transfer* (``_transfer``: export = fetch pipeline on the source, import = APPEND on the
target) and its *verification* (``_verify``: read-back SHA-256, extra copies), keeping the *state* for the
next run in the ledger (``_state``, over :class:`cutover.ledger.Ledger`). Each module's docstring tells its
step of the algorithm; in short (``direction="forward"``: source -> target):

  1. LIST both sides, map names; list the source folder ({UID: size}); the ledger says which source UIDs
     already have a twin still on the target; everything else is "to do" (``_plan``).
  2. Twins on the target the ledger does not know about (a crash between APPEND and the ledger update,
     another tool's copy, a source UIDVALIDITY reset) are found by SHA-256 and recorded ``matched`` (``_plan``).
  3. A reader thread fetches batches bounded by count and bytes while the previous batch is appended
     (``_transfer``).
  4. Per batch, rows are committed ``pending`` before the (MULTI)APPEND and turned ``copied`` by APPENDUID.
     A kill -9 anywhere leaves no row (copied next time), a pending row (resolved by step 2 before anything
     is appended again) or a copied row (done): a rerun neither duplicates nor skips (``_transfer``).
  5. Once every folder is copied, each is verified: every source message has its twin, twins appended in
     this run are read back (concurrently when the target allows a second session); an extra copy made
     during the run fails the mailbox (``duplicates``); verified rows are marked (``_verify``).

After a folder verifies, the ledger keeps (UIDVALIDITY, UIDNEXT, MESSAGES) of both folders: a later run
whose STATUS shows both unchanged reports the folder verified without listing it (``_plan``).
``direction="reverse"`` (rollback) runs the same algorithm from the target back to the source, leaving out
every target message the forward ledger put there; reverse copies are recorded under ``reverse`` so a second
rollback copies nothing. Nothing is ever deleted on either side; the only change to an existing message is a
STORE of flags on a copy this tool appended, when they differ from the source's (``_verify``).

After the switch (``_switch``: a switch mark in the ledger) a message copied once is never copied again, whatever
the member did with its copy; a rollback copies back only target messages above the target mark, less what this
tool put there (by UID, or by SHA-256 wherever the member moved it). The folder mapping recorded at the first
copy is kept; a change stops that folder until an operator's ``--remap`` (``_plan.keep_recorded_mapping``). Each
run's first APPEND is read back at once: a target that alters messages stops the mailbox for good
(``_verify.check_target_keeps``) until a recorded repair.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Sequence

from cutover.errors import LedgerError, MailboxError
from cutover.inventory import Mailbox
from cutover.ledger import Ledger, open_ledger
from cutover.limits import mailbox_workers
from cutover.mailsync._brain import MailboxBrain, fail, run_with_retries
from cutover.mailsync._context import Direction, MailboxContext, Progress, ProgressCallback
from cutover.mailsync._lock import mailbox_lock
from cutover.mailsync._models import CopyReport, MailboxReport
from cutover.plan import Plan

log = logging.getLogger("cutover.mailsync")

_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter


def _large_buffers_from_mmap(threshold: int = 1024 * 1024) -> None:
    """Let glibc serve every allocation of ``threshold`` bytes or more (message bodies, FETCH answers) with its own
    mmap, given back to the system when freed. By default the threshold grows with the largest block freed (up
    to 32 MB), after which megabyte batches come from the arenas of several threads and stay there: measured with
    ``make bench`` (4 mailboxes in parallel, 8 MB batches), peak RSS 135.7 MB by default, 98.2 MB with 1 MB. The
    same as ``MALLOC_MMAP_THRESHOLD_=1048576``; nothing happens where glibc is not the C library."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name and "libc.so" in name:
            ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError):
        pass


_large_buffers_from_mmap()
# imapclient logs command traffic (literal heads included) at DEBUG; message bodies never go to logs.
logging.getLogger("imapclient").setLevel(logging.INFO)


def copy_mailboxes(plan: Plan, mailboxes: Sequence[Mailbox], *, direction: Direction = "forward", dry_run: bool = False,
                   verify_only: bool = False, on_progress: ProgressCallback | None = None,
                   on_mailbox_done: Callable[[MailboxReport], None] | None = None,
                   ledger: Ledger | None = None, repair: str | None = None) -> CopyReport:
    """Copy (or verify) ``mailboxes`` with a bounded pool; one failing mailbox never stops the others.

    ``repair``: the operator's reason for a full mirror after the switch (recorded per mailbox; see ``_switch``)."""
    started = time.monotonic()
    own_ledger = ledger is None
    ledger = ledger or open_ledger(plan)
    workers = mailbox_workers(plan, len(mailboxes) or 1)  # sessions themselves are capped in cutover.imap
    progress = Progress(len(mailboxes), on_progress)
    reports: dict[str, MailboxReport] = {}
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailsync") as pool:
            futures = {pool.submit(sync_mailbox, plan, mb, ledger, direction=direction, dry_run=dry_run,
                                   verify_only=verify_only, repair=repair, _progress=progress): mb for mb in mailboxes}
            for future in as_completed(futures):
                mb = futures[future]
                report = future.result()  # sync_mailbox turns every failure into a report
                reports[mb.address] = report
                progress.mailbox_done(mb.address)
                if on_mailbox_done is not None:
                    try:
                        on_mailbox_done(report)
                    except Exception:
                        log.exception("on_mailbox_done callback failed address=%s", mb.address)
    finally:
        if own_ledger:
            ledger.close()
    return CopyReport(mailboxes=[reports[mb.address] for mb in mailboxes], seconds=time.monotonic() - started,
                      direction=direction, dry_run=dry_run, verify_only=verify_only)


def sync_mailbox(plan: Plan, mailbox: Mailbox, ledger: Ledger, *, direction: Direction = "forward", dry_run: bool = False,
                 verify_only: bool = False, on_progress: ProgressCallback | None = None,
                 repair: str | None = None, _progress: Progress | None = None) -> MailboxReport:
    """Copy one mailbox and verify it; every failure becomes the report's status/reason/error, never an exception.

    Connection losses are retried (``copy.retries`` times, exponential backoff from ``copy.retry_backoff_s``),
    resuming from the ledger; bad credentials, TLS, quota and size failures are not retried.

    The whole run holds an exclusive lock on (address, direction) (``_MailboxLock``); when another process or
    thread holds it the mailbox fails at once with reason ``busy`` and nothing is read or written. A dry run
    writes nothing and takes no lock.

    After the switch (a mark in the ledger) a message copied once is never copied again (``_switch``);
    ``repair`` (the operator's reason, recorded in the ledger) makes this run a full mirror instead.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
    started = time.monotonic()
    progress = _progress or Progress(1, on_progress)
    report = MailboxReport(mailbox.address, direction=direction, logins=mailbox.logins_differ())
    if repair is not None and not (repair or "").strip():
        raise ValueError("repair needs a reason")
    brain = MailboxBrain(MailboxContext(plan, mailbox, ledger, direction, dry_run, verify_only, progress,
                                        repair=repair), report)
    lock = None if dry_run else mailbox_lock(ledger, mailbox.address, direction)
    try:
        if lock is not None:
            lock.acquire()
            if repair is not None:
                ledger.add_event(mailbox.address, direction, "", "repair", repair.strip())
        run_with_retries(brain)
    except MailboxError as exc:  # the lock is held by another run
        fail(report, exc)
    except LedgerError as exc:
        report.status, report.reason, report.error = "failed", "ledger", str(exc)
    finally:
        if lock is not None:
            lock.release()
    report.seconds = time.monotonic() - started
    log.info("mailbox done address=%s direction=%s status=%s messages=%d copied=%d skipped=%d missing=%d seconds=%.1f",
             report.address, direction, report.status, report.messages, report.copied, report.skipped, report.missing,
             report.seconds)
    return report
