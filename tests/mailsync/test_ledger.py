"""The ledger: pending -> copied bookkeeping, verified counts, persistence and concurrent writers, on both backends
(SQLite file, PostgreSQL database: the ``ledger_store`` fixture runs each test on each)."""

from __future__ import annotations

import threading

from cutover.ledger import MessageRow


def row(uid: int, *, tgt_uid: int | None = None, state: str = "pending", folder: str = "INBOX") -> MessageRow:
    return MessageRow(folder, 100, uid, 10 * uid, f"{uid:064x}", folder, 200, tgt_uid, state, False)


def test_pending_then_copied_survives_reopen(ledger_store) -> None:
    ledger = ledger_store.open()
    ledger.set_folder_state("a@x.it", "forward", "INBOX", 100, "INBOX", 200)
    ledger.record_pending("a@x.it", "forward", [row(1), row(2)])
    assert {r.state for r in ledger.messages("a@x.it", "forward", "INBOX", 100).values()} == {"pending"}
    ledger.record_done("a@x.it", "forward", [row(1, tgt_uid=11)], "copied")
    ledger.close()

    again = ledger_store.open()
    rows = again.messages("a@x.it", "forward", "INBOX", 100)
    assert rows[1].state == "copied" and rows[1].tgt_uid == 11 and rows[1].done
    assert rows[2].state == "pending" and not rows[2].done
    assert again.messages("a@x.it", "forward", "INBOX", 999) == {}  # another UIDVALIDITY is another folder


def test_verified_count_counts_only_verified_done_rows(ledger_store) -> None:
    ledger = ledger_store.open()
    ledger.set_folder_state("a@x.it", "forward", "INBOX", 100, "INBOX", 200)
    ledger.record_done("a@x.it", "forward", [row(1, tgt_uid=11), row(2, tgt_uid=12), row(3, tgt_uid=13)], "copied")
    assert ledger.verified_count("a@x.it", "INBOX") == 0
    ledger.mark_verified("a@x.it", "forward", "INBOX", 100, [1, 2])
    ledger.mark_mismatch("a@x.it", "forward", "INBOX", 100, [2])
    assert ledger.verified_count("a@x.it", "INBOX") == 1
    assert ledger.verified_count("b@x.it", "INBOX") == 0
    assert ledger.verified_count("a@x.it", "INBOX", direction="reverse") == 0


def test_forget_pending_drops_only_pending(ledger_store) -> None:
    ledger = ledger_store.open()
    ledger.record_pending("a@x.it", "forward", [row(1), row(2)])
    ledger.record_done("a@x.it", "forward", [row(2, tgt_uid=5)], "matched")
    ledger.forget_pending("a@x.it", "forward", "INBOX", 100, [1, 2])
    assert list(ledger.messages("a@x.it", "forward", "INBOX", 100)) == [2]


def test_many_threads_write_without_losing_rows(ledger_store) -> None:
    ledger = ledger_store.open()
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


def test_folder_mapping_remaps_and_a_rename_are_kept(ledger_store) -> None:
    ledger = ledger_store.open()
    ledger.set_folder_state("a@x.it", "forward", "Old", 100, "Archive", 200)
    ledger.record_done("a@x.it", "forward", [row(1, tgt_uid=11, folder="Old")], "copied")
    ledger.record_remap("a@x.it", "forward", "Sent", "Posta inviata", "the target names it so")
    ledger.record_remap("a@x.it", "forward", "Sent", "Inviata", "second thoughts")
    assert ledger.remaps("a@x.it", "forward") == {"Sent": ("Inviata", "second thoughts")}  # the latest wins
    assert ledger.remaps("a@x.it", "reverse") == {}

    ledger.adopt_source_folder("a@x.it", "forward", "Old", "New", 100)  # renamed on the source, same UIDVALIDITY
    states = ledger.folder_states("a@x.it", "forward")
    assert list(states) == ["New"] and states["New"].tgt_folder == "Archive"
    assert list(ledger.messages("a@x.it", "forward", "New", 100)) == [1]
    assert ledger.messages("a@x.it", "forward", "Old", 100) == {}
    kinds = [kind for _, _, kind, _ in ledger.events("a@x.it")]
    assert kinds == ["remap", "remap"]  # in the order written


