"""One copy of a mailbox at a time: an exclusive lock per (address, direction), across processes and threads."""

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
