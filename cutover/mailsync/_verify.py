"""Verification of a copied folder: every source message has its recorded twin, read back by SHA-256.

Once every folder of the mailbox is copied, the target folder is listed again; every source message must
have its recorded twin (UID present, same size). Twins appended in this run are read back and their SHA-256
compared (``copy.verify: readback``, the default; ``size`` trusts APPENDUID and sizes). When a mailbox has
more than a little to copy and the target's ``max_connections`` allows two sessions per mailbox, the
read-back runs on a second target session right after each APPEND, overlapping the next batch
(:class:`ReadBack`); its digests count only under the target UIDVALIDITY the final listing shows, and
anything it did not read is read at the end as before. A target message that appeared during this run, that
no ledger row claims and whose SHA-256 is that of a copied/matched message is an extra copy: the mailbox
fails (``duplicates``), and stays failed while that UID is there (recorded as an event); older unclaimed
target mail is not judged. Verified rows are marked as their digests come back (a link cut mid-read-back loses
nothing: the next attempt or run reads back only what is still unread), so a delta does not read them again: a message under a
given UID and UIDVALIDITY never changes (RFC 3501), so the recorded digest of an unchanged source UID stays
valid. ``verify_only`` runs trust nothing and compare the multisets of digests of both sides
(:func:`verify_full`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, defaultdict

from imapclient import IMAPClient

from cutover.errors import ConnectionLost, TargetAltersMessages
from cutover.imap import connect, map_imap_errors
from cutover.ledger import MessageRow
from cutover.limits import mailbox_workers
from cutover.mailsync import _imapops as ops
from cutover.mailsync._context import MailboxContext
from cutover.mailsync._models import FolderReport
from cutover.mailsync._state import same_size

log = logging.getLogger("cutover.mailsync")

# Below this much to copy in a mailbox, appended messages are read back at the end of each folder on the
# session already open; above it, a second target session reads them back while the copy goes on.
READBACK_MIN_MESSAGES = 50
READBACK_MIN_BYTES = 4 * 1024 * 1024
READBACK_MIN_BATCH = 1024 * 1024  # bytes per read-back FETCH at least (a larger message goes alone)


class ReadBack:
    """Reads appended messages back from the target on a session of its own, while the next batch is appended.

    The consumer hands over (folder, [(target UID, size)]) right after an APPEND answered; a thread EXAMINEs
    the folder on its own target session (NOOP before each later batch so the session sees the new UIDs),
    fetches ``BODY.PEEK[]`` in byte-bounded batches and keeps {target UID: SHA-256} per (folder, target
    UIDVALIDITY it saw). It only *observes*: nothing is written to the ledger here. :func:`verify_folder` takes
    these digests for twins it would otherwise read itself, under the condition that the target UIDVALIDITY
    is the one it lists (a message under a UID never changes, RFC 3501: read now or at the end is the same);
    whatever this thread could not read (a UID it did not see, a failure) is read by :func:`verify_folder` as
    before. A failure here never fails the copy: it stops the thread and the work falls back to the serial path.
    """

    def __init__(self, ctx: MailboxContext) -> None:
        self.ctx = ctx
        self._items: queue.Queue = queue.Queue()  # (folder, [(uid, size)]): UIDs only, never bodies
        self._results: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed = False
        self._closed = False

    @classmethod
    def if_affordable(cls, ctx: MailboxContext) -> ReadBack | None:
        """A third session (second on the target) for concurrent read-back, when the target's connection
        budget allows two per mailbox and read-back is asked for; None means read back serially."""
        if ctx.dry_run or ctx.verify_only or ctx.settings.verify != "readback":
            return None
        if 2 * mailbox_workers(ctx.plan) > ctx.dst_provider.max_connections:
            return None
        return cls(ctx)

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread; its first act is to open its target session."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._work, name=f"readback-{self.ctx.address}", daemon=True)
            self._thread.start()
            self._items.put(("", []))  # connect now, not at the first batch

    def submit(self, folder: str, uids_sizes: list[tuple[int, int]]) -> None:
        if self._failed or self._closed or not uids_sizes or self._thread is None:
            return
        self._items.put((folder, uids_sizes))

    def take(self, folder: str, uidvalidity: int) -> dict[int, str]:
        """Wait for every batch handed over so far; return (and forget) the digests read in ``folder``."""
        if self._thread is not None:
            self._items.join()
        with self._lock:
            got = self._results.pop((folder, uidvalidity), {})
            for key in [k for k in self._results if k[0] == folder]:
                del self._results[key]  # another UIDVALIDITY: useless now
        return got

    def close(self) -> None:
        self._closed = self._failed = True  # batches still queued (the copy stopped early) are dropped
        if self._thread is not None:
            self._items.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        ctx = self.ctx
        client: IMAPClient | None = None
        selected: tuple[str, int] | None = None
        try:
            while True:
                item = self._items.get()
                try:
                    if item is None:
                        return
                    if self._failed:
                        continue  # drain: the serial path reads what this thread did not
                    folder, uids_sizes = item
                    try:
                        with map_imap_errors(ctx.address, ctx.dst_server):
                            if client is None:
                                # never waits for a slot: the copy sessions hold theirs (waiting could deadlock)
                                client = ops.quiet(connect(ctx.plan, ctx.dst_side, ctx.mailbox, wait_for_slot=False))
                            if not uids_sizes:
                                continue
                            if selected is None or selected[0] != folder:
                                selected = (folder, ops.select(client, folder)[0])
                            else:
                                client.noop()  # let the session see the UIDs appended since
                            sizes = dict(uids_sizes)
                            # a quarter of the copy's batches: only digests are wanted here, and this is the
                            # fourth batch a mailbox holds in memory (two fetched, one being appended)
                            got = dict(ops.digests(client, sorted(sizes), sizes, ctx.batch_messages,
                                                   max(READBACK_MIN_BATCH, ctx.batch_bytes // 4)))
                        with self._lock:
                            self._results[selected].update(got)
                    except Exception as exc:
                        self._failed = True
                        log.info("concurrent read-back stopped, verification reads serially address=%s detail=%s",
                                 ctx.address, str(exc)[:200])
                finally:
                    self._items.task_done()
        finally:
            if client is not None:
                ops.logout(client)


def describe_difference(sent: bytes, stored: bytes | None) -> str:
    """Where two versions of a message first differ, in words an operator can act on (a few bytes each side)."""
    if stored is None:
        return f"{len(sent)} bytes sent, the copy could not be read back"
    at = next((i for i, (a, b) in enumerate(zip(sent, stored)) if a != b), min(len(sent), len(stored)))
    line = sent[:at].count(b"\n") + 1
    return (f"{len(sent)} bytes sent, {len(stored)} stored; first difference at byte {at} (line {line}): "
            f"sent {sent[at:at + 40]!r}, stored {stored[at:at + 40]!r}")


def check_target_keeps(ctx: MailboxContext, dst: IMAPClient, tname: str, row: MessageRow, sent: bytes) -> None:
    """Read back at once the first message a run appends and stop the mailbox with :class:`TargetAltersMessages`
    if the target stored other bytes: nothing more is appended."""
    with map_imap_errors(ctx.address, ctx.dst_server):
        # EXAMINE (again: the session sees the new UID) and read it, in one round trip
        now, digest = ops.examine_and_digest(dst, tname, row.tgt_uid)  # type: ignore[arg-type]
        if now != row.tgt_uidvalidity or digest is None:
            return  # another folder by now, or not visible here (yet): the verification reads it back as usual
        if digest == row.sha256:
            ctx.state.mark_verified(row.src_folder, row.src_uidvalidity, [row.src_uid])
            return
        stored = dst.fetch([row.tgt_uid], ["BODY.PEEK[]"]).get(row.tgt_uid, {}).get(b"BODY[]")
    altered(ctx, tname, row, describe_difference(sent, stored))


def altered(ctx: MailboxContext, tname: str, row: MessageRow, difference: str) -> None:
    """Record that the target altered ``row``'s copy and stop the mailbox (raises)."""
    detail = (f"target alters messages: the copy of {row.src_folder!r} UID {row.src_uid} in {tname!r} (UID "
              f"{row.tgt_uid}) differs from what was appended: {difference}; nothing more is appended")
    ctx.state.record_target_alters(row.src_folder, row.src_uidvalidity, row.src_uid, detail)
    log.error("target alters messages address=%s folder=%s uid=%s", ctx.address, tname, row.tgt_uid)
    raise TargetAltersMessages(ctx.address, detail, server=ctx.dst_server)


