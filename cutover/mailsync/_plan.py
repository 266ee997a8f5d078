"""The plan of a mailbox and of each folder: what is there on both sides, what the ledger knows, what to copy.

1. LIST both sides and map names (:func:`map_mailbox`, with ``_folders.map_folders`` and the plan's overrides,
   inverted for a rollback); EXAMINE each source folder and read {UID: RFC822.SIZE}, metadata only
   (:func:`list_source`). The ledger says which source UIDs (under this UIDVALIDITY) already have a twin on
   the target; a twin counts only if its target UID still exists with the same size under the target
   UIDVALIDITY the ledger recorded. Everything else is "to do" (:func:`plan_folder`).
2. Twins already on the target that the ledger does not know about (a crash between APPEND and the ledger
   update, a copy made by another tool, a source UIDVALIDITY reset) are found by SHA-256 (:func:`unknown_twins`):
   target messages not claimed by a ledger row whose size equals the size of a to-do message are read and
   digested. A to-do message whose digest is in that pool takes one twin from it (a multiset: two identical
   source messages need two twins) and is recorded ``matched``; nothing is appended. Because only same-size
   unclaimed messages are read, this costs nothing on a clean run and little on a resume.

Delta fast path (:func:`unchanged_since_verified`): after a folder verifies, the ledger keeps (UIDVALIDITY,
UIDNEXT, MESSAGES) of both folders. A later run asks STATUS on both sides first; if both are unchanged no
message was added or removed anywhere since that verification, and the folder is reported verified without
being listed. Any difference (new mail, an expunge on either side, a UIDVALIDITY reset) sends it down the
full path. Flag changes made after a message was copied are not carried over (the copy is of content, flags
and date at copy time).

A rollback (``direction="reverse"``) plans from the target back to the source, leaving out every target
message the forward ledger put there (by target UID under the same UIDVALIDITY here, by SHA-256 otherwise,
see ``_transfer``). The quota check refuses at once a copy the target cannot hold (:func:`check_quota`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from imapclient import IMAPClient

from cutover.errors import ConnectionLost, MailboxError, QuotaExceeded, Throttled


class FolderRefused(MailboxError):
    """The target will not create a folder of that name: its messages are reported missing, never merged into
    another folder; the mailbox's other folders go on."""

    reason = "folder-refused"
from cutover.imap import map_imap_errors
from cutover.ledger import FolderState, MessageRow
from cutover.mailsync import _imapops as ops
from cutover.mailsync._context import MailboxContext
from cutover.mailsync._folders import FolderMapError, invert, map_folders
from cutover.mailsync._models import FolderReport
from cutover.mailsync._state import same_size


@dataclass(frozen=True)
class MailboxPlan:
    """Where each source folder goes, which target folders exist, and whether the target takes MULTIAPPEND."""

    mapping: dict[str, str]
    target_folders: set[str]
    multiappend: bool


@dataclass(frozen=True)
class SourceFolder:
    """A source folder as listed: {UID: size} (less the forward copies on a rollback) and its STATUS snapshot."""

    source: str
    target: str
    uidvalidity: int
    listing: dict[int, int]
    snapshot: list[int] | None


@dataclass
class FolderPlan:
    """What copying one folder takes: the target as listed before the copy, what is done and what is to do."""

    source: str
    target: str
    uidvalidity: int
    listing: dict[int, int]
    target_listing: ops.Listing | None  # None: the target folder does not exist (dry run only)
    known: FolderState | None  # what the ledger knew about the folder before this run
    done: dict[int, MessageRow]  # source UID -> its row, for twins that are still there
    todo: list[int]  # source UIDs, ascending
    notes: list[str] = field(default_factory=list)

    @property
    def target_uidvalidity(self) -> int | None:
        return self.target_listing.uidvalidity if self.target_listing else None

    @property
    def target_sizes(self) -> dict[int, int]:
        return self.target_listing.sizes if self.target_listing else {}


