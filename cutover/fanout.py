"""Copying on many machines: the inventory in chunks, a lease per chunk run, and what to do with a chunk that died.

A distributed copy (plan ``copy.fan_out``) runs each chunk of mailboxes as its own run on whatever worker picks it
up (``flows/_fanout.py``). The parent must tell a chunk that is still copying from one whose machine died: Prefect
cannot (a worker killed with its flow run leaves the run *Running* forever). So every chunk run holds a **lease**
for its whole life: a session advisory lock in the shared PostgreSQL ledger, which the server drops when the
holder's connection ends (process killed: at once; machine gone: TCP keepalives). A chunk whose run Prefect still
shows pending or running while its lease has been free for ``stale_after_s`` is dead: it is run again, elsewhere.
Running a chunk again is safe by construction: every mailbox copy resumes from the shared ledger (a pending row is
resolved by SHA-256 against the target before anything is appended again) under its exclusive mailbox lock.

No Prefect here: the flows ask Prefect for states and start runs; the decisions are :func:`chunk_verdict`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Literal, Sequence

from cutover.errors import LedgerError
from cutover.mailsync import MailboxReport
from cutover.mailsync._models import FolderReport

Verdict = Literal["done", "wait", "rerun", "failed"]
_ALIVE_STATES = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}
_FAILED_STATES = {"FAILED", "CRASHED", "CANCELLED"}


def split_chunks(addresses: Sequence[str], chunk_mailboxes: int) -> list[list[str]]:
    """``addresses`` in chunks of at most ``chunk_mailboxes``, in inventory order (every address exactly once)."""
    if chunk_mailboxes < 1:
        raise ValueError("chunk_mailboxes must be at least 1")
    return [list(addresses[i:i + chunk_mailboxes]) for i in range(0, len(addresses), chunk_mailboxes)]


def chunk_verdict(state_type: str, lease_held: bool, free_for_s: float, stale_after_s: float, attempt: int,
                  attempts: int, pending_after_s: float | None = None) -> Verdict:
    """What the parent does with one chunk run now.

    ``state_type``: what Prefect says (COMPLETED, RUNNING, ...); ``lease_held``: its lease is held now;
    ``free_for_s``: for how long the lease has been seen free while Prefect said this same state (0 if held);
    ``attempt`` of ``attempts``: which run of this chunk this is. A RUNNING run takes its lease as it starts: free
    for ``stale_after_s`` means its holder died. A PENDING run is a process still starting on its worker (seconds
    on a loaded machine): only ``pending_after_s`` (default 5 x ``stale_after_s``) of that means its worker died.
    """
    if state_type == "COMPLETED":
        return "done"
    if state_type in _FAILED_STATES:
        return "rerun" if attempt < attempts else "failed"
    if state_type == "SCHEDULED":
        return "wait"  # no worker has taken it yet: it waits for one (a pool with no worker online waits too)
    limit = stale_after_s if state_type == "RUNNING" else (pending_after_s or 5 * stale_after_s)
    if lease_held or free_for_s < limit:
        return "wait"
    return "rerun" if attempt < attempts else "failed"  # Prefect says alive, nobody holds its lease: its holder died


class ChunkWatch:
    """The parent's view of one chunk: which attempt, and since when its lease has been free in the current state."""

    def __init__(self, number: int, addresses: list[str]) -> None:
        self.number = number
        self.addresses = addresses
        self.attempt = 0
        self.run_id: str | None = None
        self._state = ""
        self._free_since: float | None = None

    def started(self, run_id: str) -> None:
        self.attempt += 1
        self.run_id = run_id
        self._state, self._free_since = "", None

    def observe(self, state_type: str, lease_held: bool, now: float) -> float:
        """Record one look; returns for how long the lease has been free in this state (0 if held)."""
        if lease_held or state_type != self._state:
            self._free_since = None if lease_held else now
        elif self._free_since is None:
            self._free_since = now
        self._state = state_type
        return 0.0 if self._free_since is None else now - self._free_since