def check_flags_and_dates(ctx: MailboxContext, src: IMAPClient, dst: IMAPClient, fr: FolderReport, sname: str,
                          tname: str, tuidv: int, pairs: dict[int, int], *, store: bool = True,
                          read: tuple[dict, dict] | None = None) -> None:
    """Compare flags (keywords, \\Seen, ...; not \\Recent) and INTERNALDATE of copies this tool APPENDed
    (``pairs``: source UID -> target UID) with their source; a flag difference is repaired with STORE on that
    copy (never on a message this tool did not put there), a date difference (STORE cannot set it) is reported.
    ``read``: (source, target) flags and dates read already (:func:`_list_with_flags`), else asked here."""
    if not pairs:
        return
    if read is not None:
        _compare_flags_and_dates(ctx, dst, fr, tname, tuidv, pairs, *read, store=store)
        return
    # both sides asked before either answer is read: one round trip
    with map_imap_errors(ctx.address, ctx.src_server):
        src_sent = ops.examine_flags_and_dates(src, sname, sorted(pairs))
    with map_imap_errors(ctx.address, ctx.dst_server):
        dst_sent = ops.examine_flags_and_dates(dst, tname, sorted(pairs.values()))
    with map_imap_errors(ctx.address, ctx.src_server):
        _, source = ops.flags_and_dates_of(src_sent, sorted(pairs))
    with map_imap_errors(ctx.address, ctx.dst_server):
        now, target = ops.flags_and_dates_of(dst_sent, sorted(pairs.values()))
    if now != tuidv:  # nothing read now could count
        raise ConnectionLost(ctx.address, f"UIDVALIDITY of target {tname!r} changed during the copy; starting over",
                             server=ctx.dst_server)
    _compare_flags_and_dates(ctx, dst, fr, tname, tuidv, pairs, source, target, store=store)


