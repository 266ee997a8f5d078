"""Two flow runs in one process share one provider connection cap (issue 10, part 2).

``max_connections`` is a hard cap counted process-wide (``cutover.limits``) and, under Prefect, also a strict
global concurrency limit per provider (``flows/_copy.py``). Two pre-stage runs started at once in one process,
each sized to the cap, would open twice the sessions without it: the kernel's count of connections to the target
Dovecot never goes above the plan's cap, both runs finish with every mailbox verified (read back from both
servers), and the Prefect limit exists with the plan's number and no slot left taken. Real Prefect API (the
session's test server), real Dovecots; nothing mocked.
"""

from __future__ import annotations

import threading
import time

from prefect.client.orchestration import get_client

from cutover.limits import concurrency_limit_name, session_cap
from cutover.plan import load_plan
from flows.prestage import prestage

from .conftest import Day, run_in_thread

CAP = 2


def _established(port: int) -> int:
    """TCP connections to 127.0.0.1:``port`` established now, as the kernel sees them (client ends only)."""
    count = 0
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].split(":")[1], 16) == port:
            count += 1
    return count


def test_two_flow_runs_in_one_process_share_the_targets_cap(day_factory) -> None:
    day: Day = day_factory(mailboxes=4, messages=25, lower_ttl=False)
    text = day.plan_path.read_text()
    head, sep, tail = text.partition("target:")
    # A pace on the target keeps both runs copying at the same time (a copy of 25 messages is over in a second).
    day.plan_path.write_text(head + sep + tail.replace("max_connections: 8", f"max_connections: {CAP}\n"
                                                       "  max_messages_per_s: 10", 1))
    plan = load_plan(day.plan_path)
    assert plan.target.max_connections == CAP and plan.copy_settings.mailboxes_in_parallel > CAP
    addresses = [m.address for m in day.inventory]
    port = plan.target.imap.port
    assert _established(port) == 0
    session_cap(plan.target).reset_peak()

    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _established(port))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        def timed(half: list[str]) -> dict:
            started = time.monotonic()
            result = prestage(plan_path=str(day.plan_path), mailboxes=half)
            return {**result, "span": (started, time.monotonic())}

        runs = [run_in_thread(lambda half=half: timed(half)) for half in (addresses[:2], addresses[2:])]
        for thread, _ in runs:
            thread.join(timeout=600)
    finally:
        stop.set()
        sampler.join()
    for _, out in runs:
        assert "error" not in out, out.get("error")
        assert out["result"]["verified"] == 2, out["result"]
    (a0, a1), (b0, b1) = (out["result"]["span"] for _, out in runs)
    assert min(a1, b1) - max(a0, b0) > 2, "the two runs hardly overlapped: the test would prove nothing"

    assert 1 <= peak[0] <= CAP, f"{peak[0]} connections to the target at once, the plan allows {CAP}"
    cap = session_cap(plan.target)
    assert cap.peak <= CAP and cap.in_use == 0, (cap.peak, cap.in_use)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(concurrency_limit_name(plan.target))
    assert (limit.limit, limit.active_slots) == (CAP, 0), limit
    for address in addresses:
        assert day.digests("target", address) == day.digests("source", address), address
