"""The copy ledger: what was copied where, so a copy resumes, a delta is cheap and a rollback knows what is new.

SQLite in WAL mode, one connection per thread, writes serialised by a lock. Every commit survives a kill -9
(in WAL mode a commit is in the WAL file, i.e. the OS, before it returns). ``pending`` rows, the record the
no-duplicate guarantee rests on, are committed with ``synchronous=FULL`` (fsync: they survive a power cut
too). Every other write (copied/matched/verified rows, folder state, snapshots, events) uses
``synchronous=NORMAL``: WAL frames are appended in commit order and each FULL commit fsyncs all earlier
ones, so a power cut can only drop a suffix of the latest NORMAL commits, leaving the ledger as it was at
an earlier moment: the state a kill -9 at that moment would have left, which a rerun already resolves
(a lost ``copied`` is still ``pending`` and is matched by SHA-256; a lost ``verified`` is read back again).

Tables
  ``folders``   per (address, direction, source folder): source UIDVALIDITY, target folder and its
                UIDVALIDITY, highest copied source UID.
  ``messages``  per source message (address, direction, source folder, source UIDVALIDITY, source UID):
                size, SHA-256, target folder, target UIDVALIDITY and UID, state, verified flag, time.
  ``events``    notable facts, for reports and decisions: a UIDVALIDITY reset, extra copies found, an operator's
                ``repair`` (full mirror after the switch, with the reason) and ``remap`` (a folder's new mapping,
                with the reason), ``target-alters`` (the target changed a message on APPEND: no more APPENDs).
  ``refusals``  source messages the target permanently refused (skipped), with the server's words.
  ``switch_marks`` / ``switch_mark_folders``  right before each MX change, every mailbox's folders on both sides
                (UIDVALIDITY, UIDNEXT, MESSAGES): what was there before the switch (``cutover.switch_mark``).
  ``approvals`` an operator's approval of a mailbox's skipped messages (who, why, when): refusals recorded
                before it no longer count as missing.

Message states
  ``pending``   written and committed *before* the APPEND that carries the message; a pending row after
                a crash means "may or may not be on the target": the engine resolves it by SHA-256
                against the target before appending anything again (see ``cutover.mailsync``).
  ``copied``    the target confirmed the APPEND and gave its UID (APPENDUID).
  ``matched``   an identical message (same SHA-256) was already on the target; nothing was appended.
  ``mismatch``  verification found the target twin differs; the source message counts as not copied.

Nothing here holds message bodies or credentials: only sizes, digests, folder names and UIDs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from cutover.errors import LedgerError

DONE_STATES = ("copied", "matched")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_folder TEXT NOT NULL,
    src_uidvalidity INTEGER NOT NULL,
    tgt_folder TEXT NOT NULL,
    tgt_uidvalidity INTEGER,
    highest_uid INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    snapshot TEXT,
    PRIMARY KEY (address, direction, src_folder)
);
CREATE TABLE IF NOT EXISTS messages (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_folder TEXT NOT NULL,
    src_uidvalidity INTEGER NOT NULL,
    src_uid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    tgt_folder TEXT NOT NULL,
    tgt_uidvalidity INTEGER,
    tgt_uid INTEGER,
    state TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL,
    PRIMARY KEY (address, direction, src_folder, src_uidvalidity, src_uid)
);
CREATE INDEX IF NOT EXISTS messages_by_target ON messages (address, direction, tgt_folder, tgt_uidvalidity, tgt_uid);
CREATE TABLE IF NOT EXISTS refusals (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_folder TEXT NOT NULL,
    src_uidvalidity INTEGER NOT NULL,
    src_uid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (address, direction, src_folder, src_uidvalidity, src_uid)
);
CREATE TABLE IF NOT EXISTS approvals (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    skipped INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    folder TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class FolderState:
    """What the ledger knows about one source folder."""

    src_folder: str
    src_uidvalidity: int
    tgt_folder: str
    tgt_uidvalidity: int | None
    highest_uid: int
    snapshot: str | None = None  # JSON {"src": [uidvalidity, uidnext, messages], "tgt": [...]} when last verified


@dataclass(frozen=True)
class MessageRow:
    """One source message as recorded (no body, only its size and SHA-256)."""

    src_folder: str
    src_uidvalidity: int
    src_uid: int
    size: int
    sha256: str
    tgt_folder: str
    tgt_uidvalidity: int | None
    tgt_uid: int | None
    state: str
    verified: bool

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


def _retry_locked(step, timeout: float = 60.0):
    """Run ``step`` again while SQLite says "database is locked" without waiting (switching a new file to WAL
    does not go through the busy handler): two processes opening one new ledger at the same moment."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _add_column(conn: sqlite3.Connection, sql: str) -> None:
    """An additive schema change; another process or thread opening the same ledger may have made it first."""
    try:
        _retry_locked(lambda: conn.execute(sql))
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise


