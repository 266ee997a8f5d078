"""The copy ledger in PostgreSQL: one ledger every worker of a distributed run shares (plan ``ledger: {url: ...}``).

Same rows, same queries and same guarantees as the SQLite ledger (:class:`cutover.ledger.Ledger`, whose
docstring says what each table and state means):

- a ``pending`` row is committed before its APPEND is sent, with ``synchronous_commit=on`` (the server's WAL is
  flushed to disk before COMMIT returns); every other write commits with ``synchronous_commit=off`` (PostgreSQL's
  own words: a crash may lose the latest such commits, never apply them half or out of order), the trade the
  SQLite ledger makes with ``synchronous=NORMAL``, and for the same reason a rerun resolves it;
- the exclusive lock per mailbox is a session advisory lock (``pg_try_advisory_lock``) held on a connection of
  its own (:mod:`cutover.mailsync._lock`): the server drops it when that connection dies, holder killed or
  machine gone;
- the switch mark and the recorded folder mappings and remaps are the same tables and events.

The URL is a secret (it holds the password): it is only ever passed to the driver. Messages name the ledger
as ``postgresql://host:port/database`` and every driver error is scrubbed of the URL and the password.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator
from urllib.parse import unquote, urlsplit

from cutover.errors import LedgerError
from cutover.ledger import Ledger
from cutover.secrets import MASK, Secret

try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg is a dependency
    psycopg = None  # type: ignore[assignment]

CONNECT_TIMEOUT_S = 10

# The SQLite schema, in PostgreSQL's types: UIDs and UIDVALIDITYs are unsigned 32-bit (BIGINT), times are
# epoch seconds (DOUBLE PRECISION); events get an id for their order (SQLite's rowid).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_folder TEXT NOT NULL,
    src_uidvalidity BIGINT NOT NULL,
    tgt_folder TEXT NOT NULL,
    tgt_uidvalidity BIGINT,
    highest_uid BIGINT NOT NULL DEFAULT 0,
    updated DOUBLE PRECISION NOT NULL,
    snapshot TEXT,
    PRIMARY KEY (address, direction, src_folder)
);
CREATE TABLE IF NOT EXISTS messages (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_folder TEXT NOT NULL,
    src_uidvalidity BIGINT NOT NULL,
    src_uid BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    tgt_folder TEXT NOT NULL,
    tgt_uidvalidity BIGINT,
    tgt_uid BIGINT,
    state TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    at DOUBLE PRECISION NOT NULL,
    verified_at DOUBLE PRECISION,
    PRIMARY KEY (address, direction, src_folder, src_uidvalidity, src_uid)
);
CREATE INDEX IF NOT EXISTS messages_by_target ON messages (address, direction, tgt_folder, tgt_uidvalidity, tgt_uid);
CREATE TABLE IF NOT EXISTS refusals (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_folder TEXT NOT NULL,
    src_uidvalidity BIGINT NOT NULL,
    src_uid BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    first_at DOUBLE PRECISION NOT NULL,
    last_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (address, direction, src_folder, src_uidvalidity, src_uid)
);
CREATE TABLE IF NOT EXISTS approvals (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    skipped BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    address TEXT NOT NULL,
    direction TEXT NOT NULL,
    folder TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    id BIGSERIAL PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS switch_mark_folders (
    mark TEXT NOT NULL,
    address TEXT NOT NULL,
    side TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    uidnext BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    PRIMARY KEY (mark, address, side, folder)
);
CREATE TABLE IF NOT EXISTS switch_marks (
    mark TEXT PRIMARY KEY,
    to_side TEXT NOT NULL,
    "by" TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    mailboxes BIGINT NOT NULL,
    failed TEXT NOT NULL
);
"""
# Two workers creating the schema of a new ledger at the same moment: one waits for the other.
_SCHEMA_LOCK_KEY = 0x7065632D6C656467  # "pec-ledg"


