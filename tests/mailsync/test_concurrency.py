"""Two copies of one mailbox at once (a scheduled prestage and a copy by hand): one runs, the other is refused, with
the ledger in SQLite (a file lock beside it) and in PostgreSQL (an advisory lock every machine sees)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from cutover.ledger import open_ledger
from cutover.mailsync import sync_mailbox
from cutover.mailsync._lock import _MailboxLock

_HOLDER = """
import sys
from cutover.ledger import Ledger
from cutover.mailsync._lock import mailbox_lock
if sys.argv[1].startswith("postgresql://"):
    from cutover.ledger_postgres import PostgresLedger as Ledger
lock = mailbox_lock(Ledger(sys.argv[1]), sys.argv[2], sys.argv[3])
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
lock.release()
"""


def _non_empty(snap):
    return {k: v for k, v in snap.items() if v}


def test_a_copy_running_in_another_process_refuses_the_second_at_once(imap_view, sandbox_env, make_mailbox, plan_for,
                                                                       ledger_store) -> None:
    mb = make_mailbox(messages=8)
    plan = plan_for(ledger_url=ledger_store.url)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, ledger_store.url or str(plan.ledger), mb.address, "forward"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        ledger = open_ledger(plan)
        refused = sync_mailbox(plan, mb, ledger)
        assert (refused.status, refused.reason, refused.verified) == ("failed", "busy", False)
        assert "another copy of this mailbox" in refused.error and f"pid {holder.pid}" in refused.error
        assert ledger.message_count(mb.address) == 0  # nothing recorded ...
        assert not any(_non_empty(imap_view.snapshot(sandbox_env, "target", mb.address)).values())  # ... or sent
        # the other direction is another lock
        assert sync_mailbox(plan, mb, ledger, direction="reverse").reason != "busy"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

    done = sync_mailbox(plan, mb, open_ledger(plan))  # the holder is gone: the lock is free again
    assert done.verified and done.copied == 8, done.error
    assert _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))) == \
        _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)))


def test_two_copies_of_one_mailbox_at_once_never_duplicate(imap_view, sandbox_env, make_mailbox, plan_for,
                                                            ledger_store) -> None:
    """The second copy starts while the first is seen half-way (its ledger rows and the target's INBOX growing):
    the overlap is made to happen, not hoped for."""
    mb = make_mailbox(messages=60)
    plan = plan_for(batch_messages=4, ledger_url=ledger_store.url)
    first: dict = {}
    events = []
    worker = threading.Thread(target=lambda: first.setdefault("report", sync_mailbox(
        plan, mb, open_ledger(plan), on_progress=events.append)))  # its own connections, as a process would have
    worker.start()
    deadline = time.monotonic() + 120
    while not any(e.messages_done > 0 for e in events):
        assert worker.is_alive() and time.monotonic() < deadline, "the first copy never got going"
        time.sleep(0.01)

    first_done_so_far, first_running = max(e.messages_done for e in events), worker.is_alive()
    second = sync_mailbox(plan, mb, open_ledger(plan))
    worker.join(timeout=300)

    assert first_running and 0 < first_done_so_far < 60, "the first copy was not half-way when the second started"
    assert (second.status, second.reason, second.verified) == ("failed", "busy", False), second.error
    assert first["report"].verified and first["report"].copied == 60, first["report"].error
    target = _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)))
    assert target == _non_empty(imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address)))
    assert sum(sum(c.values()) for c in target.values()) == 60  # every message once


def test_lock_file_is_beside_the_ledger_and_freed_by_a_dead_holder(tmp_path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    a = _MailboxLock(ledger, "x@pec.it", "forward")
    a.acquire()
    assert a.path.parent == tmp_path / "ledger.sqlite.locks"
    fd = os.open(a.path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the lock was not exclusive")
        except BlockingIOError:
            pass
    finally:
        os.close(fd)
    a.release()
    b = _MailboxLock(ledger, "x@pec.it", "forward")
    b.acquire()  # released: free again
    b.release()


def test_a_mailbox_lock_is_exclusive_across_processes_and_freed_when_its_holder_is_killed(ledger_store) -> None:
    import signal

    from cutover.mailsync._lock import MailboxBusy, mailbox_lock

    ledger = ledger_store.open()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, ledger_store.url or str(ledger_store.path), "x@pec.it",
                               "forward"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = mailbox_lock(ledger, "x@pec.it", "forward")
        try:
            second.acquire()
            raise AssertionError("the lock was not exclusive")
        except MailboxBusy as exc:
            assert f"pid {holder.pid}" in str(exc)
        other = mailbox_lock(ledger, "x@pec.it", "reverse")  # another direction is another lock
        other.acquire()
        other.release()
    finally:
        holder.send_signal(signal.SIGKILL)  # no release: the kernel / the server must drop it
        holder.wait(timeout=30)
    again = mailbox_lock(ledger, "x@pec.it", "forward")
    deadline = time.monotonic() + 30
    while True:  # PostgreSQL ends the dead session's backend a moment after the socket closes
        try:
            again.acquire()
            break
        except MailboxBusy:
            assert time.monotonic() < deadline, "the dead holder's lock was never freed"
            time.sleep(0.05)
    again.release()