class Ledger:
    """The copy ledger: one interface, two stores. This class is the embedded one, a SQLite file at ``path``
    (created on first use); :class:`cutover.ledger_postgres.PostgresLedger` is the one every worker of a
    distributed run shares. Both keep the same rows with the same guarantees; :func:`open_ledger` picks the one
    the plan names. Safe to share between threads.

    A backend provides ``_conn``/``_transaction``/``_read``/``close`` and the schema; every query below is
    written once, with ``?`` parameters, in SQL both stores accept."""

    backend = "sqlite"
    _EVENT_ORDER = "rowid"  # events in the order they were written

    def __init__(self, path: str | Path) -> None:
        self.path: Path | None = Path(path)
        self.where = str(self.path)  # names the ledger in messages (never a credential)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._write_lock:
                conn = self._conn()
                _retry_locked(lambda: conn.executescript(_SCHEMA))
                columns = {r[1] for r in conn.execute("PRAGMA table_info(folders)")}
                if "snapshot" not in columns:  # ledgers written before the delta fast path
                    _add_column(conn, "ALTER TABLE folders ADD COLUMN snapshot TEXT")
                if "verified_at" not in {r[1] for r in conn.execute("PRAGMA table_info(messages)")}:
                    _add_column(conn, "ALTER TABLE messages ADD COLUMN verified_at REAL")  # for the evidence bundle
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"ledger {self.where}: cannot be opened ({exc}); check the path and its permissions") from None

    # --- connections -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error); ``durable`` commits with an
        fsync (see the module docstring for which writes need it). SQLite errors become a LedgerError."""
        try:
            with self._write_lock:
                conn = self._conn()
                level = "FULL" if durable else "NORMAL"
                if getattr(self._local, "sync", None) != level:
                    conn.execute(f"PRAGMA synchronous={level}")
                    self._local.sync = level
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.where}: write failed ({exc})") from None

    def _write(self, sql: str, params: Iterable[tuple] | tuple = (), *, many: bool = False, durable: bool = False) -> None:
        """One statement in one transaction."""
        with self._transaction(durable=durable) as conn:
            if many:
                conn.executemany(sql, params)  # type: ignore[arg-type]
            else:
                conn.execute(sql, params)  # type: ignore[arg-type]

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.where}: read failed ({exc})") from None

    def close(self) -> None:
        for conn in self._connections:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._connections.clear()
        self._local = threading.local()

    # --- folders -----------------------------------------------------------------------------------
    def folder_state(self, address: str, direction: str, src_folder: str) -> FolderState | None:
        rows = self._read(
            "SELECT src_folder, src_uidvalidity, tgt_folder, tgt_uidvalidity, highest_uid, snapshot FROM folders "
            "WHERE address=? AND direction=? AND src_folder=?", (address, direction, src_folder))
        return FolderState(*rows[0]) if rows else None

    def folder_states(self, address: str, direction: str) -> dict[str, FolderState]:
        """Every folder of a mailbox in one direction, by source folder name (one query for the whole mailbox)."""
        rows = self._read(
            "SELECT src_folder, src_uidvalidity, tgt_folder, tgt_uidvalidity, highest_uid, snapshot FROM folders "
            "WHERE address=? AND direction=?", (address, direction))
        return {r[0]: FolderState(*r) for r in rows}

    def verified_totals(self, address: str, direction: str) -> dict[tuple[str, int], tuple[int, int]]:
        """{(source folder, UIDVALIDITY): (messages, bytes)} verified present on the target, whole mailbox."""
        rows = self._read(
            "SELECT src_folder, src_uidvalidity, COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE address=? "
            "AND direction=? AND verified=1 AND state IN ('copied','matched') GROUP BY src_folder, src_uidvalidity",
            (address, direction))
        return {(r[0], int(r[1])): (int(r[2]), int(r[3])) for r in rows}

    def set_folder_state(self, address: str, direction: str, src_folder: str, src_uidvalidity: int,
                         tgt_folder: str, tgt_uidvalidity: int | None) -> None:
        """Record the folder pair and UIDVALIDITYs (and forget the snapshot); ``highest_uid`` follows the copies."""
        self._write(
            "INSERT INTO folders (address, direction, src_folder, src_uidvalidity, tgt_folder, tgt_uidvalidity, highest_uid, updated) "
            "VALUES (?,?,?,?,?,?, COALESCE((SELECT MAX(src_uid) FROM messages WHERE address=? AND direction=? AND src_folder=? "
            "AND src_uidvalidity=? AND state IN ('copied','matched')), 0), ?) "
            "ON CONFLICT (address, direction, src_folder) DO UPDATE SET src_uidvalidity=excluded.src_uidvalidity, "
            "tgt_folder=excluded.tgt_folder, tgt_uidvalidity=excluded.tgt_uidvalidity, highest_uid=excluded.highest_uid, "
            "updated=excluded.updated, snapshot=NULL",
            (address, direction, src_folder, src_uidvalidity, tgt_folder, tgt_uidvalidity,
             address, direction, src_folder, src_uidvalidity, time.time()))

    def set_snapshot(self, address: str, direction: str, src_folder: str, snapshot: str | None) -> None:
        """Remember both folders' (UIDVALIDITY, UIDNEXT, MESSAGES) as of a successful verification."""
        self._write("UPDATE folders SET snapshot=?, updated=? WHERE address=? AND direction=? AND src_folder=?",
                    (snapshot, time.time(), address, direction, src_folder))

    def folder_totals(self, address: str, direction: str, src_folder: str, src_uidvalidity: int) -> tuple[int, int]:
        """(messages, bytes) verified present on the target for one source folder."""
        row = self._read(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE address=? AND direction=? AND src_folder=? "
            "AND src_uidvalidity=? AND verified=1 AND state IN ('copied','matched')",
            (address, direction, src_folder, src_uidvalidity))[0]
        return int(row[0]), int(row[1])

    def add_event(self, address: str, direction: str, folder: str, kind: str, detail: str) -> None:
        self._write("INSERT INTO events (address, direction, folder, kind, detail, at) VALUES (?,?,?,?,?,?)", (address, direction, folder, kind, detail, time.time()))

    def events(self, address: str, kind: str | None = None) -> list[tuple[str, str, str, str]]:
        """(direction, folder, kind, detail) in the order they happened."""
        sql = "SELECT direction, folder, kind, detail FROM events WHERE address=?"
        params: tuple = (address,)
        if kind:
            sql += " AND kind=?"
            params += (kind,)
        return self._read(sql + f" ORDER BY {self._EVENT_ORDER}", params)  # type: ignore[return-value]

    def record_remap(self, address: str, direction: str, src_folder: str, tgt_folder: str, reason: str) -> None:
        """An operator's decision (``copy --remap SRC=DST --reason``): ``src_folder`` goes to ``tgt_folder`` from
        now on, whatever the folder mapping computes (an event: no schema change)."""
        self.add_event(address, direction, src_folder, "remap", json.dumps({"target": tgt_folder, "reason": reason},
                                                                           ensure_ascii=False))

    def remaps(self, address: str, direction: str) -> dict[str, tuple[str, str]]:
        """{source folder: (target folder, reason)} of the operators' remap decisions, the latest per folder."""
        out: dict[str, tuple[str, str]] = {}
        for d, folder, _, detail in self.events(address, "remap"):
            if d == direction:
                item = json.loads(detail)
                out[folder] = (item["target"], item.get("reason", ""))
        return out

    def adopt_source_folder(self, address: str, direction: str, old: str, new: str, uidvalidity: int) -> None:
        """A source folder renamed ``old`` -> ``new`` (same UIDVALIDITY): its rows follow it, so nothing the
        ledger copied under the old name is copied again under the new one."""
        with self._transaction(durable=True) as conn:
            for table in ("messages", "refusals"):
                conn.execute(f"UPDATE {table} SET src_folder=? WHERE address=? AND direction=? AND src_folder=? "
                             "AND src_uidvalidity=?", (new, address, direction, old, uidvalidity))
            conn.execute("DELETE FROM folders WHERE address=? AND direction=? AND src_folder=?",
                         (address, direction, new))
            conn.execute("UPDATE folders SET src_folder=?, snapshot=NULL WHERE address=? AND direction=? "
                         "AND src_folder=?", (new, address, direction, old))

    # --- messages ----------------------------------------------------------------------------------
    def messages(self, address: str, direction: str, src_folder: str, src_uidvalidity: int) -> dict[int, MessageRow]:
        """Every recorded message of one source folder under one UIDVALIDITY, by source UID."""
        rows = self._read(
            "SELECT src_folder, src_uidvalidity, src_uid, size, sha256, tgt_folder, tgt_uidvalidity, tgt_uid, state, verified "
            "FROM messages WHERE address=? AND direction=? AND src_folder=? AND src_uidvalidity=?",
            (address, direction, src_folder, src_uidvalidity))
        return {r[2]: MessageRow(*r[:9], bool(r[9])) for r in rows}

    def target_rows(self, address: str, direction: str, tgt_folder: str) -> list[MessageRow]:
        """Done rows that put (or found) a message in ``tgt_folder``: used by rollback to tell our copies apart."""
        rows = self._read(
            "SELECT src_folder, src_uidvalidity, src_uid, size, sha256, tgt_folder, tgt_uidvalidity, tgt_uid, state, verified "
            "FROM messages WHERE address=? AND direction=? AND tgt_folder=? AND state IN ('copied','matched')",
            (address, direction, tgt_folder))
        return [MessageRow(*r[:9], bool(r[9])) for r in rows]

    def done_digests(self, address: str, direction: str, src_folder: str | None = None) -> list[tuple[str, int, str]]:
        """(source folder, source UIDVALIDITY, SHA-256) of every message of a mailbox (or of one of its source
        folders) copied or matched."""
        sql = ("SELECT src_folder, src_uidvalidity, sha256 FROM messages WHERE address=? AND direction=? "
               "AND state IN ('copied','matched')")
        params: tuple = (address, direction)
        if src_folder is not None:
            sql += " AND src_folder=?"
            params += (src_folder,)
        return self._read(sql, params)  # type: ignore[return-value]

    def record_pending(self, address: str, direction: str, rows: list[MessageRow]) -> None:
        """Commit rows as ``pending`` before their APPEND is sent (crash-safety, see module docstring): fsynced."""
        self._upsert(address, direction, rows, "pending", durable=True)

    def record_done(self, address: str, direction: str, rows: list[MessageRow], state: str) -> None:
        """Commit rows as ``copied`` (target UID from APPENDUID) or ``matched`` (twin already on target)."""
        if state not in DONE_STATES:
            raise ValueError(state)
        self._upsert(address, direction, rows, state)

    def _upsert(self, address: str, direction: str, rows: list[MessageRow], state: str, *, durable: bool = False) -> None:
        if not rows:
            return
        now = time.time()
        self._write(
            "INSERT INTO messages (address, direction, src_folder, src_uidvalidity, src_uid, size, sha256, tgt_folder, "
            "tgt_uidvalidity, tgt_uid, state, verified, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (address, direction, src_folder, src_uidvalidity, src_uid) DO UPDATE SET size=excluded.size, "
            "sha256=excluded.sha256, tgt_folder=excluded.tgt_folder, tgt_uidvalidity=excluded.tgt_uidvalidity, "
            "tgt_uid=excluded.tgt_uid, state=excluded.state, verified=excluded.verified, at=excluded.at",
            [(address, direction, r.src_folder, r.src_uidvalidity, r.src_uid, r.size, r.sha256, r.tgt_folder,
              r.tgt_uidvalidity, r.tgt_uid, state, int(r.verified), now) for r in rows],
            many=True, durable=durable)

    def forget_pending(self, address: str, direction: str, src_folder: str, src_uidvalidity: int, uids: Iterable[int]) -> None:
        """Drop pending rows whose APPEND never reached the target (they will be copied again)."""
        uids = list(uids)
        if not uids:
            return
        self._write(
            "DELETE FROM messages WHERE address=? AND direction=? AND src_folder=? AND src_uidvalidity=? AND src_uid=? "
            "AND state='pending'",
            [(address, direction, src_folder, src_uidvalidity, u) for u in uids], many=True)

    def mark_verified(self, address: str, direction: str, src_folder: str, src_uidvalidity: int, uids: Iterable[int]) -> None:
        uids = list(uids)
        if not uids:
            return  # no empty transaction: each commit is an fsync
        self._write(
            "UPDATE messages SET verified=1, verified_at=COALESCE(verified_at, ?) WHERE address=? AND direction=? "
            "AND src_folder=? AND src_uidvalidity=? AND src_uid=?",
            [(time.time(), address, direction, src_folder, src_uidvalidity, u) for u in uids], many=True)

    def mark_mismatch(self, address: str, direction: str, src_folder: str, src_uidvalidity: int, uids: Iterable[int]) -> None:
        uids = list(uids)
        if not uids:
            return
        self._write(
            "UPDATE messages SET state='mismatch', verified=0, verified_at=NULL WHERE address=? AND direction=? AND src_folder=? "
            "AND src_uidvalidity=? AND src_uid=?",
            [(address, direction, src_folder, src_uidvalidity, u) for u in uids], many=True)

    # --- skipped messages and their approval --------------------------------------------------------
    def record_refusal(self, address: str, direction: str, src_folder: str, src_uidvalidity: int, src_uid: int,
                       size: int, sha256: str, reason: str) -> None:
        now = time.time()
        self._write(
            "INSERT INTO refusals VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (address, direction, src_folder, "
            "src_uidvalidity, src_uid) DO UPDATE SET reason=excluded.reason, last_at=excluded.last_at",
            (address, direction, src_folder, src_uidvalidity, src_uid, size, sha256, reason[:300], now, now))

    def forget_refusals(self, address: str, direction: str, src_folder: str, src_uidvalidity: int,
                        uids: Iterable[int]) -> None:
        """Refusals of messages that are now on the target after all (a later run got them through)."""
        self._write("DELETE FROM refusals WHERE address=? AND direction=? AND src_folder=? AND src_uidvalidity=? "
                    "AND src_uid=?", [(address, direction, src_folder, src_uidvalidity, u) for u in uids], many=True)

    def refusals(self, address: str, direction: str = "forward") -> list[tuple[str, int, int, int, str, bool]]:
        """(folder, UIDVALIDITY, UID, size, reason, approved) of every skipped message of a mailbox."""
        approved_at = self._read("SELECT MAX(at) FROM approvals WHERE address=? AND direction=?",
                                 (address, direction))[0][0]
        rows = self._read("SELECT src_folder, src_uidvalidity, src_uid, size, reason, first_at FROM refusals "
                          "WHERE address=? AND direction=? ORDER BY src_folder, src_uid", (address, direction))
        return [(f, v, u, size, reason, approved_at is not None and first <= approved_at)
                for f, v, u, size, reason, first in rows]

    def approve_skipped(self, address: str, direction: str, operator: str, reason: str) -> int:
        """Record an operator's approval of every message of ``address`` skipped so far; return how many."""
        count = len(self.refusals(address, direction))
        self._write("INSERT INTO approvals VALUES (?,?,?,?,?,?)",
                    (address, direction, operator, reason, count, time.time()))
        return count

    def approvals(self, address: str, direction: str = "forward") -> list[tuple[str, str, int, float]]:
        """(operator, reason, skipped messages approved, time) in order."""
        return self._read("SELECT operator, reason, skipped, at FROM approvals WHERE address=? AND direction=? "
                          "ORDER BY at", (address, direction))  # type: ignore[return-value]

    # --- queries for checks and reports -----------------------------------------------------------
    def verified_count(self, address: str, folder: str, *, direction: str = "forward") -> int:
        """Messages verified present in target ``folder`` for ``address`` (e.g. INBOX, to compare with a login)."""
        rows = self._read(
            "SELECT COUNT(*) FROM messages m JOIN folders f ON f.address=m.address AND f.direction=m.direction "
            "AND f.src_folder=m.src_folder AND f.src_uidvalidity=m.src_uidvalidity "
            "WHERE m.address=? AND m.direction=? AND m.tgt_folder=? AND m.verified=1 AND m.state IN ('copied','matched')",
            (address, direction, folder))
        return int(rows[0][0])

    def message_count(self, address: str | None = None, *, direction: str = "forward", state: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM messages WHERE direction=?"
        params: tuple = (direction,)
        if address:
            sql += " AND address=?"
            params += (address,)
        if state:
            sql += " AND state=?"
            params += (state,)
        return int(self._read(sql, params)[0][0])

    def done_bytes(self, address: str, *, direction: str = "forward") -> int:
        """Bytes of ``address``'s messages already on the other side (copied or matched), for quota headroom."""
        return int(self._read("SELECT COALESCE(SUM(size), 0) FROM messages WHERE address=? AND direction=? AND "
                              "state IN ('copied','matched')", (address, direction))[0][0])

    def addresses(self) -> Iterator[str]:
        yield from (r[0] for r in self._read("SELECT DISTINCT address FROM messages ORDER BY address"))

    # --- the switch mark (issue 11): both sides' UIDVALIDITY/UIDNEXT right before each MX change ----------
    def _ensure_switch_marks(self) -> None:
        if not getattr(self, "_switch_marks_ready", False):
            try:
                with self._write_lock:
                    conn = self._conn()
                    _retry_locked(lambda: conn.executescript(_SWITCH_MARK_SCHEMA))
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.where}: cannot add the switch mark tables ({exc})") from None
            self._switch_marks_ready = True

    # --- whole tables, for the evidence bundle and the doctor ------------------------------------------
    def export(self, table: str) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of the evidence export of ``table`` (messages, folders, events), in a stable order."""
        sql = _EXPORTS[table].format(events_order=self._EVENT_ORDER)
        rows = self._read(sql)
        return [c.strip().rsplit(" ", 1)[-1] for c in sql.split(" FROM ")[0].removeprefix("SELECT ").split(",")], rows

    def record_switch_mark(self, mark: SwitchMarkRun, folders: Iterable[SwitchMarkFolder]) -> None:
        """Record one switch mark: every folder's row, then the mark itself (present only once complete)."""
        self._ensure_switch_marks()
        self._write("INSERT INTO switch_mark_folders (mark, address, side, folder, uidvalidity, uidnext, messages) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (mark, address, side, folder) DO UPDATE SET "
                    "uidvalidity=excluded.uidvalidity, uidnext=excluded.uidnext, messages=excluded.messages",
                    [(mark.mark, f.address, f.side, f.folder, f.uidvalidity, f.uidnext, f.messages) for f in folders],
                    many=True, durable=True)
        self._write('INSERT INTO switch_marks (mark, to_side, "by", at, seconds, mailboxes, failed) VALUES '
                    '(?,?,?,?,?,?,?) ON CONFLICT (mark) DO UPDATE SET to_side=excluded.to_side, "by"=excluded."by", '
                    "at=excluded.at, seconds=excluded.seconds, mailboxes=excluded.mailboxes, failed=excluded.failed",
                    (mark.mark, mark.to_side, mark.by, mark.at, mark.seconds, mark.mailboxes,
                                              json.dumps(mark.failed, ensure_ascii=False)), durable=True)

    def switch_marks(self) -> list[SwitchMarkRun]:
        """Every complete switch mark, oldest first."""
        self._ensure_switch_marks()
        return [SwitchMarkRun(m, t, b, at, s, n, json.loads(f)) for m, t, b, at, s, n, f in self._read(
            'SELECT mark, to_side, "by", at, seconds, mailboxes, failed FROM switch_marks ORDER BY at')]

    def switch_mark_folders(self, mark: str, address: str | None = None) -> list[SwitchMarkFolder]:
        """The folders a mark recorded (of one mailbox, or all), by address, side and folder."""
        self._ensure_switch_marks()
        sql = "SELECT address, side, folder, uidvalidity, uidnext, messages FROM switch_mark_folders WHERE mark=?"
        params: tuple = (mark,)
        if address is not None:
            sql += " AND address=?"
            params += (address,)
        return [SwitchMarkFolder(*row) for row in self._read(sql + " ORDER BY address, side, folder", params)]


