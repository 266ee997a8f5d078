"""The decisions of a distributed copy (cutover.fanout): chunks, when a chunk is run again, its lease, its result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cutover.errors import LedgerError
from cutover.fanout import (ChunkLease, ChunkResult, ChunkWatch, chunk_failed_reports, chunk_verdict,
                            gather_reports, split_chunks)
from cutover.ledger import Ledger
from cutover.mailsync import MailboxReport
from cutover.mailsync._models import FolderReport


def test_chunks_keep_every_address_once_in_order() -> None:
    addresses = [f"m{i}@x.it" for i in range(7)]
    chunks = split_chunks(addresses, 3)
    assert [len(c) for c in chunks] == [3, 3, 1] and sum(chunks, []) == addresses
    assert split_chunks([], 5) == []
    with pytest.raises(ValueError):
        split_chunks(addresses, 0)


@pytest.mark.parametrize("state, held, free_for, attempt, verdict", [
    ("COMPLETED", False, 0, 1, "done"),
    ("SCHEDULED", False, 999, 1, "wait"),        # no worker online yet: it waits for one
    ("PENDING", False, 5, 1, "wait"),            # starting: the lease is not taken yet
    ("PENDING", False, 90, 1, "wait"),           # a slow start on a loaded worker is not a death
    ("RUNNING", True, 0, 1, "wait"),             # copying
    ("RUNNING", False, 10, 1, "wait"),           # lease free for less than stale_after_s
    ("RUNNING", False, 30, 1, "rerun"),          # Prefect says running, nobody holds its lease: its worker died
    ("PENDING", False, 101, 1, "rerun"),         # taken by a worker that died before starting it
    ("RUNNING", False, 30, 3, "failed"),         # out of attempts
    ("CRASHED", False, 0, 1, "rerun"),           # the worker saw its process die
    ("FAILED", False, 0, 2, "rerun"),
    ("CANCELLED", False, 0, 3, "failed"),
])
def test_chunk_verdict(state, held, free_for, attempt, verdict) -> None:
    assert chunk_verdict(state, held, free_for, stale_after_s=20, attempt=attempt, attempts=3) == verdict


def test_a_chunk_watch_counts_free_time_per_state_and_anew_for_each_attempt() -> None:
    from cutover.fanout import ChunkWatch

    watch = ChunkWatch(1, ["a@x.it"])
    watch.started("run-1")
    assert watch.observe("PENDING", False, 100.0) == 0.0
    assert watch.observe("PENDING", False, 150.0) == 50.0
    assert watch.observe("RUNNING", False, 151.0) == 0.0  # the clock starts again in RUNNING
    assert watch.observe("RUNNING", True, 152.0) == 0.0
    assert watch.observe("RUNNING", False, 153.0) == 0.0 and watch.observe("RUNNING", False, 160.0) == 7.0
    watch.started("run-2")
    assert watch.attempt == 2 and watch.observe("RUNNING", False, 161.0) == 0.0


def test_a_chunk_result_survives_its_trip_through_an_artifact() -> None:
    report = MailboxReport("a@x.it", status="verified", messages=3, copied=3, verified=True, logins={"source": "u"},
                           folder_reports=[FolderReport("INBOX", "INBOX", messages=3, copied=3, verified=True,
                                                        refused=[(7, "NO too big")])])
    again = ChunkResult.from_json(ChunkResult("w1", [report]).to_json())
    assert again.worker == "w1" and again.reports == [report]
    [failed] = chunk_failed_reports(["b@x.it"], "chunk 2 did not complete", "forward")
    assert (failed.status, failed.verified, failed.reason) == ("failed", False, "chunk")


def test_a_lease_needs_the_shared_ledger(tmp_path) -> None:
    with pytest.raises(LedgerError, match="PostgreSQL ledger"):
        ChunkLease(Ledger(tmp_path / "l.sqlite"), "run", 1)


_HOLDER = """
import sys
from cutover.fanout import ChunkLease
from cutover.ledger_postgres import PostgresLedger
lease = ChunkLease(PostgresLedger(sys.argv[1]), "run-1:prestage", 2)
assert lease.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_lease_is_seen_held_and_seen_free_once_its_holder_is_killed(postgres_server) -> None:
    from cutover.ledger_postgres import PostgresLedger

    url = postgres_server.create_database("lease")
    ledger = PostgresLedger(url)
    watch = ChunkLease(ledger, "run-1:prestage", 2)
    assert not watch.held()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert watch.held() and not ChunkLease(ledger, "run-1:prestage", 3).held()  # another chunk: free
        assert not ChunkLease(ledger, "run-1:prestage", 2).acquire()  # a second run of the same chunk: refused
        assert watch.held()  # looking never took it, even briefly
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 30
    while watch.held():
        assert time.monotonic() < deadline, "a killed holder's lease was never freed"
        time.sleep(0.05)
    ledger.close()


def test_gathered_reports_keep_inventory_order_fail_a_given_up_chunk_and_never_drop_a_mailbox() -> None:
    from cutover.mailsync import MailboxReport
    done, given_up = ChunkWatch(1, ["b@x", "a@x"]), ChunkWatch(2, ["c@x"])
    given_up.started("run-2")
    results = {1: ChunkResult("worker-1", [MailboxReport("a@x", status="verified"), MailboxReport("b@x", status="verified")])}
    reports, per_worker = gather_reports([done, given_up], results, ["a@x", "b@x", "c@x"], "forward", "prestage")
    assert [(r.address, r.status) for r in reports] == [("a@x", "verified"), ("b@x", "verified"), ("c@x", "failed")]
    assert "did not complete in 1 attempts" in reports[2].error and per_worker == {"worker-1": 2}
    with pytest.raises(RuntimeError, match="no report for 1 mailboxes"):
        gather_reports([done], results, ["a@x", "b@x", "z@x"], "forward", "prestage")
