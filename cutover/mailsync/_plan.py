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
full path. A flag change alone does not change STATUS: it is carried over (``_verify.check_flags_and_dates``)
by the next run that takes the full path for that folder.

After the switch (``ctx.copied_once``, see ``_switch``) a source UID with a copied/matched row is done whatever
became of its twin; before it, a twin must still be there. The mapping recorded at the first copy is kept
(:func:`keep_recorded_mapping`).

A rollback (``direction="reverse"``) plans from the target back to the source, leaving out every target
message the forward ledger put there (by target UID under the same UIDVALIDITY here, by SHA-256 otherwise,
see ``_transfer``). The quota check refuses at once a copy the target cannot hold (:func:`check_quota`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from imapclient import IMAPClient

from cutover.errors import ConnectionLost, MailboxError, QuotaExceeded, Throttled

from cutover.imap import map_imap_errors
from cutover.ledger import FolderState, MessageRow
from cutover.mailsync import _imapops as ops
from cutover.mailsync import _survey as survey
from cutover.mailsync._context import MailboxContext
from cutover.mailsync._folders import FolderMapError, invert, map_folders
from cutover.mailsync._models import FolderReport
from cutover.mailsync._state import same_size


class FolderRefused(MailboxError):
    """The target will not create a folder of that name: its messages are reported missing, never merged into
    another folder; the mailbox's other folders go on."""

    reason = "folder-refused"


@dataclass(frozen=True)
class MailboxPlan:
    """Where each source folder goes, which target folders exist, and whether the target takes MULTIAPPEND."""

    mapping: dict[str, str]
    target_folders: set[str]
    multiappend: bool
    # source folders whose mapping would change since the ledger recorded it: {source: (recorded, now, why)};
    # they are not copied until an operator decides (``copy --remap``), never copied a second time
    changed: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # STATUS (UIDVALIDITY, UIDNEXT, MESSAGES) asked with the LIST, of the folders the ledger has a verified
    # snapshot of: {folder: status or None}, source side and target side (see unchanged_since_verified)
    source_status: dict[str, list[int] | None] = field(default_factory=dict)
    target_status: dict[str, list[int] | None] = field(default_factory=dict)


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
    """LIST both sides and map every copyable source folder to its target folder.

    One round trip for both sides: NAMESPACE, LIST and, for the delta fast path, STATUS of every folder pair the
    ledger has a verified snapshot of, are sent on both sessions before any answer is read."""
    known = [] if ctx.dry_run or ctx.verify_only or ctx.repair is not None else [
        f for f in ctx.state.folders().values() if f.snapshot]
    with map_imap_errors(ctx.address, ctx.src_server):
        src_sent = survey.SurveySent(src, sorted({f.src_folder for f in known}))
    with map_imap_errors(ctx.address, ctx.dst_server):
        dst_sent = survey.SurveySent(dst, sorted({f.tgt_folder for f in known}))
        multiappend = dst.has_capability("MULTIAPPEND")
    with map_imap_errors(ctx.address, ctx.src_server):
        src_seen = src_sent.read()
    with map_imap_errors(ctx.address, ctx.dst_server):
        dst_seen = dst_sent.read()
    src_folders, src_prefix, dst_folders, dst_prefix = src_seen.folders, src_seen.prefix, dst_seen.folders, dst_seen.prefix
    overrides = dict(ctx.settings.folder_map)
    if ctx.direction == "reverse":
        overrides = invert(overrides)
    try:
        mapping = map_folders(src_folders, dst_folders, overrides, source_prefix=src_prefix, target_prefix=dst_prefix)
    except FolderMapError as exc:
        raise MailboxError(ctx.address, str(exc)) from None
    changed = keep_recorded_mapping(ctx, src, mapping, dst_folders)
    # A \Noselect placeholder on the target is not a folder to copy into: CREATE makes it one.
    return MailboxPlan(mapping, {f.name for f in dst_folders if f.selectable} | {"INBOX"}, multiappend, changed,
                       src_seen.status, dst_seen.status)


def keep_recorded_mapping(ctx: MailboxContext, src: IMAPClient, mapping: dict[str, str],
                          dst_folders: list) -> dict[str, tuple[str, str, str]]:
    """The folder mapping is the one the ledger recorded at the first copy (dsync's mailbox tree state): an
    operator's remap decision replaces it; a mapping that would change (a special-use folder that appeared on
    the target, a plan override changed, a source folder renamed: same UIDVALIDITY under a new name) takes the
    folder out of ``mapping`` (edited in place) and is returned, {source: (recorded, now, why)}."""
    known = ctx.state.folders()
    remaps = ctx.ledger.remaps(ctx.address, ctx.direction)
    vanished = {f.src_folder: f for f in known.values() if f.src_folder not in mapping}
    fresh = [s for s in mapping if s not in known]
    uidvalidities: dict[str, int] = {}
    if vanished and fresh:  # a rename keeps the UIDVALIDITY (RFC 3501): one STATUS round trip tells
        with map_imap_errors(ctx.address, ctx.src_server):
            uidvalidities = {n: v[0] for n, v in survey.statuses(src, fresh).items() if v}
    renamed_from = {s: next((old for old, f in vanished.items() if f.src_uidvalidity == uidvalidities.get(s)), None)
                    for s in fresh}
    special = {f.name: f.special_use() for f in dst_folders if f.special_use()}
    changed: dict[str, tuple[str, str, str]] = {}
    for sname, now in list(mapping.items()):
        if sname in remaps:
            mapping[sname] = remaps[sname][0]
            old = renamed_from.get(sname)
            if old is not None and not ctx.dry_run:  # its rows follow it: nothing copied under the old name again
                ctx.ledger.adopt_source_folder(ctx.address, ctx.direction, old, sname, uidvalidities[sname])
            continue
        if sname in known:
            recorded = known[sname].tgt_folder
            if recorded == now:
                continue
            why = f" (the target's {special[now]} folder)" if now in special else ""
        elif renamed_from.get(sname) is not None:
            old = renamed_from[sname]
            recorded = vanished[old].tgt_folder
            why = f" (renamed on the source from {old!r}: same UIDVALIDITY)"
        else:
            continue
        changed[sname] = (recorded, now, why)
        del mapping[sname]
    return changed


def unchanged_since_verified(ctx: MailboxContext, src: IMAPClient, dst: IMAPClient, pairs: dict[str, str],
                             seen: MailboxPlan | None = None) -> dict[str, FolderReport]:
    """Folder pairs (source -> target) whose (UIDVALIDITY, UIDNEXT, MESSAGES) on both sides equal those of their
    last successful verification have not changed since (no message added or removed on either side): verified
    as they were, without listing them. Returned by source name; every other folder (or any doubt) takes the
    full path. The ledger is read once for the mailbox; STATUS comes from ``seen`` (asked with the LIST, see
    :func:`map_mailbox`), or is asked here, pipelined: one round trip per side."""
    folders = ctx.state.folders()
    last: dict[str, tuple[str, dict]] = {}
    for sname, tname in pairs.items():
        known = folders.get(sname)
        if known is not None and known.snapshot and known.tgt_folder == tname:
            last[sname] = (tname, json.loads(known.snapshot))
    if not last:
        return {}
    src_now = dict(seen.source_status) if seen is not None else {}
    dst_now = dict(seen.target_status) if seen is not None else {}
    if ask := [s for s in last if s not in src_now]:
        with map_imap_errors(ctx.address, ctx.src_server):
            src_now.update(survey.statuses(src, ask))
    if ask := [t for t, _ in last.values() if t not in dst_now]:
        with map_imap_errors(ctx.address, ctx.dst_server):
            dst_now.update(survey.statuses(dst, ask))
    totals = ctx.state.verified_totals()
    approved_all = ctx.state.approved_refusals_all()
    out: dict[str, FolderReport] = {}
    for sname, (tname, snap) in last.items():
        if src_now.get(sname) != snap.get("src") or dst_now.get(tname) != snap.get("tgt"):
            continue
        uidvalidity = folders[sname].src_uidvalidity
        count, nbytes = totals.get((sname, uidvalidity), (0, 0))
        if count != snap.get("verified"):
            continue
        approved = len(approved_all.get((sname, uidvalidity), ()))  # still left behind, still shown
        out[sname] = FolderReport(sname, tname, messages=count + approved, bytes=nbytes, skipped=count, verified=True,
                                  approved=approved)
    return out


def list_sources(ctx: MailboxContext, src: IMAPClient, pairs: dict[str, str], dst: IMAPClient | None = None,
                 target_folders: set[str] | None = None) -> tuple[list[SourceFolder], TargetSeen | None]:
    """:func:`list_source` of every (source, target) pair and, with ``dst`` (a copy), the listing of each of their
    target folders that exists and the target's free quota, for :func:`check_quota`: every EXAMINE, FETCH and
    GETQUOTAROOT sent on both sessions before the first answer is read, one round trip for the lot."""
    with map_imap_errors(ctx.address, ctx.src_server):
        src_sent = ops.Listings(src, list(pairs))
    dst_sent = None
    if dst is not None and pairs:  # nothing changed on the source: nothing to ask the target either
        with map_imap_errors(ctx.address, ctx.dst_server):
            dst_sent = ops.Listings(dst, sorted({t for t in pairs.values() if t in (target_folders or ())}), quota=True)
    with map_imap_errors(ctx.address, ctx.src_server):
        found, _ = src_sent.read()
    seen = None
    if dst_sent is not None:
        with map_imap_errors(ctx.address, ctx.dst_server):
            seen = TargetSeen(*dst_sent.read())
    return [list_source(ctx, src, sname, tname, found[sname]) for sname, tname in pairs.items()], seen


@dataclass(frozen=True)
class TargetSeen:
    """The target folders listed with the source folders (:func:`list_sources`) and the target's free quota."""

    listings: dict[str, ops.Listing]
    free: int | None


def list_source(ctx: MailboxContext, src: IMAPClient, sname: str, tname: str,
                found: ops.Listing | None = None) -> SourceFolder:
    """EXAMINE the source folder and read its sizes (unless ``found``: listed already); on a rollback, without
    what the forward copy put there."""
    if found is None:
        with map_imap_errors(ctx.address, ctx.src_server):
            found = ops.sizes(src, sname)
    listing = ctx.state.without_forward_copies(sname, found.uidvalidity, found.sizes)
    if ctx.direction == "reverse" and ctx.switch.marked and ctx.repair is None:
        # A rollback copies back what reached the target after the switch: nothing the mark saw there
        # (a provider's welcome message, anything older) goes to the source.
        listing = {u: s for u, s in listing.items() if ctx.switch.above("target", sname, found.uidvalidity, u)}
    return SourceFolder(sname, tname, found.uidvalidity, listing, found.snapshot)


def check_quota(ctx: MailboxContext, dst: IMAPClient, folders: list[SourceFolder],
                target_folders: set[str] | None = None,
                listed: dict[str, ops.Listing] | None = None, seen: TargetSeen | None = None) -> tuple[int, int]:
    """Refuse a copy the target's quota cannot hold; return (messages, bytes) that will really be appended.

    Not counted: messages with a twin the ledger knows, and those a target message no ledger row claims will
    take by SHA-256 (pending rows after a crash, every message after a source UIDVALIDITY reset): estimated by
    size, one unclaimed target message of a size per to-do message of that size, from a metadata-only listing
    of the target folder (all of them in one round trip, or ``seen`` already), put in ``listed`` for
    :func:`plan_folder` to use. An underestimate is caught by the APPEND's own quota answer."""
    needed = count = 0
    lefts = []
    for folder in folders:
        rows = ctx.state.rows(folder.source, folder.uidvalidity)
        lefts.append((folder, rows, [size for uid, size in folder.listing.items() if not (uid in rows and rows[uid].done)]))
    ask = sorted({f.target for f, _, left in lefts if left and target_folders is not None and f.target in target_folders})
    found: dict[str, ops.Listing] = {}
    if seen is not None:
        found = {t: seen.listings[t] for t in ask if t in seen.listings}
    if ask := [t for t in ask if t not in found]:
        with map_imap_errors(ctx.address, ctx.dst_server):
            found.update(ops.sizes_many(dst, ask))
    if listed is not None:
        listed.update(found)
    for folder, rows, left in lefts:
        if folder.target in found:
            target = found[folder.target]
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
    if seen is not None:
        free = seen.free
    else:
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


def plan_folder(ctx: MailboxContext, dst: IMAPClient, folder: SourceFolder, exists_on_target: bool,
                listed: ops.Listing | None = None) -> FolderPlan:
    """Create the target folder if needed (not in a dry run), list it (unless ``listed``: listed earlier in this
    run, nothing written there since), and split the source into done and to do.

    The target UIDs seen here are remembered for the run (an extra copy can only be a UID that came later)."""
    sname, tname, uidvalidity, listing = folder.source, folder.target, folder.uidvalidity, folder.listing
    if not exists_on_target and ctx.copied_once:
        known, rows = ctx.state.folder(sname), ctx.state.rows(sname, uidvalidity)
        if known is not None and known.tgt_folder == tname and all(u in rows and rows[u].done for u in listing):
            # The member deleted the folder on the target after the switch and nothing new is to go there:
            # it is not made again (target_listing None and nothing to do: see _brain).
            return FolderPlan(sname, tname, uidvalidity, listing, None, known,
                              {u: rows[u] for u in listing}, [], [f"{tname!r} deleted on the target by the member "
                                                                  "after the switch: not made again"])
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
    target = listed if exists_on_target else None
    if exists_on_target and target is None:
        with map_imap_errors(ctx.address, ctx.dst_server):
            target = ops.sizes(dst, tname)
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
    if ctx.copied_once:
        # After the switch (and on every rollback) the copy is the member's: copied once is done, wherever the
        # copy is now (deleted, moved to another folder, flagged); only what the ledger never copied goes.
        done = {uid: r for uid, r in rows.items() if uid in listing and r.done}
    else:
        # A copy in another target folder was put there before an operator remapped this folder: it stays there.
        done = {uid: r for uid, r in rows.items()
                if uid in listing and r.done and (r.tgt_folder != tname or (
                    r.tgt_uidvalidity == tuidv and same_size(tlisting, r, listing[uid])))}
    todo = [uid for uid in sorted(listing) if uid not in done]
    return FolderPlan(sname, tname, uidvalidity, listing, target, known, done, todo, notes)


def unknown_twins(ctx: MailboxContext, dst: IMAPClient, fp: FolderPlan) -> dict[str, list[int]]:
    """Step 2: {SHA-256: [target UID, ...]} of target messages no ledger row claims, of a size some to-do
    message has."""
    claimed = {r.tgt_uid for r in fp.done.values() if r.tgt_folder == fp.target}
    todo_sizes = {fp.listing[u] for u in fp.todo}
    tlisting = fp.target_sizes
    candidates = sorted(u for u, s in tlisting.items() if u not in claimed and s in todo_sizes)
    pool: dict[str, list[int]] = defaultdict(list)
    if candidates:
        with map_imap_errors(ctx.address, ctx.dst_server):
            if ops.select(dst, fp.target)[0] != fp.target_uidvalidity:
                raise ConnectionLost(ctx.address, f"UIDVALIDITY of target {fp.target!r} changed during the copy; "
                                     "starting over", server=ctx.dst_server)
            for tuid, sha in ops.digests(dst, candidates, tlisting, ctx.batch_messages,
                                         ctx.batch_bytes):
                pool[sha].append(tuid)
    return pool