_EXPORTS = {
    "messages": ("SELECT address, direction, src_folder, src_uidvalidity, src_uid, tgt_folder, tgt_uidvalidity, "
                 "tgt_uid, size, sha256, state, verified, at AS copied_at, verified_at FROM messages "
                 "ORDER BY address, direction, src_folder, src_uid"),
    "folders": ("SELECT address, direction, src_folder, src_uidvalidity, tgt_folder, tgt_uidvalidity, highest_uid, "
                "updated FROM folders ORDER BY address, direction, src_folder"),
    "events": "SELECT address, direction, folder, kind, detail, at FROM events ORDER BY {events_order}",
}


def open_ledger(plan) -> "Ledger":
    """The ledger the plan names: ``ledger: {url: <secret reference>}`` is PostgreSQL (shared by every worker),
    a path is the SQLite file. Errors are one line and never show the URL's password."""
    if getattr(plan, "ledger_url", None):
        from cutover.ledger_postgres import PostgresLedger  # psycopg only when a plan asks for PostgreSQL

        return PostgresLedger(plan.secret(plan.ledger_url), reference=plan.ledger_url)
    return Ledger(plan.ledger)


_SWITCH_MARK_SCHEMA = """
CREATE TABLE IF NOT EXISTS switch_mark_folders (
    mark TEXT NOT NULL,
    address TEXT NOT NULL,
    side TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (mark, address, side, folder)
);
CREATE TABLE IF NOT EXISTS switch_marks (
    mark TEXT PRIMARY KEY,
    to_side TEXT NOT NULL,
    by TEXT NOT NULL,
    at REAL NOT NULL,
    seconds REAL NOT NULL,
    mailboxes INTEGER NOT NULL,
    failed TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SwitchMarkFolder:
    """One folder of one side as it stood right before an MX change."""

    address: str
    side: str  # source | target
    folder: str
    uidvalidity: int
    uidnext: int
    messages: int


@dataclass(frozen=True)
class SwitchMarkRun:
    """One switch mark: which MX change, who took it, when (epoch seconds), how long, and the mailboxes it missed."""

    mark: str
    to_side: str
    by: str
    at: float
    seconds: float
    mailboxes: int  # marked on both sides
    failed: dict  # address -> why it could not be marked


__all__ = ["Ledger", "open_ledger", "MessageRow", "FolderState", "DONE_STATES", "SwitchMarkFolder", "SwitchMarkRun"]