def map_mailbox(ctx: MailboxContext, src: IMAPClient, dst: IMAPClient) -> MailboxPlan:
    """LIST both sides and map every copyable source folder to its target folder."""
    with map_imap_errors(ctx.address, ctx.src_server):
        src_folders = ops.list_folders(src)
        src_prefix = ops.personal_prefix(src)
    with map_imap_errors(ctx.address, ctx.dst_server):
        dst_folders = ops.list_folders(dst)
        dst_prefix = ops.personal_prefix(dst)
        multiappend = dst.has_capability("MULTIAPPEND")
    overrides = dict(ctx.settings.folder_map)
    if ctx.direction == "reverse":
        overrides = invert(overrides)
    try:
        mapping = map_folders(src_folders, dst_folders, overrides, source_prefix=src_prefix, target_prefix=dst_prefix)
    except FolderMapError as exc:
        raise MailboxError(ctx.address, str(exc)) from None
    # A \Noselect placeholder on the target is not a folder to copy into: CREATE makes it one.
    return MailboxPlan(mapping, {f.name for f in dst_folders if f.selectable} | {"INBOX"}, multiappend)


def unchanged_since_verified(ctx: MailboxContext, src: IMAPClient, dst: IMAPClient, sname: str,
                             tname: str) -> FolderReport | None:
    """A folder pair whose (UIDVALIDITY, UIDNEXT, MESSAGES) on both sides equal those of its last successful
    verification has not changed since (no message added or removed on either side): verified as it was,
    without listing it. Anything else (or any doubt) returns None and the folder takes the full path."""
    last = ctx.state.last_verified(sname, tname)
    if last is None:
        return None
    known, snap = last
    with map_imap_errors(ctx.address, ctx.src_server):
        if ops.status(src, sname) != snap.get("src"):
            return None
    with map_imap_errors(ctx.address, ctx.dst_server):
        if ops.status(dst, tname) != snap.get("tgt"):
            return None
    count, nbytes = ctx.state.totals(sname, known.src_uidvalidity)
    if count != snap.get("verified"):
        return None
    approved = len(ctx.state.approved_refusals(sname, known.src_uidvalidity))  # still left behind, still shown
    return FolderReport(sname, tname, messages=count + approved, bytes=nbytes, skipped=count, verified=True,
                        approved=approved)


def list_source(ctx: MailboxContext, src: IMAPClient, sname: str, tname: str) -> SourceFolder:
    """EXAMINE the source folder and read its sizes; on a rollback, without what the forward copy put there."""
    with map_imap_errors(ctx.address, ctx.src_server):
        found = ops.sizes(src, sname)
    return SourceFolder(sname, tname, found.uidvalidity,
                        ctx.state.without_forward_copies(sname, found.uidvalidity, found.sizes), found.snapshot)


def check_quota(ctx: MailboxContext, dst: IMAPClient, folders: list[SourceFolder],
                target_folders: set[str] | None = None) -> tuple[int, int]:
    """Refuse a copy the target's quota cannot hold; return (messages, bytes) that will really be appended.

    Not counted: messages with a twin the ledger knows, and those a target message no ledger row claims will
    take by SHA-256 (pending rows after a crash, every message after a source UIDVALIDITY reset): estimated by
    size, one unclaimed target message of a size per to-do message of that size, from a metadata-only listing
    of the target folder. An underestimate is caught by the APPEND's own quota answer."""
    needed = count = 0
    for folder in folders:
        rows = ctx.state.rows(folder.source, folder.uidvalidity)
        left = [size for uid, size in folder.listing.items() if not (uid in rows and rows[uid].done)]
        if left and target_folders is not None and folder.target in target_folders:
            with map_imap_errors(ctx.address, ctx.dst_server):
                target = ops.sizes(dst, folder.target)
            # as unknown_twins does: only twins of this source UIDVALIDITY's done rows are taken
            claimed = {r.tgt_uid for r in rows.values() if r.done and r.tgt_uidvalidity == target.uidvalidity}
            unclaimed = Counter(size for uid, size in target.sizes.items() if uid not in claimed)
            kept = []
            for size in left:
                if unclaimed[size] > 0:
                    unclaimed[size] -= 1  # will be matched, not appended
                else:
                    kept.append(size)
            left = kept
        needed += sum(left)
        count += len(left)
    if not needed:
        return count, needed
    with map_imap_errors(ctx.address, ctx.dst_server):
        try:
            free = ops.quota_free(dst)
        except MailboxError:
            raise
        except Exception:  # GETQUOTAROOT refused: the APPEND answer will tell
            free = None
    if free is not None and needed > free:
        raise QuotaExceeded(ctx.address, f"{needed / 1e6:.1f} MB to copy but only {free / 1e6:.1f} MB free "
                            f"on the target's quota", server=ctx.dst_server)
    return count, needed