def _compare_flags_and_dates(ctx: MailboxContext, dst: IMAPClient, fr: FolderReport, tname: str, tuidv: int,
                             pairs: dict[int, int], source: dict, target: dict, *, store: bool) -> None:
    repair: dict[frozenset, list[int]] = defaultdict(list)
    dates: list[str] = []
    for suid, tuid in sorted(pairs.items()):
        if suid not in source or tuid not in target:
            continue
        (sflags, sdate), (tflags, tdate) = source[suid], target[tuid]
        if sflags != tflags:
            repair[sflags].append(tuid)
        if sdate is not None and tdate is not None and sdate != tdate:
            dates.append(f"UID {suid}: {sdate.isoformat()} on the source, {tdate.isoformat()} on the copy")
    if repair and not store:
        fr.notes.append(f"{sum(len(t) for t in repair.values())} copy(ies) have other flags than the source "
                        "(verification only: not changed; the next copy sets them again)")
    elif repair:
        with map_imap_errors(ctx.address, ctx.dst_server):
            dst.select_folder(tname)  # read-write, for STORE only on our copies
            if int(dst.folder_status(tname, [b"UIDVALIDITY"])[b"UIDVALIDITY"]) != tuidv:
                raise ConnectionLost(ctx.address, f"UIDVALIDITY of target {tname!r} changed during the copy",
                                     server=ctx.dst_server)
            for flags, tuids in repair.items():
                dst.set_flags(tuids, list(flags), silent=True)
            ops.select(dst, tname)  # back to EXAMINE; never CLOSE, which would expunge \\Deleted copies
        fr.flags_repaired = sum(len(t) for t in repair.values())
        fr.notes.append(f"{fr.flags_repaired} copy(ies) had other flags than the source: set again with STORE")
    if dates:
        fr.dates_differ = len(dates)
        fr.notes.append(f"{len(dates)} copy(ies) have another INTERNALDATE than the source ({'; '.join(dates[:3])}"
                        f"{' ...' if len(dates) > 3 else ''}): the target did not keep the date given on APPEND")


def _reselect(ctx: MailboxContext, dst: IMAPClient, tname: str, tuidv: int) -> None:
    """EXAMINE ``tname`` again; a UIDVALIDITY other than the listed one means nothing read now could count."""
    if ops.select(dst, tname)[0] != tuidv:
        raise ConnectionLost(ctx.address, f"UIDVALIDITY of target {tname!r} changed during the copy; starting over",
                             server=ctx.dst_server)


