"""Fixtures of the checks tests.

Tests that only swap the webmail certificate, stop a service or change one password use the shared session
sandbox (``sandbox_env``) and restore it in a ``finally``. Readiness deletes a target user and its mail, so it
runs on an environment of its own (``own_env``), ports at the shared base + 3000.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from cutover.inventory import Inventory, load_inventory
from cutover.plan import Plan, load_plan
from cutover.sandbox import ADMIN_USER, Environment, Sandbox, write_environment

OWN_BASE_PORT = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT", os.environ.get("PEC_TEST_BASE_PORT", "20000"))) + 3000


@dataclass(frozen=True)
class OwnEnv:
    plan: Plan
    sandbox: Sandbox
    environment: Environment
    inventory: Inventory


def _traversable(path: Path) -> None:
    # The sandbox's unprivileged daemons must walk into pytest's 0700 temp dirs.
    tmp_root = Path(tempfile.gettempdir()).resolve()
    for d in [path.resolve(), *path.resolve().parents]:
        if d == tmp_root or tmp_root not in d.parents:
            break
        d.chmod(stat.S_IMODE(d.stat().st_mode) | stat.S_IXOTH)


@pytest.fixture(scope="session")
def own_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnEnv]:
    directory = tmp_path_factory.mktemp("checks-env")
    _traversable(directory)
    env = write_environment(directory, base_port=OWN_BASE_PORT, mailboxes=6)
    plan = load_plan(env.plan)
    box = Sandbox(plan)
    box.up()
    try:
        inventory = load_inventory(plan)
        box.ensure_users(inventory.mailboxes)
        yield OwnEnv(plan, box, env, inventory)
    finally:
        box.down()


def with_target_auth(plan: Plan, **changes: object) -> Plan:
    """A copy of ``plan`` with the target's auth changed (e.g. a master user for the existence probe)."""
    auth = plan.target.auth.model_copy(update=changes)
    return plan.model_copy(update={"target": plan.target.model_copy(update={"auth": auth})})


def admin_auth(sandbox: Sandbox) -> dict[str, str]:
    """The sandbox admin (a Dovecot master user) as target.auth fields."""
    return {"master_user": ADMIN_USER, "master_secret": f"file:{sandbox.state_dir / 'secrets' / 'sandbox-admin'}"}


def secret_values(plan: Plan) -> list[str]:
    """Every password the environment holds (to prove none leaks into results, CSV or markdown)."""
    root = Path(plan.sandbox.state_dir) / "secrets"  # type: ignore[union-attr]
    return [p.read_text().strip() for p in root.rglob("*") if p.is_file() and len(p.read_text().strip()) >= 8]


def start_service(sandbox: Sandbox, name: str, tries: int = 5) -> None:
    """Start a stopped service, retrying: Sandbox.start_service("webmail") right after a stop fails now and
    then with "did not come up" and an empty log (reported to the sandbox's author)."""
    from cutover.errors import SandboxError

    for attempt in range(tries):
        try:
            sandbox.start_service(name)
            return
        except SandboxError:
            if attempt == tries - 1:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="session")
def tools():
    """The helpers above, for test modules (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(with_target_auth=with_target_auth, admin_auth=admin_auth,
                           secret_values=secret_values, start_service=start_service)
