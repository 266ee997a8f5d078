"""Fixtures of the checks tests.

Tests that only swap the webmail certificate, stop a service or change one password use the shared session
sandbox (``sandbox_env``) and restore it in a ``finally``. Readiness deletes a target user and its mail, so it
runs on an environment of its own (``own_env``), started with the root conftest's port allocator and starter
(``sandbox_tools``), so concurrent sessions and other packages never share its ports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from cutover.inventory import Inventory, load_inventory
from cutover.plan import Plan
from cutover.sandbox import ADMIN_USER, Environment, Sandbox

_BASE = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT") or os.environ.get("PEC_TEST_BASE_PORT") or "20000")
@dataclass(frozen=True)
class OwnEnv:
    plan: Plan
    sandbox: Sandbox
    environment: Environment
    inventory: Inventory


@pytest.fixture(scope="session")
def own_env(tmp_path_factory: pytest.TempPathFactory, sandbox_tools) -> Iterator[OwnEnv]:
    directory = tmp_path_factory.mktemp("checks-env")
    base, lock = sandbox_tools.allocate_base_port(_BASE + 500)
    try:
        env, plan, box = sandbox_tools.start_sandbox(directory, base, 6)
        try:
            inventory = load_inventory(plan)
            box.ensure_users(inventory.mailboxes)
            yield OwnEnv(plan, box, env, inventory)
        finally:
            box.down()
    finally:
        os.close(lock)


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


def start_service(sandbox: Sandbox, name: str) -> None:
    """Start a stopped service at once: stop_service returns only when the old instance is gone and its port is
    free, so no retry or wait is needed here (and none would hide a regression)."""
    if not sandbox.status([name])[0].running:
        assert sandbox.start_service(name).running


@pytest.fixture(scope="session")
def tools():
    """The helpers above, for test modules (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(with_target_auth=with_target_auth, admin_auth=admin_auth,
                           secret_values=secret_values, start_service=start_service)
