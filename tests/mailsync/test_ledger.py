"""The ledger: pending -> copied bookkeeping, verified counts, persistence and concurrent writers."""

from __future__ import annotations

import threading

from cutover.ledger import Ledger, MessageRow


def row(uid: int, *, tgt_uid: int | None = None, state: str = "pending", folder: str = "INBOX") -> MessageRow:
    return MessageRow(folder, 100, uid, 10 * uid, f"{uid:064x}", folder, 200, tgt_uid, state, False)


def test_pending_then_copied_survives_reopen(tmp_path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger.set_folder_state("a@x.it", "forward", "INBOX", 100, "INBOX", 200)
    ledger.record_pending("a@x.it", "forward", [row(1), row(2)])
    assert {r.state for r in ledger.messages("a@x.it", "forward", "INBOX", 100).values()} == {"pending"}
    ledger.record_done("a@x.it", "forward", [row(1, tgt_uid=11)], "copied")
    ledger.close()

    again = Ledger(path)
    rows = again.messages("a@x.it", "forward", "INBOX", 100)
    assert rows[1].state == "copied" and rows[1].tgt_uid == 11 and rows[1].done
    assert rows[2].state == "pending" and not rows[2].done
    assert again.messages("a@x.it", "forward", "INBOX", 999) == {}  # another UIDVALIDITY is another folder


def test_verified_count_counts_only_verified_done_rows(tmp_path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.set_folder_state("a@x.it", "forward", "INBOX", 100, "INBOX", 200)
    ledger.record_done("a@x.it", "forward", [row(1, tgt_uid=11), row(2, tgt_uid=12), row(3, tgt_uid=13)], "copied")
    assert ledger.verified_count("a@x.it", "INBOX") == 0
    ledger.mark_verified("a@x.it", "forward", "INBOX", 100, [1, 2])
    ledger.mark_mismatch("a@x.it", "forward", "INBOX", 100, [2])
    assert ledger.verified_count("a@x.it", "INBOX") == 1
    assert ledger.verified_count("b@x.it", "INBOX") == 0
    assert ledger.verified_count("a@x.it", "INBOX", direction="reverse") == 0


def test_forget_pending_drops_only_pending(tmp_path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record_pending("a@x.it", "forward", [row(1), row(2)])
    ledger.record_done("a@x.it", "forward", [row(2, tgt_uid=5)], "matched")
    ledger.forget_pending("a@x.it", "forward", "INBOX", 100, [1, 2])
    assert list(ledger.messages("a@x.it", "forward", "INBOX", 100)) == [2]


def test_many_threads_write_without_losing_rows(tmp_path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                uid = n * 1000 + i
                ledger.record_pending(f"m{n}@x.it", "forward", [row(uid)])
                ledger.record_done(f"m{n}@x.it", "forward", [row(uid, tgt_uid=uid)], "copied")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ledger.message_count(state="copied") == 400
    assert sorted(ledger.addresses()) == sorted(f"m{n}@x.it" for n in range(8))
