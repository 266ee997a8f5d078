"""The copy engine: per mailbox, per folder, batched and pipelined, resumable through the ledger.

How a folder is copied (``direction="forward"``: source -> target)
  1. LIST both sides, map names (``_folders.map_folders``); EXAMINE the source folder and read
     {UID: RFC822.SIZE} (metadata only). The ledger says which source UIDs (under this UIDVALIDITY) already
     have a twin on the target; a twin counts only if its target UID still exists with the same size
     under the target UIDVALIDITY the ledger recorded. Everything else is "to do".
  2. Twins already on the target that the ledger does not know about (a crash between APPEND and the
     ledger update, a copy made by another tool, a source UIDVALIDITY reset) are found by SHA-256: target
     messages not claimed by a ledger row whose size equals the size of a to-do message are read and
     digested. A to-do message whose digest is in that pool takes one twin from it (a multiset: two
     identical source messages need two twins) and is recorded ``matched``; nothing is appended. Because
     only same-size unclaimed messages are read, this costs nothing on a clean run and little on a resume.
  3. A reader thread FETCHes ``BODY.PEEK[] FLAGS INTERNALDATE`` in batches bounded by count and bytes on
     the source session and hands them over a queue of one, so the next batch is read while the current
     one is written; at most four batches are in memory per mailbox whatever its size (three here, one
     being read back).
  4. Per batch: rows are committed to the ledger as ``pending`` (size, SHA-256), then one MULTIAPPEND
     (or one APPEND per message without it) sends them with flags and INTERNALDATE; the APPENDUID answer
     turns the rows into ``copied`` with their target UIDs. Without MULTIAPPEND each message is confirmed
     as its own APPEND answers, so when message k is refused as too large, 1..k-1 are recorded and never
     sent again; only the messages after k go on. A kill -9 anywhere leaves either no row (not
     sent: copied next time), or a pending row (resolved by step 2 before anything is appended again),
     or a copied row (done). So a rerun neither duplicates nor skips.
  5. Verification, once every folder of the mailbox is copied: the target folder is listed again; every
     source message must have its recorded twin (UID present, same size). Twins appended in this run are
     read back and their SHA-256 compared (``copy.verify: readback``, the default; ``size`` trusts
     APPENDUID and sizes). When a mailbox has more than a little to copy and the target's
     ``max_connections`` allows two sessions per mailbox, the read-back runs on a second target session
     right after each APPEND, overlapping the next batch (``ReadBack``); its digests count only under
     the target UIDVALIDITY the final listing shows, and anything it did not read is read at the end as
     before. A target message that appeared during this run, that no ledger row claims and whose SHA-256
     is that of a copied/matched message is an extra copy: the mailbox fails (``duplicates``), and stays
     failed while that UID is there (recorded as an event); older unclaimed target mail is not judged.
     Verified rows are marked so a delta does not read them again: a message under a given UID and
     UIDVALIDITY never changes (RFC 3501), so the recorded digest of an unchanged source UID stays valid.

Delta fast path: after a folder verifies, the ledger keeps (UIDVALIDITY, UIDNEXT, MESSAGES) of both
folders. A later run asks STATUS on both sides first; if both are unchanged no message was added or
removed anywhere since that verification, and the folder is reported verified without being listed.
Any difference (new mail, an expunge on either side, a UIDVALIDITY reset) sends it down the full path.
Flag changes made after a message was copied are not carried over (the copy is of content, flags and
date at copy time).

``direction="reverse"`` (rollback) runs the same algorithm from the target back to the source, leaving
out every target message the forward ledger put there (by target UID under the same UIDVALIDITY, by
SHA-256 otherwise). Reverse copies are recorded under ``reverse`` so a second rollback copies nothing.
Nothing is ever deleted or changed on either side.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Sequence

from imapclient import IMAPClient

from cutover.errors import ConnectionLost, LedgerError, MailboxError, MessageTooLarge
from cutover.imap import connect
from cutover.inventory import Mailbox
from cutover.ledger import Ledger
from cutover.mailsync import _imapops as ops
from cutover.mailsync._context import Direction, MailboxContext, Progress, ProgressCallback
from cutover.mailsync._lock import _MailboxLock
from cutover.mailsync._models import CopyReport, FolderReport, MailboxReport
from cutover.mailsync._plan import (SourceFolder, check_quota, list_source, map_mailbox, plan_folder,
                                    unchanged_since_verified, unknown_twins)
from cutover.mailsync._transfer import copy_messages
from cutover.mailsync._verify import READBACK_MIN_BYTES, READBACK_MIN_MESSAGES, ReadBack, verify_folder, verify_full
from cutover.plan import Plan

log = logging.getLogger("cutover.mailsync")
# imapclient logs command traffic (literal heads included) at DEBUG; message bodies never go to logs.
logging.getLogger("imapclient").setLevel(logging.INFO)



def copy_mailboxes(plan: Plan, mailboxes: Sequence[Mailbox], *, direction: Direction = "forward", dry_run: bool = False,
                   verify_only: bool = False, on_progress: ProgressCallback | None = None,
                   on_mailbox_done: Callable[[MailboxReport], None] | None = None,
                   ledger: Ledger | None = None) -> CopyReport:
    """Copy (or verify) ``mailboxes`` with a bounded pool; one failing mailbox never stops the others."""
    started = time.monotonic()
    settings = plan.copy_settings
    own_ledger = ledger is None
    ledger = ledger or Ledger(plan.ledger)
    workers = max(1, min(settings.mailboxes_in_parallel, plan.source.max_connections, plan.target.max_connections,
                         len(mailboxes) or 1))
    progress = Progress(len(mailboxes), on_progress)
    reports: dict[str, MailboxReport] = {}
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailsync") as pool:
            futures = {pool.submit(sync_mailbox, plan, mb, ledger, direction=direction, dry_run=dry_run,
                                   verify_only=verify_only, _progress=progress): mb for mb in mailboxes}
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
                 _progress: Progress | None = None) -> MailboxReport:
    """Copy one mailbox and verify it; every failure becomes the report's status/reason/error, never an exception.

    Connection losses are retried (``copy.retries`` times, exponential backoff from ``copy.retry_backoff_s``),
    resuming from the ledger; bad credentials, TLS, quota and size failures are not retried.

    The whole run holds an exclusive lock on (address, direction) (``_MailboxLock``); when another process or
    thread holds it the mailbox fails at once with reason ``busy`` and nothing is read or written. A dry run
    writes nothing and takes no lock.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
    started = time.monotonic()
    progress = _progress or Progress(1, on_progress)
    settings = plan.copy_settings
    report = MailboxReport(mailbox.address, direction=direction)
    run = _MailboxSync(plan, mailbox, ledger, direction, dry_run, verify_only, progress, report)
    lock = None if dry_run else _MailboxLock(ledger.path, mailbox.address, direction)
    try:
        if lock is not None:
            lock.acquire()
        _run_with_retries(run, mailbox, settings, report)
    except MailboxError as exc:  # the lock is held by another run
        _fail(report, exc)
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


