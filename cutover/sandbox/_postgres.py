"""A PostgreSQL server for the sandbox: the shared ledger of a distributed run and the Prefect server's database.

Debian's ``postgresql`` 15 binaries (``/usr/lib/postgresql/15/bin``), a cluster of its own under the sandbox
directory (``initdb`` once), run in the foreground as the ``postgres`` user (PostgreSQL refuses root) on
127.0.0.1 only, no Unix socket. One superuser ``pec`` whose random password is kept in ``<dir>/password``
(mode 600); the databases ``ledger`` and ``prefect`` (with ``pg_trgm``, which the Prefect server needs) are
created at the first start. Stopped with a fast shutdown (SIGINT): open sessions are ended, nothing is lost.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from cutover.errors import SandboxError
from cutover.sandbox._process import (has_exited, pid_matches, port_in_use, port_open, read_pid, session_members,
                                      signal_pid, spawn, tail, wait_until)

PG_BIN = Path(os.environ.get("PEC_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"  # the Debian package's system user
SUPERUSER = "pec"
DATABASES = ("ledger", "prefect")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _as_postgres() -> list[str]:
    """The prefix that runs a command as the ``postgres`` user when we are root (``setpriv`` execs: same pid)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups"]


def _owner_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    import pwd

    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        raise SandboxError(f"no {RUN_AS!r} user: install Debian's postgresql (scripts/install-system.sh)") from None
    return entry.pw_uid, entry.pw_gid


@dataclass
class SandboxPostgres:
    """The sandbox's PostgreSQL under ``directory`` on 127.0.0.1:``port``: ``start()``, ``url(db)``, ``stop()``."""

    directory: Path
    port: int
    _password: str | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "postgres.pid"

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    # --- what clients use ----------------------------------------------------------------------------
    def password(self) -> str:
        if self._password is None:
            self._password = self.password_file.read_text().strip()
        return self._password

    def url(self, database: str = "ledger", *, driver: str = "postgresql") -> str:
        """The URL of ``database`` (it holds the password: a secret, write it to a mode-600 file, never log it)."""
        return f"{driver}://{SUPERUSER}:{quote(self.password(), safe='')}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, *, extensions: tuple[str, ...] = ()) -> str:
        """Create ``name`` if it does not exist (with ``extensions``); returns its URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        if extensions:
            with psycopg.connect(self.url(name), autocommit=True, connect_timeout=10) as conn:
                for ext in extensions:
                    conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
        return self.url(name)

    # --- life cycle ----------------------------------------------------------------------------------
    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid is not None and pid_matches(pid, "postgres", self.data) else None

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def prepare(self) -> None:
        """The cluster (``initdb`` the first time) and the password file; nothing runs yet."""
        self._initdb()

    def _initdb(self) -> None:
        uid, gid = _owner_ids()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o711)  # the postgres user walks in to its data directory, reads nothing else here
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.password_file.chmod(0o600)
        if (self.data / "PG_VERSION").exists():
            return
        if self.data.exists():
            shutil.rmtree(self.data)  # a half-made cluster from an interrupted first start
        self.data.mkdir(mode=0o700)
        pwfile = self.directory / "initdb.pw"
        pwfile.write_text(self.password() + "\n")
        try:
            os.chown(self.data, uid, gid)
            os.chown(pwfile, uid, gid)
            pwfile.chmod(0o600)
            done = subprocess.run(
                [*_as_postgres(), str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                capture_output=True, text=True, timeout=180)
        except FileNotFoundError:
            raise SandboxError(f"cannot run {PG_BIN / 'initdb'}: install Debian's postgresql "
                               "(scripts/install-system.sh)") from None
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise SandboxError(f"sandbox postgres: initdb of {self.data} failed ({' | '.join(lines)}); the directory "
                               f"must be reachable by the {RUN_AS} user")

    def argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1", "unix_socket_directories": "", "max_connections": "300",
            "shared_buffers": "32MB", "logging_collector": "off",
            # a worker's machine that vanishes: its sessions (and mailbox locks) end within about half a minute
            "tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
        }
        args = [*_as_postgres(), str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def start(self) -> None:
        """Start (initdb at the first start) and create the databases; a running server of ours is left alone."""
        if not self.running():
            self._initdb()
            if port_in_use(self.port) or port_open(self.port):
                raise SandboxError(f"cannot start sandbox postgres: port 127.0.0.1:{self.port} is taken by a process "
                                   "the sandbox did not start; stop it or choose another port")
            pid = spawn(self.argv(), log_file=self.log, pid_file=self.pid_file)
            self._await(pid)
        else:
            # a server of ours started a moment ago (Sandbox.up spawns it and waits for its port) opens its port
            # before it takes connections ("the database system is starting up"): wait for it to take one
            self._await(self.pid())  # type: ignore[arg-type]
        for name in DATABASES:
            self.create_database(name, extensions=("pg_trgm",) if name == "prefect" else ())

    def _await(self, pid: int) -> None:
        import psycopg

        def accepts() -> bool:
            if has_exited(pid) or not port_open(self.port):
                return False
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=3).close()
                return True
            except psycopg.Error:
                return False  # still starting (or recovering)

        if wait_until(lambda: accepts() or has_exited(pid), timeout=START_TIMEOUT_S, interval=0.2) and accepts():
            return
        why = "exited" if has_exited(pid) else f"is not answering after {START_TIMEOUT_S:.0f}s"
        raise SandboxError(f"sandbox postgres did not come up on 127.0.0.1:{self.port}: process {pid} {why}; read "
                           f"{self.log} (last lines: {tail(self.log, 3) or 'empty'})")

    def stop(self) -> None:
        """Fast shutdown (SIGINT); whatever of it still runs after the timeout is killed."""
        pid = self.pid()
        if pid is not None:
            signal_pid(pid, signal.SIGINT)
            if not wait_until(lambda: has_exited(pid) and not session_members(pid), timeout=STOP_TIMEOUT_S):
                for member in session_members(pid) | ({pid} if not has_exited(pid) else set()):
                    signal_pid(member, signal.SIGKILL)
                wait_until(lambda: has_exited(pid) and not session_members(pid), timeout=5.0)
            wait_until(lambda: not port_in_use(self.port), timeout=5.0, interval=0.02)
        self.pid_file.unlink(missing_ok=True)


def _main() -> int:  # python -m cutover.sandbox._postgres start|stop|url DIR PORT
    if len(sys.argv) != 4 or sys.argv[1] not in ("start", "stop", "url"):
        print("usage: python -m cutover.sandbox._postgres start|stop|url DIR PORT", file=sys.stderr)
        return 2
    server = SandboxPostgres(Path(sys.argv[2]), int(sys.argv[3]))
    try:
        if sys.argv[1] == "start":
            server.start()
        elif sys.argv[1] == "stop":
            server.stop()
        else:
            print(server.url())
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())

__all__ = ["SandboxPostgres", "DATABASES"]
