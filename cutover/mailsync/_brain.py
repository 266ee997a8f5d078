"""The brain of one mailbox run: plan -> transfer -> verify for every folder, the ledger kept on the way.

It owns the two sessions (source and target), asks ``_plan`` what to do, hands each folder to ``_transfer``,
verifies every folder once all are copied (``_verify``; the read-back of one folder overlaps the copy of the
next), and turns the folders' outcome into the mailbox's status and reason. :func:`run_with_retries` turns
every failure into the report: a lost connection is retried from the ledger, the others are not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

from imapclient import IMAPClient

from cutover.errors import ConnectionLost, LedgerError, MailboxError, TargetAltersMessages, Throttled
from cutover.imap import connect, map_imap_errors, reserve
from cutover.limits import throttle_delay
from cutover.mailsync import _imapops as ops
from cutover.mailsync._context import MailboxContext
from cutover.mailsync._models import FolderReport, MailboxReport
from cutover.mailsync._plan import (FolderRefused, SourceFolder, check_quota, list_sources, map_mailbox, plan_folder,
                                    unchanged_since_verified, unknown_twins)
from cutover.mailsync._switch import switch_view
from cutover.mailsync._transfer import copy_messages
from cutover.mailsync._verify import READBACK_MIN_BYTES, READBACK_MIN_MESSAGES, ReadBack, verify_folder, verify_full

log = logging.getLogger("cutover.mailsync")


class MailboxBrain:
    """One mailbox run; ``run()`` may be called again after a connection loss and resumes from the ledger."""

    def __init__(self, ctx: MailboxContext, report: MailboxReport) -> None:
        self.ctx = ctx
        self.report = report
        self.readback: ReadBack | None = None  # per attempt: the concurrent read-back, when there is one

    def run(self) -> None:
        ctx = self.ctx
        # The providers' session caps are always taken source provider first, whatever the direction: a forward
        # and a reverse copy never wait on each other. Once the source place is held, the target session opens
        # on a thread of its own while the source one does (TLS and login round trips overlap).
        slot = reserve(ctx.plan, "source", ctx.mailbox)
        opening = _Opening(ctx.plan, "target", ctx.mailbox)
        try:
            first = ops.quiet(connect(ctx.plan, "source", ctx.mailbox, slot=slot))
        except BaseException:
            opening.discard()
            raise
        src = first if ctx.src_side == "source" else None
        dst = first if ctx.dst_side == "source" else None
        second = None
        try:
            second = ops.quiet(opening.result())
            src, dst = (src, second) if src is not None else (second, dst)
            src.normalise_times = False  # keep INTERNALDATE's own offset, byte for byte
            dst.normalise_times = False
            self.readback = ReadBack.if_affordable(ctx)
            try:
                self._run(src, dst)
            finally:
                if self.readback is not None:
                    self.readback.close()
                    self.readback = None
        finally:
            ops.hang_up(first, second)

    def _run(self, src: IMAPClient, dst: IMAPClient) -> None:
        ctx = self.ctx
        ctx.switch = switch_view(ctx.ledger, ctx.address)
        if not (ctx.dry_run or ctx.verify_only) and (altered := ctx.state.target_alters()) is not None:
            # never append again to a target that alters messages: only a repair run (recorded) tries again
            found = altered.removeprefix("target alters messages: ")
            raise TargetAltersMessages(ctx.address, f"target alters messages (found by an earlier run): {found}",
                                       server=ctx.dst_server)
        mailbox = map_mailbox(ctx, src, dst)
        dst_names = mailbox.target_folders

        folder_reports: list[FolderReport] = []
        unchanged: dict[str, FolderReport] = {}
        if not ctx.dry_run and not ctx.verify_only and ctx.repair is None:  # a repair looks at every folder
            unchanged = unchanged_since_verified(ctx, src, dst, {s: t for s, t in mailbox.mapping.items()
                                                                 if t in dst_names}, mailbox)
        for sname, (recorded, now, why) in mailbox.changed.items():
            remap = (f"pec-cutover copy --mailbox {ctx.address}"
                     + (" --direction reverse" if ctx.direction == "reverse" else "") + " --remap")
            folder_reports.append(FolderReport(sname, recorded, mapping_changed=True, notes=[
                f"folder mapping changed: copied to {recorded!r} at the first copy, would now go to {now!r}{why}; "
                f"not copied until an operator decides: {remap} '{sname}={recorded}' --reason TEXT (keep), or "
                f"{remap} '{sname}={now}' --reason TEXT (new mail there; what was copied stays in {recorded!r})"]))
        for sname, tname in mailbox.mapping.items():
            if sname in unchanged:
                folder_reports.append(unchanged[sname])
        copying = not ctx.dry_run and not ctx.verify_only
        listings, target_seen = list_sources(ctx, src, {s: t for s, t in mailbox.mapping.items() if s not in unchanged},
                                             dst if copying else None, dst_names)

        listed: dict[str, ops.Listing] = {}  # target folders check_quota listed, for plan_folder
        if not ctx.dry_run and not ctx.verify_only:
            count, nbytes = check_quota(ctx, dst, listings, dst_names, listed, target_seen)
            if not ctx.copied_once and (absent := sorted({f.target for f in listings} - dst_names)):
                # every missing target folder made and listed in one round trip (a refusal is retried, and
                # reported, by plan_folder); after the switch a folder the member deleted is not made again
                with map_imap_errors(ctx.address, ctx.dst_server):
                    made = ops.create_folders(dst, absent)
                dst_names = dst_names | set(made)
                listed.update(made)
            # a listing stays the folder's "before" only while no other source folder is copied into it first
            shared = {t for t, n in Counter(f.target for f in listings).items() if n > 1}
            listed = {t: v for t, v in listed.items() if t not in shared}
            if self.readback is not None and (count >= READBACK_MIN_MESSAGES or nbytes >= READBACK_MIN_BYTES):
                self.readback.start()  # its session opens while the copy starts

        # Every folder is copied first, then every folder verified: the read-back of one folder overlaps the
        # copy of the next (verification of a folder depends only on the ledger and the target's state).
        finishing: list[Callable[[], FolderReport]] = []
        for folder in listings:
            if ctx.verify_only:
                fr = verify_full(ctx, src, dst, folder.source, folder.target, folder.listing, folder.target in dst_names)
                finishing.append(lambda fr=fr: fr)
            else:
                finishing.append(self._copy_folder(src, dst, folder, folder.target in dst_names, mailbox.multiappend,
                                                   listed.get(folder.target)))
        for finish in finishing:
            fr = finish()
            folder_reports.append(fr)
            log.info("folder done address=%s direction=%s folder=%s target=%s messages=%d copied=%d skipped=%d missing=%d",
                     ctx.address, ctx.direction, fr.source, fr.target, fr.messages, fr.copied, fr.skipped,
                     fr.missing)
        self._summarise(folder_reports)

    def _copy_folder(self, src: IMAPClient, dst: IMAPClient, folder: SourceFolder, exists_on_target: bool,
                     multiappend: bool, listed: ops.Listing | None = None) -> Callable[[], FolderReport]:
        """Copy one folder; return the function that verifies it (called once every folder is copied)."""
        ctx = self.ctx
        try:
            fp = plan_folder(ctx, dst, folder, exists_on_target, listed)
        except FolderRefused as exc:
            refused = FolderReport(folder.source, folder.target, messages=len(folder.listing),
                                   bytes=sum(folder.listing.values()), missing=len(folder.listing),
                                   notes=[exc.detail], folder_refused=True)
            return lambda: refused
        fr = FolderReport(fp.source, fp.target, messages=len(fp.listing), bytes=sum(fp.listing.values()), notes=fp.notes)
        if fp.target_listing is None and not fp.todo and ctx.copied_once:  # deleted on the target, nothing new
            fr.gone, fr.skipped, fr.verified = len(fp.listing), len(fp.listing), True
            return lambda: fr
        if ctx.dry_run:
            fr.copied, fr.skipped = len(fp.todo), len(fp.done)
            return lambda: fr
        ctx.state.enter_folder(fp.source, fp.uidvalidity, fp.target, fp.target_uidvalidity, fp.known,
                               copying=bool(fp.todo))
        twins = unknown_twins(ctx, dst, fp)
        elsewhere = ctx.state.copied_elsewhere(fp.source, fp.uidvalidity, ctx.copied_once)
        readback = self.readback if self.readback is not None and self.readback.started else None
        copy_messages(ctx, src, dst, fp, twins, elsewhere, multiappend, fr, readback)
        # Nothing written to the target folder: the listing taken above is still the target as it is.
        unchanged = fp.target_listing if not fp.todo else None
        return lambda: verify_folder(ctx, dst, fr, fp.source, fp.target, fp.uidvalidity, fp.listing, unchanged,
                                     folder.snapshot, readback, src)

    def _summarise(self, folder_reports: list[FolderReport]) -> None:
        """The mailbox's totals, status and reason from its folders'."""
        ctx, r = self.ctx, self.report
        r.folder_reports = folder_reports
        r.folders = len(folder_reports)
        r.messages = sum(f.messages for f in folder_reports)
        r.bytes = sum(f.bytes for f in folder_reports)
        r.missing = sum(f.missing for f in folder_reports)
        r.duplicates = sum(f.duplicates for f in folder_reports)
        r.notes = [f"{f.source}: {n}" for f in folder_reports for n in f.notes]
        r.after_switch, r.source_name = ctx.switch.after, ctx.src_provider.name
        r.late = sum(f.late for f in folder_reports)
        r.before_switch = sum(f.before_switch for f in folder_reports)
        r.gone = sum(f.gone for f in folder_reports)
        r.flags_repaired = sum(f.flags_repaired for f in folder_reports)
        r.dates_differ = sum(f.dates_differ for f in folder_reports)
        if ctx.dry_run:
            r.copied = sum(f.copied for f in folder_reports)  # would copy
            r.skipped = sum(f.skipped for f in folder_reports)
            r.status, r.verified = "dry-run", False
            return
        r.copied = ctx.copied_total if not ctx.verify_only else 0
        r.refused = sum(len(f.refused) for f in folder_reports)
        r.approved = sum(f.approved for f in folder_reports)
        r.approvals = [f"approved by {op}: {why}" for op, why, _, _ in ctx.ledger.approvals(ctx.address, ctx.direction)]
        r.skipped = max(0, r.messages - r.copied - r.missing - r.approved)
        r.verified = all(f.verified for f in folder_reports)
        if r.verified:
            r.status, r.reason, r.error = "verified", "", ""
            if r.approved:
                r.error = f"{ctx.address}: {r.approved} skipped message(s) left behind, " + "; ".join(r.approvals)
        elif r.duplicates:
            r.status, r.reason = "failed", "duplicates"
            r.error = (f"{ctx.address}: {r.duplicates} message(s) are on the target twice: "
                       + "; ".join(n for f in folder_reports if f.duplicates for n in f.notes))
        elif r.dates_differ and not r.missing:
            r.status, r.reason = "failed", "dates-differ"
            r.error = (f"{ctx.address}: " + "; ".join(n for f in folder_reports if f.dates_differ for n in f.notes
                                                      if "INTERNALDATE" in n))
        elif any(f.mapping_changed for f in folder_reports):
            r.status, r.reason = "failed", "folder-mapping-changed"
            r.error = f"{ctx.address}: " + "; ".join(n for f in folder_reports if f.mapping_changed for n in f.notes)
        elif any(f.folder_refused for f in folder_reports):
            r.status, r.reason = "failed", FolderRefused.reason
            r.error = (f"{ctx.address}: " + "; ".join(n for f in folder_reports if f.folder_refused for n in f.notes)
                       + "; map it to a name the target takes (copy.folder_map in the plan) and run again")
        elif r.refused and r.missing <= r.refused:
            # Everything else is there: the target refused these and they wait for a person.
            r.status, r.reason = "failed", "skipped"
            reasons = [f"{f.source} UID {u}: {said}" for f in folder_reports for u, said in f.refused]
            r.error = (f"{ctx.address}: {r.refused} skipped (refused by the target: " + "; ".join(reasons[:5])
                       + ("; ..." if len(reasons) > 5 else "") + "); fix them and run again, or approve with "
                       f"'pec-cutover copy approve-skipped --mailbox {ctx.address} --operator NAME --reason TEXT'")
        else:
            r.status, r.reason = "not-verified", "not-verified"
            r.error = f"{ctx.address}: {r.missing} source message(s) without an identical target twin; run the copy again"
            if r.refused:
                r.error += f" ({r.refused} of them skipped: refused by the target)"


# However much each attempt moves forward, one run gives up after this many times copy.retries lost connections.
_MAX_LOST_FACTOR = 10


class _Opening:
    """``connect`` on a thread of its own: the target session opens while the source one does."""

    def __init__(self, plan, side: str, mailbox) -> None:
        self._client: IMAPClient | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(plan, side, mailbox), daemon=True,
                                        name=f"open-{side}-{mailbox.address}")
        self._thread.start()

    def _open(self, plan, side: str, mailbox) -> None:
        try:
            self._client = connect(plan, side, mailbox)  # type: ignore[arg-type]
        except BaseException as exc:  # raised in the caller's thread by result()
            self._error = exc

    def result(self) -> IMAPClient:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._client  # type: ignore[return-value]

    def discard(self) -> None:
        """The caller gives up (the other session failed): wait, and log out if it opened."""
        self._thread.join()
        if self._client is not None:
            ops.logout(self._client)


def run_with_retries(brain: MailboxBrain) -> None:
    """Run ``brain`` until it finishes or fails; every failure goes into the report.

    A lost connection is retried (``copy.retries`` times, exponential backoff from ``copy.retry_backoff_s``); a
    "too many / slow down" answer (:class:`Throttled`) has a budget of its own (``copy.throttle_retries``,
    jittered waits from ``copy.throttle_backoff_s`` up to ``copy.throttle_backoff_max_s``, each wait shown in
    the progress); both resume from the ledger. An attempt that moved the mailbox forward (rows copied, matched
    or verified) gives the lost-connection budget back, and every lost connection halves the batches of the next
    attempt: a link that drops every N bytes converges. Every other failure is reported at once; the report
    counts what the run appended even when it ends failed."""
    ctx, report = brain.ctx, brain.report
    settings = ctx.settings
    attempt = throttled = lost = 0
    while True:
        advanced = ctx.state.advanced
        try:
            brain.run()
            break
        except Throttled as exc:
            if throttled >= settings.throttle_retries:
                fail(report, exc, attempts=attempt + throttled + 1)
                break
            throttled += 1
            delay = throttle_delay(throttled, settings.throttle_backoff_s, settings.throttle_backoff_max_s)
            log.warning("throttled, backing off address=%s attempt=%d of=%d delay_s=%.1f said=%s",
                        ctx.address, throttled, settings.throttle_retries, delay, exc.detail)
            ctx.progress.waiting(ctx.address, delay, exc.detail)
            time.sleep(delay)
        except ConnectionLost as exc:
            if ctx.state.advanced > advanced:
                # This attempt moved the mailbox forward (appended, matched or verified something, all in the
                # ledger): a link that drops now and then is not a dead server, so the budget starts again.
                attempt = 0
            lost += 1
            if attempt >= settings.retries or lost > _MAX_LOST_FACTOR * max(1, settings.retries):
                fail(report, exc, attempts=attempt + throttled + 1)
                break
            ctx.shrink_batches()  # smaller batches next time: what a cut link carries between two drops
            delay = settings.retry_backoff_s * (2 ** attempt)
            attempt += 1
            log.warning("connection lost, retrying address=%s attempt=%d of=%d delay_s=%.1f batch_bytes=%d "
                        "detail=%s", ctx.address, attempt, settings.retries, delay, ctx.batch_bytes, exc.detail)
            time.sleep(delay)
        except MailboxError as exc:
            fail(report, exc)
            break
        except LedgerError as exc:
            report.status, report.reason, report.error = "failed", "ledger", str(exc)
            break
        except Exception as exc:  # a bug or an unexpected server answer: report it, keep the others going
            log.exception("unexpected failure address=%s", ctx.address)
            report.status, report.reason = "failed", "error"
            report.error = f"{ctx.address}: unexpected {exc.__class__.__name__}: {str(exc)[:200]}"
            break
    if report.status == "failed" and not ctx.dry_run and not ctx.verify_only:
        report.copied = ctx.copied_total  # what this run really appended, even when it ends failed


def fail(report: MailboxReport, exc: MailboxError, *, attempts: int = 1) -> None:
    """Record a classified failure (the error's reason) in the report."""
    report.status = "failed"
    report.verified = False
    report.reason = exc.reason
    report.error = str(exc) + (f" (after {attempts} attempts)" if attempts > 1 else "")
