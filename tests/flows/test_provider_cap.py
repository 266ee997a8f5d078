"""Flow runs share one provider connection cap (issue 10, part 2): in one process, and across processes.

``max_connections`` is a hard cap counted process-wide (``cutover.limits``) and, under Prefect, also a strict
global concurrency limit per provider (``flows/_copy.py``) shared by every process that talks to the server. Two
pre-stage runs started at once, each sized to the cap, would open twice the sessions without it: the kernel's
count of connections to the target Dovecot never goes above the plan's cap, both runs finish with every mailbox
verified (read back from both servers), and the Prefect limit holds the plan's number and no slot left taken.
Real Prefect API (the session's test server), real Dovecots; nothing mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from cutover.limits import concurrency_limit_name, session_cap
from cutover.plan import Plan, load_plan
from cutover.sandbox import established_connections, peak_connections
from flows.prestage import prestage

from .conftest import Day, run_in_thread

CAP = 2
REPO = Path(__file__).resolve().parents[2]


def _strict_target(day: Day) -> Plan:
    """The day's plan with the target capped at CAP sessions, and paced: a copy of 25 messages is over in a second,
    the pace keeps both runs copying at the same time."""
    head, sep, tail = day.plan_path.read_text().partition("target:")
    day.plan_path.write_text(head + sep + tail.replace("max_connections: 8", f"max_connections: {CAP}\n"
                                                       "  max_messages_per_s: 10", 1))
    plan = load_plan(day.plan_path)
    assert plan.target.max_connections == CAP and plan.copy_settings.mailboxes_in_parallel > CAP
    assert established_connections(plan.target.imap.port) == 0
    return plan


def _timed_prestage(plan_path: Path, addresses: list[str]) -> dict:
    started = time.monotonic()
    result = prestage(plan_path=str(plan_path), mailboxes=addresses)
    return {**result, "span": (started, time.monotonic())}


def _after(day: Day, plan: Plan, peak: int, spans: list[tuple[float, float]]) -> None:
    (a0, a1), (b0, b1) = spans
    assert min(a1, b1) - max(a0, b0) > 2, "the two runs hardly overlapped: the test would prove nothing"
    assert 1 <= peak <= CAP, f"{peak} connections to the target at once, the plan allows {CAP}"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(concurrency_limit_name(plan.target))
    assert (limit.limit, limit.active_slots) == (CAP, 0), limit
    for mailbox in day.inventory:
        assert day.digests("target", mailbox.address) == day.digests("source", mailbox.address), mailbox.address


def test_two_flow_runs_in_one_process_share_the_targets_cap(day_factory) -> None:
    day: Day = day_factory(mailboxes=4, messages=25, lower_ttl=False)
    plan = _strict_target(day)
    addresses = [m.address for m in day.inventory]
    session_cap(plan.target).reset_peak()
    with peak_connections(plan.target.imap.port) as peak:
        runs = [run_in_thread(lambda half=half: _timed_prestage(day.plan_path, half))
                for half in (addresses[:2], addresses[2:])]
        for thread, _ in runs:
            thread.join(timeout=600)
    for _, out in runs:
        assert "error" not in out, out.get("error")
        assert out["result"]["verified"] == 2, out["result"]
    cap = session_cap(plan.target)
    assert cap.peak <= CAP and cap.in_use == 0, (cap.peak, cap.in_use)
    _after(day, plan, peak[0], [out["result"]["span"] for _, out in runs])


def test_a_flow_run_in_another_process_shares_it_through_the_prefect_limit(day_factory, tmp_path) -> None:
    """Each process has its own session cap: only the server's global concurrency limit holds two processes (two
    workers, or a worker and an operator's shell) to the provider's number together."""
    day: Day = day_factory(mailboxes=4, messages=25, lower_ttl=False)
    plan = _strict_target(day)
    addresses = [m.address for m in day.inventory]
    # The other process imports Prefect first (seconds on a loaded machine), says so, and starts when told: both
    # runs start together, so they overlap however slow the imports are.
    script = ("import json, sys, time; from flows.prestage import prestage; print('imported', flush=True); "
              "sys.stdin.readline(); t0 = time.monotonic(); "
              "r = prestage(plan_path=sys.argv[1], mailboxes=sys.argv[2:]); "
              "print(json.dumps({**r, 'span': [t0, time.monotonic()]}))")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "other-home")}
    with peak_connections(plan.target.imap.port) as peak:
        other = subprocess.Popen([sys.executable, "-c", script, str(day.plan_path), *addresses[2:]], cwd=REPO,
                                 env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert other.stdout.readline().strip() == "imported", other.stderr.read()[-2000:]
        other.stdin.write("go\n")
        other.stdin.flush()
        here = _timed_prestage(day.plan_path, addresses[:2])
        out, err = other.communicate(timeout=600)
    assert other.returncode == 0, err[-2000:]
    import json

    there = json.loads(out.strip().splitlines()[-1])
    assert here["verified"] == 2 and there["verified"] == 2, (here, there)
    _after(day, plan, peak[0], [here["span"], tuple(there["span"])])