def _lease_key(run_key: str, chunk: int) -> int:
    digest = hashlib.sha256(f"chunk\0{run_key}\0{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ChunkLease:
    """The lease of one chunk of one distributed copy (``run_key`` names the copy): held by the chunk run for its
    whole life, seen by the parent. Needs the PostgreSQL ledger (every machine sees the same locks)."""

    def __init__(self, ledger, run_key: str, chunk: int) -> None:
        if getattr(ledger, "backend", "sqlite") != "postgresql":
            raise LedgerError("a distributed copy (copy.fan_out) needs the PostgreSQL ledger every worker shares "
                              "(plan ledger: {url: <secret reference>}); a SQLite file is on one machine only")
        self.ledger = ledger
        self.key = _lease_key(run_key, chunk)
        self._conn = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        """Take the lease, waiting up to ``wait_s`` while another run of this chunk holds it (a run the parent gave
        up on too early finishes first: then this one finds its work done); False if it never came free."""
        conn = self.ledger.connect("chunk")
        deadline = time.monotonic() + wait_s
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    conn.close()
                    return False
                time.sleep(1.0)
        except Exception as exc:  # psycopg.Error (the driver is not imported here)
            conn.close()
            raise LedgerError(f"chunk lease in ledger {self.ledger.where}: cannot be taken ({self.ledger._why(exc)})") \
                from None
        self._conn = conn
        return True

    def held(self) -> bool:
        """True while some session (of any machine) holds this lease. Only looks: never takes it, even briefly."""
        rows = self.ledger._read(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = ?::bigint::oid "
            "AND objid = ?::bigint::oid AND objsubid = 1", ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF))
        return int(rows[0][0]) > 0

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


@dataclass
class ChunkResult:
    """What one chunk run hands back to the parent: who ran it and one report per mailbox."""

    worker: str
    reports: list[MailboxReport]

    def to_json(self) -> str:
        return json.dumps({"worker": self.worker, "reports": [dataclasses.asdict(r) for r in self.reports]},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "ChunkResult":
        data = json.loads(text)
        reports = []
        for item in data["reports"]:
            folders = [FolderReport(**{**f, "refused": [tuple(x) for x in f.get("refused", [])]})
                       for f in item.pop("folder_reports", [])]
            reports.append(MailboxReport(**item, folder_reports=folders))
        return cls(data["worker"], reports)


def chunk_failed_reports(addresses: Sequence[str], why: str, direction: str) -> list[MailboxReport]:
    """Reports for the mailboxes of a chunk that never completed: failed, never silently absent."""
    return [MailboxReport(a, status="failed", reason="chunk", error=why, direction=direction) for a in addresses]




def gather_reports(chunks: Sequence[ChunkWatch], results: dict[int, ChunkResult], addresses: Sequence[str],
                   direction: str, label: str) -> tuple[list[MailboxReport], dict[str, int]]:
    """Every mailbox's report in inventory order (a chunk given up on reports its mailboxes failed), and how many
    mailboxes each worker did. A mailbox without a report is an error, never a silent gap."""
    reports: dict[str, MailboxReport] = {}
    for chunk in chunks:
        got = results[chunk.number].reports if chunk.number in results else chunk_failed_reports(
            chunk.addresses, f"chunk {chunk.number} did not complete in {chunk.attempt} attempts", direction)
        reports.update({r.address: r for r in got})
    missing = [a for a in addresses if a not in reports]
    if missing:
        raise RuntimeError(f"{label}: no report for {len(missing)} mailboxes ({', '.join(missing[:5])})")
    per_worker: dict[str, int] = {}
    for done in results.values():
        per_worker[done.worker] = per_worker.get(done.worker, 0) + len(done.reports)
    return [reports[a] for a in addresses], per_worker


__all__ = ["split_chunks", "chunk_verdict", "ChunkWatch", "ChunkLease", "ChunkResult", "chunk_failed_reports",
           "gather_reports"]
