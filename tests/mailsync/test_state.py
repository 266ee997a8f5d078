"""The engine's state in the ledger, without IMAP: pending -> copied, snapshot marks, extra copies, forward copies
(each test on both ledger backends)."""

from __future__ import annotations

from collections import Counter

from cutover.ledger import MessageRow
from cutover.mailsync._state import MailboxState, same_size

A = "a@x.it"


def row(uid: int, *, tgt_uid: int | None = None, tgt_uidvalidity: int | None = 200, state: str = "pending",
        folder: str = "INBOX", sha: str | None = None) -> MessageRow:
    return MessageRow(folder, 100, uid, 10 * uid, sha or f"{uid:064x}", folder, tgt_uidvalidity, tgt_uid, state, False)


def test_only_messages_confirmed_by_appenduid_become_copied(ledger_store) -> None:
    state = MailboxState(ledger_store.open(), A, "forward")
    rows = [row(1), row(2), row(3)]
    state.record_pending(rows)
    done = state.record_copied(rows, [(200, 11), (None, None), (200, 13)])  # the 2nd without APPENDUID
    assert [(r.src_uid, r.tgt_uid, r.state) for r in done] == [(1, 11, "copied"), (3, 13, "copied")]
    stored = state.rows("INBOX", 100)
    assert {u: (r.state, r.tgt_uid) for u, r in stored.items()} == {1: ("copied", 11), 2: ("pending", None),
                                                                   3: ("copied", 13)}
    state.forget_refused("INBOX", 100, [1, 2])  # only a pending row can be forgotten
    assert sorted(state.rows("INBOX", 100)) == [1, 3]


def test_snapshot_survives_a_run_with_nothing_to_copy_and_is_forgotten_by_one_that_copies(ledger_store) -> None:
    state = MailboxState(ledger_store.open(), A, "forward")
    state.enter_folder("INBOX", 100, "INBOX", 200, None, copying=True)
    state.remember_snapshot("INBOX", [100, 5, 4], [200, 9, 4], verified=4)
    known = state.folder("INBOX")
    assert state.last_verified("INBOX", "INBOX") == (known, {"src": [100, 5, 4], "tgt": [200, 9, 4], "verified": 4})
    assert state.last_verified("INBOX", "Elsewhere") is None

    state.enter_folder("INBOX", 100, "INBOX", 200, known, copying=False)  # same pair, nothing to do: no write
    assert state.last_verified("INBOX", "INBOX") is not None
    state.enter_folder("INBOX", 100, "INBOX", 200, known, copying=True)
    assert state.last_verified("INBOX", "INBOX") is None

    state.remember_snapshot("INBOX", None, [200, 9, 4], verified=4)  # a side without UIDNEXT: nothing kept
    assert state.last_verified("INBOX", "INBOX") is None


def test_known_duplicates_are_those_still_on_the_target_in_that_folder_and_uidvalidity(ledger_store) -> None:
    ledger = ledger_store.open()
    state = MailboxState(ledger, A, "forward")
    state.record_duplicates("INBOX", "INBOX", 200, [7, 8])
    state.record_duplicates("INBOX", "INBOX", 999, [9])  # another target UIDVALIDITY
    MailboxState(ledger, A, "reverse").record_duplicates("INBOX", "INBOX", 200, [10])  # another direction
    assert state.known_duplicates("INBOX", "INBOX", 200, {7: 1, 9: 1, 10: 1, 11: 1}) == [7]
    assert state.known_duplicates("INBOX", "Other", 200, {7: 1}) == []
    assert state.known_duplicates("INBOX", "INBOX", 200, {}) == []  # removed since: no longer a duplicate


def test_rollback_leaves_out_what_the_forward_copy_put_on_the_target(ledger_store) -> None:
    ledger = ledger_store.open()
    forward = MailboxState(ledger, A, "forward")
    forward.record_pending([row(1), row(2)])
    forward.record_copied([row(1), row(2, sha="ab" * 32)], [(200, 21), (150, 22)])  # the 2nd under an old UIDVALIDITY
    reverse = MailboxState(ledger, A, "reverse")
    target_listing = {20: 5, 21: 10, 22: 20}
    assert reverse.without_forward_copies("INBOX", 200, target_listing) == {20: 5, 22: 20}
    # every forward copy, wherever the member moved it since, is left out by content (row(1)'s digest too)
    left_out = reverse.copied_elsewhere("INBOX", 200, copied_once=True)
    assert left_out.take("ab" * 32) and left_out.take(row(1).sha256) and not left_out.take("cd" * 32)
    assert forward.without_forward_copies("INBOX", 200, target_listing) == target_listing
    assert not forward.copied_elsewhere("INBOX", 200, copied_once=False).take("ab" * 32)
    # after the switch a forward run leaves out, once each, what it copied under an earlier source UIDVALIDITY
    again = forward.copied_elsewhere("INBOX", 300, copied_once=True)
    assert again.take("ab" * 32) and not again.take("ab" * 32)


def test_a_twin_counts_with_the_size_sent_or_the_size_the_source_reports() -> None:
    r = row(1, tgt_uid=11)  # recorded size 10
    assert same_size({11: 10}, r, 12)
    assert same_size({11: 12}, r, 12)
    assert not same_size({11: 11}, r, 12)
    assert not same_size({12: 10}, r, 10)  # the twin's UID is gone
