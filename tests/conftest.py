"""Session fixtures shared by every test package. Sub-directories add their own in their conftest files.

``sandbox_env`` runs one real sandbox (Dovecot x2, BIND x2, unbound, nginx) on ports 20000+ so it never
clashes with a rehearsal sandbox on 10000+; override with PEC_TEST_SANDBOX_BASE_PORT (or PEC_TEST_BASE_PORT).
"""

from __future__ import annotations

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


def start_sandbox(directory: Path, base_port: int, mailboxes: int) -> tuple[Environment, Plan, Sandbox]:
    make_traversable(directory)
    env = write_environment(directory, base_port=base_port, mailboxes=mailboxes)
    plan = load_plan(env.plan)
    box = Sandbox(plan)
    box.up()
    return env, plan, box


@pytest.fixture(scope="session")
def sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxEnv]:
    directory = tmp_path_factory.mktemp("sandbox-env")
    env, plan, box = start_sandbox(directory, SANDBOX_BASE_PORT, mailboxes=8)
    try:
        inventory = load_inventory(plan)
        box.ensure_users(inventory.mailboxes)
        report = seed(plan, inventory.mailboxes, SEED_MESSAGES, big_attachments=SEED_BIG, sandbox=box)
        yield SandboxEnv(plan, box, env, inventory, report)
    finally:
        box.down()


@pytest.fixture
def sandbox_starter():
    """``start(directory, base_port, mailboxes) -> (environment, plan, sandbox)`` for tests needing their own."""
    return start_sandbox