def plan_folder(ctx: MailboxContext, dst: IMAPClient, folder: SourceFolder, exists_on_target: bool) -> FolderPlan:
    """Create the target folder if needed (not in a dry run), list it, and split the source into done and to do.

    The target UIDs seen here are remembered for the run (an extra copy can only be a UID that came later)."""
    sname, tname, uidvalidity, listing = folder.source, folder.target, folder.uidvalidity, folder.listing
    if not exists_on_target and not ctx.dry_run:
        try:
            with map_imap_errors(ctx.address, ctx.dst_server):
                ops.create_folder(dst, tname, known_absent=True)
        except MailboxError as exc:
            if isinstance(exc, (ConnectionLost, Throttled)):
                raise
            raise FolderRefused(ctx.address, f"the target refused to create {tname!r} (for {sname!r}): "
                                f"{exc.detail}", server=ctx.dst_server) from None
        exists_on_target = True
    with map_imap_errors(ctx.address, ctx.dst_server):
        target = ops.sizes(dst, tname) if exists_on_target else None
    tuidv, tlisting = (target.uidvalidity, target.sizes) if target else (None, {})
    if tuidv is not None and not ctx.dry_run:
        ctx.target_before.setdefault((tname, tuidv), frozenset(tlisting))

    notes: list[str] = []
    known = ctx.state.folder(sname)
    if known is not None and known.src_uidvalidity != uidvalidity:
        note = f"UIDVALIDITY changed {known.src_uidvalidity} -> {uidvalidity}: re-matched by SHA-256"
        notes.append(note)
        if not ctx.dry_run:
            ctx.state.uidvalidity_reset(sname, note)
    rows = ctx.state.rows(sname, uidvalidity)
    done = {uid: r for uid, r in rows.items()
            if uid in listing and r.done and r.tgt_uidvalidity == tuidv and same_size(tlisting, r, listing[uid])}
    todo = [uid for uid in sorted(listing) if uid not in done]
    return FolderPlan(sname, tname, uidvalidity, listing, target, known, done, todo, notes)


def unknown_twins(ctx: MailboxContext, dst: IMAPClient, fp: FolderPlan) -> dict[str, list[int]]:
    """Step 2: {SHA-256: [target UID, ...]} of target messages no ledger row claims, of a size some to-do
    message has (the target folder is the one selected: :func:`plan_folder` listed it last)."""
    claimed = {r.tgt_uid for r in fp.done.values()}
    todo_sizes = {fp.listing[u] for u in fp.todo}
    tlisting = fp.target_sizes
    candidates = sorted(u for u, s in tlisting.items() if u not in claimed and s in todo_sizes)
    pool: dict[str, list[int]] = defaultdict(list)
    if candidates:
        with map_imap_errors(ctx.address, ctx.dst_server):
            for tuid, sha in ops.digests(dst, candidates, tlisting, ctx.settings.batch_messages,
                                         ctx.settings.batch_bytes):
                pool[sha].append(tuid)
    return pool