def test_uidvalidity_and_uids_above_two_to_the_31_are_kept(ledger_store) -> None:
    ledger = ledger_store.open()
    big = MessageRow("INBOX", 4_294_967_295, 4_294_967_290, 5, "f" * 64, "INBOX", 4_294_967_294, 4_294_967_293,
                     "copied", False)
    ledger.set_folder_state("a@x.it", "forward", "INBOX", big.src_uidvalidity, "INBOX", big.tgt_uidvalidity)
    ledger.record_done("a@x.it", "forward", [big], "copied")
    assert ledger.messages("a@x.it", "forward", "INBOX", 4_294_967_295) == {big.src_uid: big}


def test_refusals_and_their_approval(ledger_store) -> None:
    ledger = ledger_store.open()
    ledger.record_refusal("a@x.it", "forward", "INBOX", 100, 7, 99, "e" * 64, "NO too big")
    assert ledger.refusals("a@x.it") == [("INBOX", 100, 7, 99, "NO too big", False)]
    assert ledger.approve_skipped("a@x.it", "forward", "Mario Rossi", "attachment sent by hand") == 1
    assert ledger.refusals("a@x.it")[0][-1] is True
    assert [a[:3] for a in ledger.approvals("a@x.it")] == [("Mario Rossi", "attachment sent by hand", 1)]
    ledger.forget_refusals("a@x.it", "forward", "INBOX", 100, [7])
    assert ledger.refusals("a@x.it") == []


def test_switch_marks_are_recorded_and_a_mark_written_again_replaces_itself(ledger_store) -> None:
    from cutover.ledger import SwitchMarkFolder, SwitchMarkRun

    ledger = ledger_store.open()
    run = SwitchMarkRun("m1", "target", "ops", 1000.0, 1.5, 1, {})
    folders = [SwitchMarkFolder("a@x.it", "source", "INBOX", 100, 31, 30),
               SwitchMarkFolder("a@x.it", "target", "INBOX", 200, 1, 0)]
    ledger.record_switch_mark(run, folders)
    ledger.record_switch_mark(SwitchMarkRun("m1", "target", "ops", 1000.0, 2.0, 1, {"b@x.it": "AuthFailed"}),
                              [SwitchMarkFolder("a@x.it", "source", "INBOX", 100, 32, 31)])
    [again] = ledger_store.open().switch_marks()
    assert (again.mark, again.by, again.seconds, again.failed) == ("m1", "ops", 2.0, {"b@x.it": "AuthFailed"})
    assert [(f.side, f.uidnext) for f in ledger.switch_mark_folders("m1", "a@x.it")] == [("source", 32), ("target", 1)]


def test_the_evidence_export_has_the_same_columns_on_both_backends(ledger_store) -> None:
    ledger = ledger_store.open()
    ledger.record_done("a@x.it", "forward", [row(1, tgt_uid=11)], "copied")
    ledger.add_event("a@x.it", "forward", "INBOX", "repair", "why")
    header, rows = ledger.export("messages")
    assert header[-2:] == ["copied_at", "verified_at"] and len(rows) == 1 and rows[0][:5] == (
        "a@x.it", "forward", "INBOX", 100, 1)
    assert ledger.export("events")[1][0][:5] == ("a@x.it", "forward", "INBOX", "repair", "why")


_KILLED_AFTER_PENDING = """
import os, sys
from cutover.ledger import Ledger, MessageRow
if sys.argv[1].startswith("postgresql://"):
    from cutover.ledger_postgres import PostgresLedger as Ledger
ledger = Ledger(sys.argv[1])
ledger.record_pending("a@x.it", "forward", [MessageRow("INBOX", 100, 5, 50, "5" * 64, "INBOX", 200, None, "pending", False)])
print("pending", flush=True)  # here the engine would send the APPEND
sys.stdin.read()
"""


def test_a_pending_row_is_committed_before_the_append_a_kill_cannot_take_it_back(ledger_store) -> None:
    """The no-duplicate guarantee rests on this: once record_pending returns, a kill -9 leaves the row there."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_AFTER_PENDING, ledger_store.url or str(ledger_store.path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "pending"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    rows = ledger_store.open().messages("a@x.it", "forward", "INBOX", 100)
    assert rows[5].state == "pending" and rows[5].sha256 == "5" * 64
