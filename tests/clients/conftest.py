"""A sandbox with the surroundings (write_environment(surroundings=True)) for the PEC clients' tests: both
Dovecots with their submission services, the sandbox MTA delivering by LMTP, the clients' Postfix relay and the
reader. Nothing is mocked: the role runs through ansible-runner against these real services.

Ports: a free base from the root conftest's allocator (``sandbox_tools``, + 700 so other packages' sandboxes
keep theirs), held for the session. State under a temp directory of its own (not pytest's numbered dirs, which a
concurrent session may prune while the daemons use them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from cutover.clients import switch_clients
from cutover.inventory import load_inventory
from cutover.plan import Plan, load_plan
from cutover.sandbox import Environment, Sandbox, write_environment

_BASE = int(os.environ.get("PEC_TEST_SANDBOX_BASE_PORT") or os.environ.get("PEC_TEST_BASE_PORT") or "20000")
SERVICES = ["aruba", "infocert", "mta", "relay", "reader"]  # no DNS or webmail: the role does not use them


@dataclass(frozen=True)
class ClientsEnv:
    plan: Plan
    sandbox: Sandbox
    environment: Environment

    def passwords(self) -> list[str]:
        return [self.sandbox.client_login(side, "protocollo")[1] for side in ("source", "target")]


@pytest.fixture(scope="session")
def clients_env(sandbox_tools) -> Iterator[ClientsEnv]:
    base, lock = sandbox_tools.allocate_base_port(_BASE + 700)
    directory = Path(tempfile.mkdtemp(prefix="pec-test-clients-"))
    directory.chmod(0o711)  # the mail user and Postfix's daemons walk into it
    environment = write_environment(directory, base_port=base, mailboxes=1, surroundings=True)
    plan = load_plan(environment.plan)
    box = Sandbox(plan)
    try:
        box.up(SERVICES)
        box.ensure_users(load_inventory(plan).mailboxes)
        # Before the day the organisation's clients work with the source provider.
        assert switch_clients(plan, "source").ok
        yield ClientsEnv(plan, box, environment)
    finally:
        box.down(SERVICES)
        os.close(lock)
        shutil.rmtree(directory, ignore_errors=True)
