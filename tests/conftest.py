"""Session fixtures shared by every test package. Sub-directories add their own in their conftest files.

``sandbox_env`` runs one real sandbox (Dovecot x2, BIND x2, unbound, nginx) on ports 20000+ so it never
clashes with a rehearsal sandbox on 10000+; override with PEC_TEST_SANDBOX_BASE_PORT (or PEC_TEST_BASE_PORT).
Several test sessions may run at once on one machine: each sandbox takes a free base port (base, base+10,
...) and holds a lock file for it while it lives.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from cutover.inventory import Inventory, load_inventory
from cutover.plan import Plan, load_plan
from cutover.sandbox import Environment, Sandbox, SeedReport, seed, write_environment

SANDBOX_BASE_PORT = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT") or os.environ.get("PEC_TEST_BASE_PORT") or "20000")
# Offsets used by write_environment are 53, 54, 55, 443, 993, 1587, 1993: bases 10 apart (fewer than 94 steps)
# never share a port.
_BASE_STEP, _BASE_CANDIDATES = 10, 90
_LOCK_DIR = Path(tempfile.gettempdir()) / "pec-cutover-test-ports"
SEED_MESSAGES = 30
SEED_BIG = 1


@dataclass(frozen=True)
class SandboxEnv:
    """A running sandbox for the test session and what was seeded into its source side."""

    plan: Plan
    sandbox: Sandbox
    environment: Environment
    inventory: Inventory
    seed_report: SeedReport

    @property
    def inventory_path(self) -> Path:
        return self.environment.mailboxes

    @property
    def plan_path(self) -> Path:
        return self.environment.plan


def make_traversable(path: Path) -> None:
    """Let the sandbox's unprivileged daemons walk into pytest's temp dirs (pytest makes them 0700)."""
    tmp_root = Path(tempfile.gettempdir()).resolve()
    for d in [path.resolve(), *path.resolve().parents]:
        if d == tmp_root or tmp_root not in d.parents:
            break
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ports_free(base: int) -> bool:
    from cutover.sandbox._process import port_open

    return not any(port_open(base + off, timeout=0.1) for off in (53, 54, 55, 443, 993, 1587, 1993))


def allocate_base_port(first: int = SANDBOX_BASE_PORT) -> tuple[int, int]:
    """A base port whose six sandbox ports are free, locked for this process: returns (base, lock fd)."""
    _LOCK_DIR.mkdir(exist_ok=True)
    for k in range(_BASE_CANDIDATES):
        base = first + k * _BASE_STEP
        fd = os.open(_LOCK_DIR / f"{base}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _ports_free(base):
            return base, fd
        os.close(fd)
    raise RuntimeError(f"no free sandbox base port from {first} on; stop stray sandboxes (pec-cutover sandbox down)")


def start_sandbox(directory: Path, base_port: int, mailboxes: int, *, edit_plan=None,
                  services: list[str] | None = None) -> tuple[Environment, Plan, Sandbox]:
    """Write an environment (``edit_plan(text) -> text`` may change the plan YAML), start its sandbox."""
    make_traversable(directory)
    env = write_environment(directory, base_port=base_port, mailboxes=mailboxes)
    # The webmail response-time limit is a product check, tested with a limit no server meets
    # (tests/checks/test_webmail.py); elsewhere a loaded CI machine must not turn it into a flake.
    text = env.plan.read_text().replace("max_response_ms: 2000", "max_response_ms: 20000")
    env.plan.write_text(edit_plan(text) if edit_plan is not None else text)
    plan = load_plan(env.plan)
    box = Sandbox(plan)
    try:
        box.up(services)
    except BaseException:
        box.down()
        raise
    return env, plan, box


@pytest.fixture(scope="session")
def sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxEnv]:
    directory = tmp_path_factory.mktemp("sandbox-env")
    base, lock = allocate_base_port()
    try:
        env, plan, box = start_sandbox(directory, base, mailboxes=8)
    except BaseException:
        os.close(lock)
        raise
    try:
        inventory = load_inventory(plan)
        box.ensure_users(inventory.mailboxes)
        report = seed(plan, inventory.mailboxes, SEED_MESSAGES, big_attachments=SEED_BIG, sandbox=box)
        yield SandboxEnv(plan, box, env, inventory, report)
    finally:
        box.down()
        os.close(lock)


@pytest.fixture
def sandbox_starter():
    """``start(directory, mailboxes) -> (environment, plan, sandbox)`` on a free base port, for tests that
    need a sandbox of their own (they must call ``sandbox.down()``; the port lock is released after the test)."""
    locks: list[int] = []

    def start(directory: Path, mailboxes: int = 2, **options) -> tuple[Environment, Plan, Sandbox]:
        base, lock = allocate_base_port(SANDBOX_BASE_PORT + 500)
        locks.append(lock)
        return start_sandbox(directory, base, mailboxes, **options)

    yield start
    for lock in locks:
        os.close(lock)


@pytest.fixture(scope="session")
def sandbox_tools():
    """``allocate_base_port`` and ``start_sandbox`` for session fixtures of sub-directories (conftest modules are
    not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(allocate_base_port=allocate_base_port, start_sandbox=start_sandbox,
                           make_traversable=make_traversable)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """One real PostgreSQL (Debian's postgresql 15, the sandbox's own service) for the session, on a free port."""
    from cutover.sandbox._postgres import SandboxPostgres

    directory = tmp_path_factory.mktemp("postgres")
    make_traversable(directory)
    server = SandboxPostgres(directory / "pg", _free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class LedgerStore:
    """Where a test's ledger lives, in one backend: ``open()`` opens it (again), ``url``/``path`` for a plan."""

    backend: str
    path: Path
    url: str | None = None

    def open(self):
        from cutover.ledger import Ledger

        if self.url is None:
            return Ledger(self.path)
        from cutover.ledger_postgres import PostgresLedger

        return PostgresLedger(self.url)


_STORE_COUNT = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_store(request, tmp_path: Path) -> LedgerStore:
    """The same ledger test on both backends: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return LedgerStore("sqlite", tmp_path / "ledger.sqlite")
    server = request.getfixturevalue("postgres_server")
    name = f"t{os.getpid()}_{next(_STORE_COUNT)}"
    return LedgerStore("postgresql", tmp_path / "ledger.sqlite", server.create_database(name))