def verify_folder(ctx: MailboxContext, dst: IMAPClient, fr: FolderReport, sname: str, tname: str, uidvalidity: int,
                  listing: dict[int, int], target: ops.Listing | None = None, src_snapshot: list[int] | None = None,
                  readback: ReadBack | None = None, src: IMAPClient | None = None) -> FolderReport:
    """Complete ``fr`` (missing, duplicates, verified, skipped) for a copied folder and leave the marks in the ledger.

    ``target``: the target folder as listed before the copy when nothing was written to it since (else listed
    here); ``src_snapshot``: the source folder's state as listed, remembered for the delta fast path."""
    a, state, settings = ctx.address, ctx.state, ctx.settings
    listed_before = target is not None
    flags_read: tuple[dict, dict] | None = None
    read_along: dict[int, str] = {}  # read back with the listing
    if target is None:
        target, flags_read, read_along = _list_with_flags(ctx, src, dst, sname, tname, uidvalidity, listing)
    # Digests the concurrent read-back took: only those under the target UIDVALIDITY listed here count.
    early = {**read_along, **(readback.take(tname, target.uidvalidity) if readback is not None else {})}
    tuidv, tlisting = target.uidvalidity, target.sizes
    rows = state.rows(sname, uidvalidity)
    approved = state.approved_refusals(sname, uidvalidity)  # skipped, and an operator approved leaving them
    missing = 0
    trusted: list[int] = []
    to_read: dict[int, MessageRow] = {}  # target uid -> row
    elsewhere = 0
    for uid in listing:
        r = rows.get(uid)
        if r is not None and r.done and r.tgt_folder != tname:
            elsewhere += 1  # copied before an operator remapped the folder: it stays where it went
            continue
        if r is not None and r.done and r.state == "copied" and r.tgt_uidvalidity == tuidv and r.tgt_uid in tlisting \
                and not same_size(tlisting, r, listing[uid]):
            # our APPEND under this UID, another size: a UID never changes (RFC 3501), the target altered it
            altered(ctx, tname, r, f"{r.size} bytes sent, {tlisting[r.tgt_uid]} stored")
        if r is None or not r.done or r.tgt_uidvalidity != tuidv or not same_size(tlisting, r, listing[uid]):
            if ctx.copied_once and r is not None and r.done and (r.tgt_uidvalidity != tuidv or r.tgt_uid not in tlisting):
                fr.gone += 1  # copied once; the member deleted or moved the copy since: theirs, not missing
                continue
            if uid in approved:
                fr.approved += 1
                continue
            missing += 1
        elif r.verified or settings.verify == "size":
            trusted.append(uid)
        else:
            to_read[r.tgt_uid] = r  # type: ignore[index]
    mismatched: list[int] = []
    marked: set[int] = set()  # source UIDs marked verified as their digest came back

    def settle(got: dict[int, str]) -> None:
        """Record read-back digests as they arrive (durable progress: a cut link does not lose them, and the
        next attempt or run reads back only what is still unread)."""
        good = [to_read[t].src_uid for t, sha in got.items() if sha == to_read[t].sha256]
        bad = [to_read[t].src_uid for t, sha in got.items() if sha != to_read[t].sha256]
        if good:
            state.mark_verified(sname, uidvalidity, good)
            marked.update(good)
            trusted.extend(good)
        if bad:
            first = next(to_read[t] for t, sha in got.items() if sha != to_read[t].sha256)
            if first.state == "copied":  # our own APPEND read back other bytes: the target alters messages
                state.mark_mismatch(sname, uidvalidity, bad)
                altered(ctx, tname, first, f"{first.size} bytes sent, SHA-256 of the stored copy differs")
            state.mark_mismatch(sname, uidvalidity, bad)
            mismatched.extend(bad)

    if to_read:
        seen = {tuid: early[tuid] for tuid in to_read if tuid in early}
        settle(seen)
        rest = sorted(tuid for tuid in to_read if tuid not in seen)
        if rest:
            with map_imap_errors(a, ctx.dst_server):
                if listed_before:
                    # the session is on another folder since (verification follows the copy of every folder)
                    _reselect(ctx, dst, tname, tuidv)
                got: dict[int, str] = {}
                for tuid, sha in ops.digests(dst, rest, tlisting, ctx.batch_messages, ctx.batch_bytes):
                    seen[tuid] = got[tuid] = sha
                    if len(got) >= ctx.batch_messages:
                        settle(got)
                        got = {}
                settle(got)
        gone = [r.src_uid for tuid, r in to_read.items() if tuid not in seen]  # vanished from the target
        if gone and ctx.copied_once:
            fr.gone += len(gone)  # the member's doing after the switch: never copied again
        elif gone:
            state.mark_mismatch(sname, uidvalidity, gone)
            mismatched.extend(gone)
    if elsewhere:
        fr.notes.append(f"{elsewhere} message(s) stay in the target folder they were copied to before the remap")
    if mismatched:
        fr.notes.append(f"{len(mismatched)} target copy(ies) differ from the source; they will be copied again")
        missing += len(mismatched)
    state.mark_verified(sname, uidvalidity, [u for u in trusted if not rows[u].verified and u not in marked])
    pending = Counter(r.sha256 for r in rows.values() if r.state == "pending")
    extra = duplicates(ctx, dst, sname, tname, target, pending)
    if extra:
        fr.notes.append(f"{len(extra)} message(s) are on the target twice (extra copies at target UIDs "
                        f"{', '.join(map(str, extra[:20]))}{' ...' if len(extra) > 20 else ''} of "
                        f"{tname!r}, UIDVALIDITY {tuidv}): remove the extra copies, then run again")
    fr.duplicates = len(extra)
    fr.missing = missing
    state.forget_refusals(sname, uidvalidity, [u for u in trusted if u in approved])  # got through after all
    if src is not None and settings.verify == "readback":
        # Our copies: all of them before the switch (the source is the truth), only this run's after it (the
        # member owns the flags of older copies: reading a message on the target sets \\Seen there).
        ours = {u: rows[u].tgt_uid for u in set(trusted) if rows[u].state == "copied" and rows[u].tgt_uid is not None
                and rows[u].tgt_uidvalidity == tuidv and rows[u].tgt_folder == tname
                and (not ctx.copied_once or (sname, u) in ctx.copied_now)}
        check_flags_and_dates(ctx, src, dst, fr, sname, tname, tuidv, ours, read=flags_read)  # type: ignore[arg-type]
    fr.verified = missing == 0 and not extra and not fr.dates_differ
    fr.skipped = max(0, fr.messages - fr.copied - missing - fr.approved)
    if fr.verified:
        state.remember_snapshot(sname, src_snapshot, target.snapshot, state.totals(sname, uidvalidity)[0])
    return fr


