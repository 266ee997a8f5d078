"""One copy of a mailbox at a time: an exclusive lock per (address, direction), across processes and threads, and
across machines when the ledger is PostgreSQL (:func:`mailbox_lock` picks the lock the ledger's store offers)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from pathlib import Path

from cutover.errors import LedgerError, MailboxError


class MailboxBusy(MailboxError):
    """Another process (or thread) is copying the same mailbox in the same direction right now."""

    reason = "busy"
    hint = "wait for it to finish, then run again; this run copied nothing for this mailbox"


def mailbox_lock(ledger, address: str, direction: str) -> "_MailboxLock | _AdvisoryLock":
    """The exclusive lock of (address, direction) for ``ledger``: a file lock beside a SQLite ledger, a session
    advisory lock in a PostgreSQL one (every worker of every machine sees it)."""
    if getattr(ledger, "backend", "sqlite") == "postgresql":
        return _AdvisoryLock(ledger, address, direction)
    return _MailboxLock(ledger.path, address, direction)


def _advisory_key(address: str, direction: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{address}\0{direction}".encode()).digest()[:8], "big", signed=True)


class _AdvisoryLock:
    """The same lock in a PostgreSQL ledger: ``pg_try_advisory_lock`` on a connection of its own, held for the whole
    ``sync_mailbox`` run; a second one is refused at once, never waits. The server drops it when that connection
    ends, so a holder killed (or its machine gone: TCP keepalives) leaves nothing stale."""

    def __init__(self, ledger, address: str, direction: str) -> None:
        self.ledger = ledger
        self.address = address
        self.direction = direction
        self.key = _advisory_key(address, direction)
        self._conn = None

    def acquire(self, server: str = "") -> None:
        conn = self.ledger.connect("lock")  # LedgerError (one line, no password) if the server is away
        try:
            taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
            holder = "" if taken else self._holder(conn)
        except Exception as exc:  # psycopg.Error; the lock module does not import the driver
            conn.close()
            raise LedgerError(f"mailbox lock in ledger {self.ledger.where}: cannot be taken "
                              f"({self.ledger._why(exc)})") from None
        if not taken:
            conn.close()
            raise MailboxBusy(self.address, f"another copy of this mailbox ({self.direction}) is running "
                              f"({holder or 'holder unknown'}, advisory lock {self.key} in ledger {self.ledger.where})",
                              server=server) from None
        self._conn = conn

    def _holder(self, conn) -> str:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
            "AND l.objsubid = 1", ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF)).fetchone()
        return row[0] if row else ""

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # ending the session drops its advisory locks
            except Exception:
                pass
            self._conn = None


class _MailboxLock:
    """An exclusive, non-blocking lock per (address, direction), across processes and threads.

    Two copies of one mailbox at once (a scheduled prestage and a copy by hand) would both record the same
    pending rows and both APPEND: duplicates. ``flock`` on a file in ``<ledger>.locks/`` (named by a hash of
    address and direction) is taken for the whole ``sync_mailbox`` run; a second one is refused at once,
    never waits. The kernel drops the lock when its holder exits, even by kill -9, so nothing is left stale
    (the files themselves stay: deleting a lock file races with the next one taking it).
    """

    def __init__(self, ledger_path: Path, address: str, direction: str) -> None:
        key = hashlib.sha256(f"{address}\0{direction}".encode()).hexdigest()[:32]
        self.directory = ledger_path.parent / f"{ledger_path.name}.locks"
        self.path = self.directory / f"{key}.lock"
        self.address = address
        self.direction = direction
        self._fd: int | None = None

    def acquire(self, server: str = "") -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LedgerError(f"mailbox lock {self.path}: cannot be opened ({exc}); check the ledger directory "
                              "and its permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()[0]
            except (OSError, IndexError):
                pass
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LedgerError(f"mailbox lock {self.path}: cannot be taken ({exc})") from None
            raise MailboxBusy(self.address, f"another copy of this mailbox ({self.direction}) is running "
                              f"(pid {holder or 'unknown'}, lock {self.path})", server=server) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.address} {self.direction} {time.time():.0f}\n".encode(), 0)
        except OSError:
            pass  # the pid is only for the message the next one shows
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None
