"""Fixtures for the end-to-end flow tests: one Prefect test harness per session (its SQLite database is
searched for secrets at the end), and for each scenario a private sandbox in the state of "days before":
users created, mailboxes seeded, MX TTL already lowered long enough.

Nothing is mocked: real Dovecots, BIND, unbound, nginx, Ansible, Prefect's API.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os

# Before Prefect is imported: no telemetry from the test server (the Makefile sets these too).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterName, FlowRunFilterState,
                                             FlowRunFilterStateType)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
from prefect.testing.utilities import prefect_test_harness

from cutover.dnschange import set_ttl
from cutover.inventory import Inventory, load_inventory
from cutover.plan import Plan, load_plan
from cutover.sandbox import Sandbox, seed

@pytest.fixture(scope="session", autouse=True)
def _session_log() -> Iterator[None]:
    """Every log record of the session at DEBUG for our packages (and whatever else reaches the root logger,
    Prefect's included), kept in memory and searched for secrets at the end."""
    handler = logging.StreamHandler(io.StringIO())
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {name: logging.getLogger(name).level for name in ("cutover", "checks", "flows")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def session_log_text() -> str:
    handler = next(h for h in logging.getLogger().handlers if isinstance(getattr(h, "stream", None), io.StringIO))
    return handler.stream.getvalue()


@pytest.fixture(scope="session")
def prefect_db() -> Iterator[Path]:
    # The harness polls the server's health until it answers; 60 s was too short with the machine at load 14
    # (every flow test of a worker then errored). A longer ceiling costs nothing when the server is quick.
    with prefect_test_harness(server_startup_timeout=180):
        url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield Path(re.sub(r"^sqlite\+aiosqlite:///", "", url))


@pytest.fixture
def open_plan(tmp_path: Path) -> str:
    """A sandbox plan for a Prefect server that is not locked (no prefect.auth, no operators), like the session's
    temporary server. The rehearsal plan's auth secret exists only once a rehearsal sandbox ran, never on a clean
    clone: a CLI test that leans on the default plan passes here and fails in CI."""
    from cutover.sandbox import write_environment

    env = write_environment(tmp_path / "open-plan", base_port=29000, mailboxes=2)
    text = env.plan.read_text()
    assert "prefect:" not in text and "operators:" not in text
    return str(env.plan)


@dataclass
class Day:
    plan_path: Path
    plan: Plan
    box: Sandbox
    inventory: Inventory
    secrets: list[str] = field(default_factory=list, repr=False)

    def digests(self, side: str, address: str) -> Counter:
        """Multiset of (folder-independent) SHA-256 of every message of a mailbox, read over IMAP."""
        client = self.box.admin_session(side, address)
        try:
            found: Counter = Counter()
            for flags, _delim, name in client.list_folders():
                if b"\\Noselect" in flags:
                    continue
                client.select_folder(name, readonly=True)
                uids = client.search("ALL")
                for start in range(0, len(uids), 200):
                    for data in client.fetch(uids[start:start + 200], ["BODY.PEEK[]"]).values():
                        found[hashlib.sha256(data[b"BODY[]"]).hexdigest()] += 1
            return found
        finally:
            client.logout()

    def inbox_has(self, side: str, address: str, marker: bytes) -> int:
        client = self.box.admin_session(side, address)
        try:
            client.select_folder("INBOX", readonly=True)
            return len(client.search(["HEADER", "Message-ID", marker.decode()]))
        finally:
            client.logout()


def _edit(ttl_normal: int, on_nogo: str, window: tuple[str, str] | None, pause_timeout_s: int,
          propagation_deadline_s: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        text = re.sub(r"ttl: \{normal: \d+, cutover: \d+\}", f"ttl: {{normal: {ttl_normal}, cutover: 1}}", text)
        text = text.replace("on_nogo: ask", f"on_nogo: {on_nogo}")
        text = text.replace("pause_timeout_s: 3600", f"pause_timeout_s: {pause_timeout_s}")
        text = text.replace("propagation_deadline_s: 60", f"propagation_deadline_s: {propagation_deadline_s}")
        if window:
            text = re.sub(r"start: .*\n  end: .*\n", f"start: {window[0]}\n  end: {window[1]}\n", text)
        return text
    return edit


def wait_ttl_low_long_enough(plan: Plan, timeout: float = 60) -> None:
    """Wait until the cutover's own pre-flight says the MX TTL has been low for the old TTL (the journal's time
    and the TTL the primary serves), instead of sleeping a guessed time."""
    from checks.dns import ttl_preflight

    deadline = time.monotonic() + timeout
    while not (check := ttl_preflight(plan)).ok:
        assert check.reason == "ttl-lowered-too-recently" and time.monotonic() < deadline, check.as_row()
        time.sleep(0.2)


@pytest.fixture
def day_factory(tmp_path: Path, prefect_db: Path, sandbox_starter) -> Iterator[Callable[..., Day]]:
    started: list[Sandbox] = []

    def make(*, on_nogo: str = "ask", window: tuple[str, str] | None = None, mailboxes: int = 3,
             messages: int = 12, canaries: bool = True, lower_ttl: bool = True, pause_timeout_s: int = 120,
             propagation_deadline_s: int = 20) -> Day:
        directory = tmp_path / f"env{len(started)}"
        directory.mkdir()
        env, plan, box = sandbox_starter(directory, mailboxes,
                                         edit_plan=_edit(2, on_nogo, window, pause_timeout_s, propagation_deadline_s))
        started.append(box)
        if not canaries:  # nobody marked canary=yes: the access gate has no login evidence (HOLD)
            env.mailboxes.write_text(env.mailboxes.read_text().replace(",yes,", ",no,"))
        inventory = load_inventory(plan)
        assert bool(inventory.canaries) == canaries
        box.ensure_users(inventory.mailboxes)
        seed(plan, inventory.mailboxes, messages, big_attachments=1, big_size=(1_000_000, 1_500_000), sandbox=box)
        if lower_ttl:
            set_ttl(plan, "cutover")   # T-2 days, compressed: the TTL has been low for longer than the old TTL
            wait_ttl_low_long_enough(plan)
        secrets = [Path(m.source_secret.target).read_text().strip() for m in inventory] + \
                  [Path(m.target_secret.target).read_text().strip() for m in inventory] + \
                  [plan.secret(plan.dns.tsig.secret).reveal()]
        return Day(env.plan, plan, box, inventory, secrets)

    yield make
    for box in started:
        box.down()


def run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def wait_paused(plan_path: str | Path, timeout: float = 180) -> str:
    """The id of the paused cutover run of this plan (its plan_path parameter), once it pauses.
    Filtered by plan: a paused run left behind by another test must never be picked up."""
    name = f"cutover of {plan_path}"
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
                if str((r.parameters or {}).get("plan_path")) == str(plan_path)]
            if runs:
                assert len(runs) == 1, f"{len(runs)} paused runs named {name!r}"
                return str(runs[0].id)
            time.sleep(0.5)
    raise AssertionError(f"no paused run {name!r} within {timeout} s")