def describe_url(url: str) -> str:
    """``postgresql://host:port/database`` of a ledger URL: what messages may show (no user, no password)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "postgresql://(unreadable URL)"
    return f"postgresql://{host}:{port}/{parts.path.lstrip('/') or '(default database)'}"


def check_url(url: str, reference: str = "") -> None:
    """Refuse what is not a ``postgresql://`` URL with a host and a database, naming the reference, never the value."""
    named = f"ledger url ({reference})" if reference else "ledger url"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise LedgerError(f"{named}: not a valid URL; write postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise LedgerError(f"{named}: not a postgresql:// URL; write postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
                          "(a SQLite ledger is a path: ledger: state/ledger.sqlite)")
    if not parts.hostname or not parts.path.strip("/"):
        raise LedgerError(f"{named}: the URL names no host or no database; write "
                          "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")


class _Scrubber:
    """Removes the URL and its password from driver messages (libpq may echo a connection string)."""

    def __init__(self, url: str) -> None:
        self._needles = [url]
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            self._needles += [password, unquote(password)]

    def __call__(self, text: str) -> str:
        for needle in sorted(self._needles, key=len, reverse=True):
            if needle:
                text = text.replace(needle, MASK)
        return " ".join(text.split())  # one line


class _Tx:
    """A transaction's connection as the shared queries use it: ``?`` parameters, ``execute``/``executemany``."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def execute(self, sql: str, params: tuple = ()):
        return self._conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, params: Iterable[tuple]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), list(params))


class PostgresLedger(Ledger):
    """The copy ledger in a PostgreSQL database (tables created on first use). Safe to share between threads;
    every thread has its own connection, and so has every mailbox lock."""

    backend = "postgresql"
    _EVENT_ORDER = "id"

    def __init__(self, url: Secret | str, *, reference: str = "") -> None:
        if psycopg is None:  # pragma: no cover
            raise LedgerError("a PostgreSQL ledger needs psycopg: run make setup (pip install 'psycopg[binary]')")
        self._url = url if isinstance(url, Secret) else Secret(url, "ledger url")
        raw = self._url.reveal()
        check_url(raw, reference)
        self.path = None
        self.where = describe_url(raw)
        self.reference = reference
        self._scrub = _Scrubber(raw)
        self._local = threading.local()
        self._write_lock = threading.Lock()  # only guards the list of connections: the server orders writes
        self._connections: list = []
        self._switch_marks_ready = True
        try:
            conn = self._conn()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                conn.execute(_SCHEMA)
        except psycopg.Error as exc:
            self.close()
            raise LedgerError(f"ledger {self.where}: cannot be opened ({self._why(exc)}); check that the server "
                              "runs and the URL's user, password and database") from None

    # --- connections -------------------------------------------------------------------------------
    def _why(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        return self._scrub(text.splitlines()[0] if text else text)

    def connect(self, purpose: str = "ledger"):
        """A new connection of its own (autocommit), named in ``pg_stat_activity`` by host and pid."""
        try:
            return psycopg.connect(self._url.reveal(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name=f"pec-cutover {purpose} {socket.gethostname()} pid {os.getpid()}")
        except psycopg.Error as exc:
            raise LedgerError(f"ledger {self.where}: cannot connect ({self._why(exc)}); check that the server runs "
                              "and the URL's user, password and database") from None

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self.connect()
            self._local.conn = conn
            with self._write_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[_Tx]:
        """One write transaction; ``durable`` commits only once the server's WAL is on disk."""
        try:
            conn = self._conn()
            with conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit = off")
                yield _Tx(conn)
        except psycopg.Error as exc:
            raise LedgerError(f"ledger {self.where}: write failed ({self._why(exc)})") from None

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql.replace("?", "%s"), params).fetchall()
        except psycopg.Error as exc:
            raise LedgerError(f"ledger {self.where}: read failed ({self._why(exc)})") from None

    def close(self) -> None:
        with self._write_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    def _ensure_switch_marks(self) -> None:
        return None  # created with the other tables


__all__ = ["PostgresLedger", "check_url", "describe_url"]