def _list_with_flags(ctx: MailboxContext, src: IMAPClient | None, dst: IMAPClient, sname: str, tname: str,
                     uidvalidity: int, listing: dict[int, int]) -> tuple[ops.Listing, tuple[dict, dict] | None,
                                                                    dict[int, str]]:
    """The target folder's listing, asked of both sessions before either answer is read (one round trip) with:
    for the flags check, the flags and dates of every copy of ours there and of its source message; and, when
    they are few (a delta's: up to 1 MB), the bodies of our copies not read back yet ({target UID: SHA-256}: the read-back
    costs no round trip of its own). Without a flags check (``verify: size``, no source session): the listing."""
    rows = ctx.state.rows(sname, uidvalidity)
    unread = {r.tgt_uid: r for u, r in rows.items() if u in listing and r.state == "copied" and not r.verified
              and r.tgt_uid is not None and r.tgt_folder == tname}
    if ctx.settings.verify != "readback" or not unread or len(unread) > ctx.batch_messages \
            or sum(r.size for r in unread.values()) > READBACK_MIN_BATCH:
        unread = {}  # more than a small delta's: read back in batches (memory stays bounded)
    bodies = [(s, "(BODY.PEEK[])") for s in ops.uid_sets(sorted(unread))] if unread else []  # type: ignore[arg-type]
    if src is None or ctx.settings.verify != "readback":
        with map_imap_errors(ctx.address, ctx.dst_server):
            return ops.listing_of(*ops.Examining(dst, tname, ops.SIZES + bodies).read()), None, {}
    pairs = {u: r.tgt_uid for u, r in rows.items() if u in listing and r.state == "copied" and r.tgt_uid is not None
             and r.tgt_folder == tname and (not ctx.copied_once or (sname, u) in ctx.copied_now)}
    with map_imap_errors(ctx.address, ctx.src_server):
        src_sent = ops.examine_flags_and_dates(src, sname, sorted(pairs))
    with map_imap_errors(ctx.address, ctx.dst_server):
        dst_sent = ops.Examining(dst, tname, ops.SIZES + ops.flag_fetches(sorted(pairs.values())) + bodies)  # type: ignore[arg-type]
    with map_imap_errors(ctx.address, ctx.src_server):
        _, source = ops.flags_and_dates_of(src_sent, sorted(pairs))
    with map_imap_errors(ctx.address, ctx.dst_server):
        info, datas = dst_sent.read()
        digests = ops.digests_in(dst, datas[0], list(unread)) if unread else {}
    return ops.listing_of(info, datas), (source, ops.flags_and_dates_in(datas, pairs.values())), digests


