"""Transfer of a folder's messages: export (fetch pipeline on the source) and import (APPEND on the target).

3. A reader thread FETCHes ``BODY.PEEK[] FLAGS INTERNALDATE`` in batches bounded by count and bytes on the
   source session and hands them over a queue of one, so the next batch is read while the current one is
   written; at most four batches are in memory per mailbox whatever its size (three here, one being read
   back) (:func:`fetch_pipeline`).
4. Per batch: a message whose digest is among the target's unknown twins (``_plan.unknown_twins``) takes
   one and is recorded ``matched``; on a rollback, one whose digest is that of a forward copy recorded under
   another target UIDVALIDITY is left out. The others' rows are committed to the ledger as ``pending`` (size,
   SHA-256), then one MULTIAPPEND (or one APPEND per message without it) sends them with flags and
   INTERNALDATE; the APPENDUID answer turns the rows into ``copied`` with their target UIDs
   (:class:`FolderImport`). Without MULTIAPPEND each message is confirmed as its own APPEND answers, so when
   message k is refused as too large, 1..k-1 are recorded and never sent again; only the messages after k
   go on. A kill -9 anywhere leaves either no row (not sent: copied next time), or a pending row (resolved
   by SHA-256 before anything is appended again), or a copied row (done). So a rerun neither duplicates nor
   skips.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from imapclient import IMAPClient

from cutover.errors import ConnectionLost, MessageTooLarge
from cutover.imap import map_imap_errors
from cutover.ledger import MessageRow
from cutover.limits import rate_limit
from cutover.mailsync import _imapops as ops
from cutover.mailsync._context import MailboxContext
from cutover.mailsync._models import FolderReport
from cutover.mailsync._plan import FolderPlan
from cutover.mailsync._state import CopiedElsewhere
from cutover.mailsync._verify import ReadBack, check_target_keeps

_END = object()


def fetch_pipeline(ctx: MailboxContext, src: IMAPClient, folder: str, uidvalidity: int, todo: list[int],
                   listing: dict[int, int]) -> Iterator[list[ops.Fetched]]:
    """Batches fetched by a reader thread on the source session while the caller appends the previous one."""
    if not todo:
        return
    batches = ops.plan_batches(todo, listing, ctx.batch_messages, ctx.batch_bytes)
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def reader() -> None:
        try:
            with map_imap_errors(ctx.address, ctx.src_server):
                rate = rate_limit(ctx.src_provider)
                for i, batch in enumerate(batches):
                    if stop.is_set():
                        return
                    if rate is not None:  # the provider's messages/s and bytes/s, shared by every session
                        rate.take(len(batch), sum(listing.get(u, 0) for u in batch))
                    if i:
                        put(ops.fetch_messages(src, batch))
                        continue
                    # the folder opened and the first batch asked in one round trip
                    now_uidvalidity, fetched = ops.examine_and_fetch(src, folder, batch)
                    if now_uidvalidity != uidvalidity:
                        raise ConnectionLost(ctx.address, f"UIDVALIDITY of {folder!r} changed during the copy; "
                                             "starting over", server=ctx.src_server)
                    put(fetched)
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=reader, name=f"fetch-{ctx.address}", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():
            try:
                handoff.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


class FolderImport:
    """The write side for one folder: APPEND with pending -> copied bookkeeping; refused messages set aside."""

    def __init__(self, ctx: MailboxContext, dst: IMAPClient, fp: FolderPlan, readback: ReadBack | None) -> None:
        self.ctx = ctx
        self.dst = dst
        self.source, self.target, self.uidvalidity = fp.source, fp.target, fp.uidvalidity
        self.target_uidvalidity = fp.target_uidvalidity
        self.readback = readback
        self.refused: list[tuple[ops.Fetched, str]] = []  # messages the target will not take, with its words
        self.unconfirmed: list[MessageRow] = []  # appended without APPENDUID (no UIDPLUS): found by SHA-256 later
        self.confirmed: list[int] = []  # source UIDs the target confirmed in this run
        self.last_done: list[MessageRow] = []  # the rows the last APPEND turned copied
        self.binary_ok = dst.has_capability("BINARY")
        self.rate = rate_limit(ctx.dst_provider)

    def refuse(self, message: ops.Fetched, said: str) -> None:
        """Set ``message`` aside as skipped, with the reason, in the ledger (nothing of it is on the target)."""
        self.refused.append((message, said))
        self.ctx.state.forget_refused(self.source, self.uidvalidity, [message.uid])
        self.ctx.state.record_refusal(self.source, self.uidvalidity, message.uid, len(message.body), message.sha256,
                                      said)

    def append(self, messages: list[ops.Fetched], multiappend: bool) -> int:
        """Append with pending -> copied bookkeeping; return how many the target confirmed."""
        ctx = self.ctx
        a = ctx.address
        sendable = []
        for m in messages:
            if not m.exact:
                self.refuse(m, "not copyable byte-exact: it holds a NUL byte the source server gives back only "
                               "altered (BINARY[] decodes its other parts); copy it by hand from the source")
            elif m.binary and not self.binary_ok:
                self.refuse(m, f"not copyable byte-exact: it holds a NUL byte and {ctx.dst_provider.name} does not "
                               "announce BINARY (RFC 3516), so no APPEND can carry it unaltered")
            else:
                sendable.append(m)
        messages = sendable
        if not messages:
            return 0
        if self.rate is not None:
            self.rate.take(len(messages), sum(len(m.body) for m in messages))
        rows = [MessageRow(self.source, self.uidvalidity, m.uid, len(m.body), m.sha256, self.target,
                           self.target_uidvalidity, None, "pending", False) for m in messages]
        ctx.state.record_pending(rows)  # committed before the APPEND: see the module docstring
        appended: list[tuple[int | None, int | None]] = []  # (UIDVALIDITY, UID) of each message the target took
        try:
            with map_imap_errors(a, ctx.dst_server):
                ops.append_messages(self.dst, self.target, messages, multiappend=multiappend, address=a,
                                    server=ctx.dst_server, appended=appended)
        except (MessageTooLarge, ops.MessageRefused) as exc:
            # What the target took before the refusal is there (one APPEND per message): recorded, never resent.
            done = self._record_appended(rows, appended)
            sent = len(appended)
            if multiappend and len(messages) > 1 and not sent:
                # MULTIAPPEND is all or nothing: find which one, one APPEND per message; the others still go
                return done + self.append(messages, False)
            self.refuse(messages[sent], exc.detail)
            rest = messages[sent + 1:]
            if rest:
                done += self.append(rest, False)
            return done
        except BaseException:
            self._record_appended(rows, appended)  # the rest stays pending (resolved by SHA-256 next time)
            raise
        return self._record_appended(rows, appended)

    def _record_appended(self, rows: list[MessageRow], appended: list[tuple[int | None, int | None]]) -> int:
        """Turn the pending rows of messages the target confirmed with APPENDUID into ``copied``; return how many.

        Without UIDPLUS the rows stay pending; :func:`confirm_by_digest` finds them at the end of the folder."""
        self.unconfirmed += [r for r, (_, u) in zip(rows, appended) if u is None]
        done = self.ctx.state.record_copied(rows, appended)
        if not done:
            return 0
        self.confirmed += [r.src_uid for r in done]
        self.ctx.copied_now.update((r.src_folder, r.src_uid) for r in done)
        self.last_done = done
        if self.readback is not None:
            self.readback.submit(self.target, [(r.tgt_uid, r.size) for r in done])  # type: ignore[misc]
        self.ctx.copied_total += len(done)
        return len(done)


def copy_messages(ctx: MailboxContext, src: IMAPClient, dst: IMAPClient, fp: FolderPlan, twins: dict[str, list[int]],
                  elsewhere: CopiedElsewhere, multiappend: bool, fr: FolderReport, readback: ReadBack | None) -> None:
    """Copy the to-do messages of ``fp``; count them in ``fr`` (copied, messages, bytes, a too-large note).

    ``twins``: {SHA-256: target UIDs} no ledger row claims, taken one per matching message;
    ``elsewhere``: digests this tool copied before under another UID, left out (see ``_state.copied_elsewhere``)."""
    sname, tname, uidvalidity, tuidv, listing = fp.source, fp.target, fp.uidvalidity, fp.target_uidvalidity, fp.listing
    excluded: set[int] = set()
    arrived: list[int] = []  # source UIDs now on the target thanks to this run (appended or matched)
    importer = FolderImport(ctx, dst, fp, readback)
    max_bytes = ctx.dst_provider.max_message_bytes

    for batch in fetch_pipeline(ctx, src, sname, uidvalidity, fp.todo, listing):
        matched: list[MessageRow] = []
        to_append: list[ops.Fetched] = []
        for m in batch:
            if elsewhere.take(m.sha256):
                excluded.add(m.uid)
                continue
            if twins.get(m.sha256):
                tuid = twins[m.sha256].pop(0)
                matched.append(MessageRow(sname, uidvalidity, m.uid, len(m.body), m.sha256, tname, tuidv, tuid,
                                          "matched", True))  # digest read from the target: verified
            elif max_bytes is not None and len(m.body) > max_bytes:
                importer.refuse(m, f"{len(m.body)} bytes, over the plan's target.max_message_bytes ({max_bytes})")
            else:
                to_append.append(m)
        ctx.state.record_matched(matched)
        arrived += [r.src_uid for r in matched]
        if to_append and not ctx.target_checked and ctx.settings.verify == "readback":
            # The run's first APPEND goes alone and is read back at once: a target that alters messages on
            # APPEND stops the mailbox after one message, never a batch, never a second run.
            first, to_append = to_append[:1], to_append[1:]
            got = importer.append(first, False)
            fr.copied += got
            ctx.target_checked = bool(got) or bool(importer.unconfirmed)  # refused: the next message is the probe
            if got and importer.last_done and importer.last_done[0].tgt_uid is not None:
                check_target_keeps(ctx, dst, tname, importer.last_done[0], first[0].body)
        if to_append:
            fr.copied += importer.append(to_append, multiappend)
        ctx.progress.add(ctx.address, len(batch), sum(len(m.body) for m in batch))
        del batch, to_append

    for uid in excluded:
        fr.bytes -= listing.pop(uid)
    fr.messages = len(listing)
    if excluded:
        fr.notes.append(f"{len(excluded)} message(s) left out: identical to ones this tool copied before under "
                        "another UID (moved by the member since, or under an earlier UIDVALIDITY)")
    if importer.unconfirmed:
        found = confirm_by_digest(ctx, dst, fp, importer.unconfirmed)
        fr.copied += len(found)
        arrived += found
    arrived += importer.confirmed
    if ctx.direction == "forward" and ctx.switch.after:
        late = sum(1 for u in arrived if ctx.switch.above("source", sname, uidvalidity, u))
        fr.late += late
        fr.before_switch += len(arrived) - late
    fr.refused = [(m.uid, said) for m, said in importer.refused]
    if fr.refused:
        fr.notes.append(f"{len(fr.refused)} skipped: the target refused them (" +
                        "; ".join(f"UID {u}: {said}" for u, said in fr.refused[:5]) +
                        (" ..." if len(fr.refused) > 5 else "") + ")")


def confirm_by_digest(ctx: MailboxContext, dst: IMAPClient, fp: FolderPlan, unconfirmed: list[MessageRow]) -> list[int]:
    """A target without UIDPLUS gives no APPENDUID: find this run's appended messages among the target UIDs
    that appeared since the folder was first listed, that no ledger row claims, by SHA-256 (one twin per
    message, a multiset), and record them ``copied`` and verified (their digest was read from the target).
    Whatever is not found stays pending (resolved by the next run as before). Returns their source UIDs."""
    tname, tuidv = fp.target, fp.target_uidvalidity
    with map_imap_errors(ctx.address, ctx.dst_server):
        now = ops.sizes(dst, tname)
        if now.uidvalidity != tuidv:
            return []
        before = ctx.target_before.get((tname, tuidv), frozenset())
        claimed = {r.tgt_uid for r in ctx.state.target_rows(tname) if r.tgt_uidvalidity == tuidv}
        sizes = {r.size for r in unconfirmed}
        candidates = sorted(u for u, size in now.sizes.items() if u not in before and u not in claimed and size in sizes)
        pool: dict[str, list[int]] = {}
        for tuid, sha in ops.digests(dst, candidates, now.sizes, ctx.batch_messages, ctx.batch_bytes):
            pool.setdefault(sha, []).append(tuid)
    found = []
    for r in unconfirmed:
        if pool.get(r.sha256):
            found.append(MessageRow(r.src_folder, r.src_uidvalidity, r.src_uid, r.size, r.sha256, tname, tuidv,
                                    pool[r.sha256].pop(0), "copied", True))
    ctx.state.record_confirmed(found)
    ctx.copied_now.update((r.src_folder, r.src_uid) for r in found)
    ctx.copied_total += len(found)
    return [r.src_uid for r in found]
