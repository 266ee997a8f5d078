"""State of one mailbox's copy in one direction, kept in the ledger for the next run (dsync's mailbox state).

The ledger (:class:`cutover.ledger.Ledger`) is the store; this is what the engine means by its rows:
which source message has a twin on the target, the pending -> copied/matched bookkeeping around an APPEND,
the marks a verification leaves (verified, mismatch, the folders' snapshot for the delta fast path), the
events worth keeping (a UIDVALIDITY reset, extra copies found on the target), and, for a rollback, which
target messages the forward copy put there. No IMAP here: every method reads or writes the ledger only.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

from cutover.ledger import FolderState, Ledger, MessageRow


def same_size(target_sizes: dict[int, int], row: MessageRow, source_size: int) -> bool:
    """The recorded twin is still there with the size we sent (or the size the source server reports)."""
    return target_sizes.get(row.tgt_uid) in (row.size, source_size)  # type: ignore[arg-type]


class MailboxState:
    """The ledger rows of one (address, direction)."""

    def __init__(self, ledger: Ledger, address: str, direction: str) -> None:
        self.ledger = ledger
        self.address = address
        self.direction = direction
        # rows turned copied/matched/verified by this object: a retry after a lost connection that moved this
        # forward gets a fresh retry budget (see _brain.run_with_retries)
        self.advanced = 0
        self._copied_digests: set[str] | None = None  # a rollback's digests to leave out (copied_elsewhere)

    # --- reading ------------------------------------------------------------------------------------
    def rows(self, folder: str, uidvalidity: int) -> dict[int, MessageRow]:
        """Every recorded source message of ``folder`` under ``uidvalidity``, by source UID."""
        return self.ledger.messages(self.address, self.direction, folder, uidvalidity)

    def folder(self, folder: str) -> FolderState | None:
        return self.ledger.folder_state(self.address, self.direction, folder)

    def folders(self) -> dict[str, FolderState]:
        """Every folder's state, by source folder (one read for the mailbox)."""
        return self.ledger.folder_states(self.address, self.direction)

    def verified_totals(self) -> dict[tuple[str, int], tuple[int, int]]:
        """{(folder, UIDVALIDITY): (messages, bytes)} recorded as verified, whole mailbox in one read."""
        return self.ledger.verified_totals(self.address, self.direction)

    def totals(self, folder: str, uidvalidity: int) -> tuple[int, int]:
        """(messages, bytes) recorded as done in ``folder`` under ``uidvalidity``."""
        return self.ledger.folder_totals(self.address, self.direction, folder, uidvalidity)

    def target_rows(self, tgt_folder: str) -> list[MessageRow]:
        return self.ledger.target_rows(self.address, self.direction, tgt_folder)

    # --- a folder's copy ----------------------------------------------------------------------------
    def uidvalidity_reset(self, folder: str, note: str) -> None:
        self.ledger.add_event(self.address, self.direction, folder, "uidvalidity-reset", note)

    def enter_folder(self, folder: str, uidvalidity: int, tgt_folder: str, tgt_uidvalidity: int | None,
                     known: FolderState | None, copying: bool) -> None:
        """Record which target folder (and UIDVALIDITY) this source folder goes to, when that changed or
        something is about to be copied."""
        if known is None or (known.src_uidvalidity, known.tgt_folder, known.tgt_uidvalidity) != \
                (uidvalidity, tgt_folder, tgt_uidvalidity) or copying:
            self.ledger.set_folder_state(self.address, self.direction, folder, uidvalidity, tgt_folder, tgt_uidvalidity)

    def record_matched(self, rows: list[MessageRow]) -> None:
        """Twins found on the target by SHA-256: done without an APPEND."""
        self.ledger.record_done(self.address, self.direction, rows, "matched")
        self.advanced += len(rows)

    def record_pending(self, rows: list[MessageRow]) -> None:
        """Committed before the APPEND: a crash after it leaves rows to resolve by SHA-256, never a blind resend."""
        self.ledger.record_pending(self.address, self.direction, rows)

    def record_copied(self, rows: list[MessageRow], appended: list[tuple[int | None, int | None]]) -> list[MessageRow]:
        """Turn the pending rows of messages the target confirmed with APPENDUID into ``copied``; return them.

        Without UIDPLUS the rows stay pending and are resolved by SHA-256 on the next pass."""
        done = [replace(r, tgt_uid=u, tgt_uidvalidity=v, state="copied")
                for r, (v, u) in zip(rows, appended) if u is not None]
        if done:
            self.ledger.record_done(self.address, self.direction, done, "copied")
            self.advanced += len(done)
        return done

    def forget_refused(self, folder: str, uidvalidity: int, uids: list[int]) -> None:
        """Pending rows of messages the target refused: they are not there."""
        self.ledger.forget_pending(self.address, self.direction, folder, uidvalidity, uids)

    def record_confirmed(self, rows: list[MessageRow]) -> None:
        """Pending rows found on the target by SHA-256 in the same run (a target without UIDPLUS): copied,
        and verified (their digest was read from the target)."""
        self.ledger.record_done(self.address, self.direction, rows, "copied")
        self.advanced += len(rows)

    # --- skipped messages ---------------------------------------------------------------------------
    def record_refusal(self, folder: str, uidvalidity: int, uid: int, size: int, sha256: str, reason: str) -> None:
        self.ledger.record_refusal(self.address, self.direction, folder, uidvalidity, uid, size, sha256, reason)

    def approved_refusals(self, folder: str, uidvalidity: int) -> set[int]:
        """Source UIDs of ``folder`` the target refused and an operator approved leaving behind."""
        return {u for f, v, u, _, _, approved in self.ledger.refusals(self.address, self.direction)
                if f == folder and v == uidvalidity and approved}

    def approved_refusals_all(self) -> dict[tuple[str, int], set[int]]:
        """{(folder, UIDVALIDITY): source UIDs} refused by the target and approved to be left behind."""
        out: dict[tuple[str, int], set[int]] = {}
        for f, v, u, _, _, approved in self.ledger.refusals(self.address, self.direction):
            if approved:
                out.setdefault((f, v), set()).add(u)
        return out

    def forget_refusals(self, folder: str, uidvalidity: int, uids: list[int]) -> None:
        if uids:
            self.ledger.forget_refusals(self.address, self.direction, folder, uidvalidity, uids)

    # --- verification marks -------------------------------------------------------------------------
    def mark_mismatch(self, folder: str, uidvalidity: int, uids: list[int]) -> None:
        self.ledger.mark_mismatch(self.address, self.direction, folder, uidvalidity, uids)

    def mark_verified(self, folder: str, uidvalidity: int, uids: list[int]) -> None:
        self.ledger.mark_verified(self.address, self.direction, folder, uidvalidity, uids)
        self.advanced += len(uids)

    def remember_snapshot(self, folder: str, src_snapshot: list[int] | None, tgt_snapshot: list[int] | None,
                          verified: int) -> None:
        """After a folder verified: both folders' (UIDVALIDITY, UIDNEXT, MESSAGES), for the delta fast path."""
        if src_snapshot is None or tgt_snapshot is None:
            return
        self.ledger.set_snapshot(self.address, self.direction, folder,
                                 json.dumps({"src": src_snapshot, "tgt": tgt_snapshot, "verified": verified}))

    def last_verified(self, folder: str, tgt_folder: str) -> tuple[FolderState, dict] | None:
        """The folder's state and the snapshot its last verification left, if it went to ``tgt_folder``."""
        state = self.folder(folder)
        if state is None or not state.snapshot or state.tgt_folder != tgt_folder:
            return None
        return state, json.loads(state.snapshot)

    # --- a target that alters messages on APPEND -----------------------------------------------------
    def record_target_alters(self, folder: str, uidvalidity: int, uid: int, detail: str) -> None:
        """The target holds an altered copy of source ``uid``: not a twin (mismatch), and the mailbox stops."""
        self.ledger.mark_mismatch(self.address, self.direction, folder, uidvalidity, [uid])
        self.ledger.add_event(self.address, self.direction, folder, "target-alters", detail)

    def target_alters(self) -> str | None:
        """What an earlier run found the target altering, unless a repair run came after it (None)."""
        last: str | None = None
        for direction, _, kind, detail in self.ledger.events(self.address):
            if direction != self.direction:
                continue
            if kind == "target-alters":
                last = detail
            elif kind == "repair":
                last = None
        return last

    # --- extra copies on the target -------------------------------------------------------------------
    def known_duplicates(self, folder: str, tgt_folder: str, tgt_uidvalidity: int, tlisting: dict[int, int]) -> list[int]:
        """Extra copies an earlier run found that are still there (same folder, UIDVALIDITY and UID)."""
        out: set[int] = set()
        for direction, src_folder, _, detail in self.ledger.events(self.address, "duplicate"):
            if direction != self.direction or src_folder != folder:
                continue
            try:
                item = json.loads(detail)
            except ValueError:
                continue
            if item.get("folder") == tgt_folder and item.get("uidvalidity") == tgt_uidvalidity:
                out |= {u for u in item.get("uids", ()) if u in tlisting}
        return sorted(out)

    def record_duplicates(self, folder: str, tgt_folder: str, tgt_uidvalidity: int, uids: list[int]) -> None:
        self.ledger.add_event(self.address, self.direction, folder, "duplicate",
                              json.dumps({"folder": tgt_folder, "uidvalidity": tgt_uidvalidity, "uids": uids}))

    # --- reverse: what the forward copy put on the target ---------------------------------------------
    def without_forward_copies(self, folder: str, uidvalidity: int, listing: dict[int, int]) -> dict[int, int]:
        """``listing`` less the messages the forward copy appended (by target UID under this UIDVALIDITY)."""
        if self.direction != "reverse":
            return listing
        ours = {r.tgt_uid for r in self.ledger.target_rows(self.address, "forward", folder)
                if r.tgt_uidvalidity == uidvalidity}
        return {u: s for u, s in listing.items() if u not in ours}

    def copied_elsewhere(self, folder: str, uidvalidity: int, copied_once: bool) -> "CopiedElsewhere":
        """Digests of messages to leave out of this folder's copy because this tool already copied them under
        another UID. A rollback leaves out every forward copy and every message it copied back, wherever the
        member has moved them since (by content: a moved message has a new UID). A forward run after the
        switch leaves out, once each, what it copied from this folder under an earlier UIDVALIDITY."""
        if self.direction == "reverse":
            # Read once per run (a rollback asks for every folder); what this run copies back is in the ledger
            # under the UIDs it came from, which no later folder of the run holds.
            if self._copied_digests is None:
                self._copied_digests = {sha for _, _, sha in self.ledger.done_digests(self.address, "forward")}
                if copied_once:
                    self._copied_digests |= {sha for _, _, sha in self.ledger.done_digests(self.address, "reverse")}
            return CopiedElsewhere(Counter(), set(self._copied_digests))
        if not copied_once:
            return CopiedElsewhere(Counter(), set())
        return CopiedElsewhere(Counter(sha for _, v, sha in self.ledger.done_digests(self.address, "forward", folder)
                                       if v != uidvalidity), set())


class CopiedElsewhere:
    """Digests this tool copied before under another UID: ``take(sha)`` says whether to leave a message out
    (``always``: every message with that digest; ``counted``: as many as were copied)."""

    def __init__(self, counted: Counter, always: set[str]) -> None:
        self.counted = counted
        self.always = always

    def take(self, sha256: str) -> bool:
        if sha256 in self.always:
            return True
        if self.counted[sha256] > 0:
            self.counted[sha256] -= 1
            return True
        return False