def duplicates(ctx: MailboxContext, dst: IMAPClient, sname: str, tname: str, target: ops.Listing,
               pending: Counter) -> list[int]:
    """Target UIDs holding an extra copy of a message this ledger has a twin for, made during this run (or
    found so by an earlier run and still there). Cheap: only target messages that appeared since this run
    first listed the folder and that no ledger row claims are read (none on a clean run); target mail that
    was there before (another tool's copies, mail delivered to the target) is not judged."""
    a, state = ctx.address, ctx.state
    tuidv, tlisting = target.uidvalidity, target.sizes
    known = state.known_duplicates(sname, tname, tuidv, tlisting)
    before = ctx.target_before.get((tname, tuidv))
    if before is None:
        return known
    ours = [r for r in state.target_rows(tname) if r.tgt_uidvalidity == tuidv]
    claimed = {r.tgt_uid for r in ours}
    new = sorted(u for u in tlisting if u not in before and u not in claimed and u not in known)
    sizes = {r.size for r in ours}
    candidates = [u for u in new if tlisting[u] in sizes]
    found: list[int] = []
    if candidates:
        digests = {r.sha256 for r in ours}
        unconfirmed = Counter(pending)  # appended without APPENDUID: a copy of each may be here, once
        with map_imap_errors(a, ctx.dst_server):
            _reselect(ctx, dst, tname, tuidv)
            for u, sha in ops.digests(dst, candidates, tlisting, ctx.batch_messages,
                                      ctx.batch_bytes):
                if unconfirmed[sha] > 0:
                    unconfirmed[sha] -= 1
                elif sha in digests:
                    found.append(u)
    if found:
        state.record_duplicates(sname, tname, tuidv, found)
        log.error("duplicates on the target address=%s folder=%s uidvalidity=%d uids=%s", a, tname, tuidv, found)
    return sorted(set(known) | set(found))


def verify_full(ctx: MailboxContext, src: IMAPClient, dst: IMAPClient, sname: str, tname: str,
                listing: dict[int, int], exists_on_target: bool) -> FolderReport:
    """Trust nothing: the multiset of SHA-256 digests of every message on both sides (reads everything); and,
    before the switch, the flags and dates of our copies (reported only: a verification changes nothing)."""
    fr = FolderReport(sname, tname, messages=len(listing), bytes=sum(listing.values()))
    with map_imap_errors(ctx.address, ctx.src_server):
        suidv, _ = ops.select(src, sname)
        src_digests = Counter(sha for _, sha in ops.digests(src, sorted(listing), listing, ctx.batch_messages, ctx.batch_bytes))
    ctx.progress.add(ctx.address, len(listing), fr.bytes)
    dst_digests: Counter = Counter()
    target: ops.Listing | None = None
    if exists_on_target:
        with map_imap_errors(ctx.address, ctx.dst_server):
            target = ops.sizes(dst, tname)
            dst_digests = Counter(sha for _, sha in ops.digests(dst, sorted(target.sizes), target.sizes,
                                                                ctx.batch_messages, ctx.batch_bytes))
    fr.missing = sum((src_digests - dst_digests).values())
    if target is not None and ctx.settings.verify == "readback" and not ctx.copied_once:
        pairs = {u: r.tgt_uid for u, r in ctx.state.rows(sname, suidv).items()
                 if u in listing and r.state == "copied" and r.tgt_folder == tname
                 and r.tgt_uidvalidity == target.uidvalidity and r.tgt_uid in target.sizes}
        check_flags_and_dates(ctx, src, dst, fr, sname, tname, target.uidvalidity, pairs,  # type: ignore[arg-type]
                              store=False)
    fr.verified = fr.missing == 0 and not fr.dates_differ
    fr.skipped = fr.messages - fr.missing
    return fr