def _run_with_retries(run: "_MailboxSync", mailbox: Mailbox, settings, report: MailboxReport) -> None:
    attempt = 0
    while True:
        try:
            run.run()
            break
        except ConnectionLost as exc:
            if attempt >= settings.retries:
                _fail(report, exc, attempts=attempt + 1)
                break
            delay = settings.retry_backoff_s * (2 ** attempt)
            attempt += 1
            log.warning("connection lost, retrying address=%s attempt=%d of=%d delay_s=%.1f detail=%s",
                        mailbox.address, attempt, settings.retries, delay, exc.detail)
            time.sleep(delay)
        except MailboxError as exc:
            _fail(report, exc)
            break
        except LedgerError as exc:
            report.status, report.reason, report.error = "failed", "ledger", str(exc)
            break
        except Exception as exc:  # a bug or an unexpected server answer: report it, keep the others going
            log.exception("unexpected failure address=%s", mailbox.address)
            report.status, report.reason = "failed", "error"
            report.error = f"{mailbox.address}: unexpected {exc.__class__.__name__}: {str(exc)[:200]}"
            break


def _fail(report: MailboxReport, exc: MailboxError, *, attempts: int = 1) -> None:
    report.status = "failed"
    report.verified = False
    report.reason = exc.reason
    report.error = str(exc) + (f" (after {attempts} attempts)" if attempts > 1 else "")


class _MailboxSync(MailboxContext):
    """One mailbox run; ``run()`` may be called again after a connection loss and resumes from the ledger."""

    def __init__(self, plan: Plan, mailbox: Mailbox, ledger: Ledger, direction: Direction, dry_run: bool,
                 verify_only: bool, progress: Progress, report: MailboxReport) -> None:
        super().__init__(plan, mailbox, ledger, direction, dry_run, verify_only, progress)
        self.report = report
        self.readback: ReadBack | None = None

    # --- the run -----------------------------------------------------------------------------------
    def run(self) -> None:
        src = ops.quiet(connect(self.plan, self.src_side, self.mailbox))
        try:
            dst = ops.quiet(connect(self.plan, self.dst_side, self.mailbox))
            try:
                src.normalise_times = False  # keep INTERNALDATE's own offset, byte for byte
                dst.normalise_times = False
                self.readback = ReadBack.if_affordable(self)
                try:
                    self._run(src, dst)
                finally:
                    if self.readback is not None:
                        self.readback.close()
                        self.readback = None
            finally:
                ops.logout(dst)
        finally:
            ops.logout(src)

    def _run(self, src: IMAPClient, dst: IMAPClient) -> None:
        mailbox = map_mailbox(self, src, dst)
        dst_names = mailbox.target_folders

        folder_reports: list[FolderReport] = []
        listings: list[SourceFolder] = []
        for sname, tname in mailbox.mapping.items():
            unchanged = None
            if not self.dry_run and not self.verify_only and tname in dst_names:
                unchanged = unchanged_since_verified(self, src, dst, sname, tname)
            if unchanged is not None:
                folder_reports.append(unchanged)
                continue
            listings.append(list_source(self, src, sname, tname))

        if not self.dry_run and not self.verify_only:
            count, nbytes = check_quota(self, dst, listings)
            if self.readback is not None and (count >= READBACK_MIN_MESSAGES or nbytes >= READBACK_MIN_BYTES):
                self.readback.start()  # its session opens while the copy starts

        # Every folder is copied first, then every folder verified: the read-back of one folder overlaps the
        # copy of the next (verification of a folder depends only on the ledger and the target's state).
        finishing: list[Callable[[], FolderReport]] = []
        for folder in listings:
            if self.verify_only:
                fr = verify_full(self, src, dst, folder.source, folder.target, folder.listing, folder.target in dst_names)
                finishing.append(lambda fr=fr: fr)
            else:
                finishing.append(self._copy_folder(src, dst, folder, folder.target in dst_names, mailbox.multiappend))
        for finish in finishing:
            fr = finish()
            folder_reports.append(fr)
            log.info("folder done address=%s direction=%s folder=%s target=%s messages=%d copied=%d skipped=%d missing=%d",
                     self.address, self.direction, fr.source, fr.target, fr.messages, fr.copied, fr.skipped,
                     fr.missing)
        self._summarise(folder_reports)

    def _summarise(self, folder_reports: list[FolderReport]) -> None:
        r = self.report
        r.folder_reports = folder_reports
        r.folders = len(folder_reports)
        r.messages = sum(f.messages for f in folder_reports)
        r.bytes = sum(f.bytes for f in folder_reports)
        r.missing = sum(f.missing for f in folder_reports)
        r.duplicates = sum(f.duplicates for f in folder_reports)
        r.notes = [f"{f.source}: {n}" for f in folder_reports for n in f.notes]
        if self.dry_run:
            r.copied = sum(f.copied for f in folder_reports)  # would copy
            r.skipped = sum(f.skipped for f in folder_reports)
            r.status, r.verified = "dry-run", False
            return
        r.copied = self.copied_total if not self.verify_only else 0
        r.skipped = max(0, r.messages - r.copied - r.missing)
        r.verified = all(f.verified for f in folder_reports)
        too_large = [n for n in r.notes if "too large" in n]
        if r.verified:
            r.status, r.reason, r.error = "verified", "", ""
        elif r.duplicates:
            r.status, r.reason = "failed", "duplicates"
            r.error = (f"{self.address}: {r.duplicates} message(s) are on the target twice: "
                       + "; ".join(n for n in r.notes if "twice" in n))
        elif too_large:
            r.status, r.reason = "failed", MessageTooLarge.reason
            r.error = f"{self.address}: {len(too_large)} folder(s) hold messages over the target's size limit: " + "; ".join(too_large)
        else:
            r.status, r.reason = "not-verified", "not-verified"
            r.error = f"{self.address}: {r.missing} source message(s) without an identical target twin; run the copy again"

    # --- one folder --------------------------------------------------------------------------------
    def _copy_folder(self, src: IMAPClient, dst: IMAPClient, folder: SourceFolder, exists_on_target: bool,
                     multiappend: bool) -> Callable[[], FolderReport]:
        """Copy one folder; return the function that verifies it (called once every folder is copied)."""
        fp = plan_folder(self, dst, folder, exists_on_target)
        fr = FolderReport(fp.source, fp.target, messages=len(fp.listing), bytes=sum(fp.listing.values()), notes=fp.notes)
        if self.dry_run:
            fr.copied, fr.skipped = len(fp.todo), len(fp.done)
            return lambda: fr
        self.state.enter_folder(fp.source, fp.uidvalidity, fp.target, fp.target_uidvalidity, fp.known,
                                copying=bool(fp.todo))
        twins = unknown_twins(self, dst, fp)
        forward_elsewhere = self.state.forward_digests_elsewhere(fp.source, fp.uidvalidity)
        readback = self.readback if self.readback is not None and self.readback.started else None
        copy_messages(self, src, dst, fp, twins, forward_elsewhere, multiappend, fr, readback)
        # Nothing written to the target folder: the listing taken above is still the target as it is.
        unchanged = fp.target_listing if not fp.todo else None
        return lambda: verify_folder(self, dst, fr, fp.source, fp.target, fp.uidvalidity, fp.listing, unchanged,
                                     folder.snapshot, readback)
