"""Connection limits, rate limits and throttling (issue 10, part 2) against a strict sandbox provider.

``Sandbox.set_connection_limit`` makes a Dovecot refuse a member's session beyond N (per user and IP,
``mail_max_userip_connections``): it answers ``NO [LIMIT] Maximum number of connections from user+IP exceeded``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import imaplib
import pytest
from imapclient.exceptions import LoginError

from checks.imap import canary_login
from checks.readiness import mailbox_readiness
from cutover.errors import AuthFailed, ConnectionLost, Throttled
from cutover.imap import _mapped, connect
from cutover.limits import session_cap
from cutover.mailsync import copy_mailboxes
from cutover.sandbox import established_connections, peak_connections


@pytest.fixture
def strict(sandbox_env):
    """``limit(side, n)``: at most n sessions per member on that provider (restored afterwards)."""
    box = sandbox_env.sandbox
    touched: list[str] = []

    def limit(side: str, n: int) -> None:
        box.set_connection_limit(side, n)
        touched.append(side)

    yield limit
    for side in dict.fromkeys(touched):
        box.set_connection_limit(side, None)


@pytest.mark.parametrize("said, exc, at_login, expected", [
    # table of what providers answer; the classification is pure (the live cases are below)
    ("* BYE Too many connections, try again later", imaplib.IMAP4.error, True, "throttled"),
    ("command: LOGIN => [UNAVAILABLE] Service temporarily unavailable", LoginError, True, "throttled"),
    ("[THROTTLED] Slow down", imaplib.IMAP4.error, False, "throttled"),
    ("[INUSE] Mailbox in use", imaplib.IMAP4.error, False, "throttled"),
    ("[LIMIT] Maximum number of connections from user+IP exceeded", LoginError, True, "throttled"),
    ("command: LOGIN => Too many concurrent connections for this account", LoginError, True, "throttled"),
    ("command: LOGIN => Too many open connections", LoginError, True, "throttled"),
    ("[ALERT] Account exceeded command or bandwidth limits. (Failure)", LoginError, True, "throttled"),
    ("command: LOGIN => Server busy, try later", LoginError, True, "throttled"),
    ("* BYE Server busy", LoginError, True, "throttled"),  # what connect() makes of a BYE answered to LOGIN
    ("[AUTHENTICATIONFAILED] Authentication failed.", LoginError, True, "bad-credentials"),
    ("command: LOGIN => Login failed", LoginError, True, "bad-credentials"),
    ("command: LOGIN => socket error: EOF", LoginError, True, "unreachable"),
    ("socket error: EOF", imaplib.IMAP4.abort, False, "unreachable"),
])
def test_too_many_and_slow_down_are_never_bad_credentials(said, exc, at_login, expected) -> None:
    assert _mapped("a@pec.fnofi.it", "srv", exc(said), side="target", at_login=at_login).reason == expected


def test_a_member_over_the_providers_limit_is_throttled_not_refused(sandbox_env, make_mailbox, strict) -> None:
    mb = make_mailbox()
    strict("source", 1)
    held = connect(sandbox_env.plan, "source", mb)
    try:
        with pytest.raises(Throttled) as exc:
            connect(sandbox_env.plan, "source", mb)
        assert "Maximum number of connections" in str(exc.value) and "2FA" not in str(exc.value)
        verdict = mailbox_readiness(sandbox_env.plan, mb)
        assert (verdict.status, verdict.side) == ("throttled", "source"), verdict.row()
        assert "nothing for the member to do" in verdict.action
    finally:
        held.logout()
    strict("target", 1)
    held = connect(sandbox_env.plan, "target", mb)
    try:
        result = canary_login(sandbox_env.plan, mb)
        assert (result.ok, result.reason) == (False, "throttled") and "2FA" not in result.detail
    finally:
        held.logout()


def test_the_copy_backs_off_and_finishes_when_the_provider_lets_it(sandbox_env, make_mailbox, plan_for,
                                                                   strict) -> None:
    mb = make_mailbox(messages=6)
    strict("source", 1)
    held = connect(sandbox_env.plan, "source", mb)  # the member's own mail client, say
    threading.Timer(1.5, held.logout).start()
    waits = []
    report = copy_mailboxes(plan_for(throttle_backoff_s=0.4, throttle_retries=8), [mb],
                            on_progress=lambda e: e.waiting_s and waits.append((e.waiting_s, e.detail)))
    m = report.mailboxes[0]
    assert m.verified and m.copied == 6, m.as_row()
    assert waits and all(0 < w <= 60 for w, _ in waits) and "Maximum number of connections" in waits[0][1]


def test_when_the_budget_runs_out_the_mailbox_is_throttled_with_the_servers_words(sandbox_env, make_mailbox,
                                                                                  plan_for, strict) -> None:
    mb, other = make_mailbox(messages=3), make_mailbox(messages=3)
    strict("target", 1)
    held = connect(sandbox_env.plan, "target", mb)
    try:
        report = copy_mailboxes(plan_for(throttle_backoff_s=0.05, throttle_retries=2), [mb, other])
    finally:
        held.logout()
    by = {m.address: m for m in report.mailboxes}
    assert (by[mb.address].status, by[mb.address].reason) == ("failed", "throttled"), by[mb.address].as_row()
    assert "Maximum number of connections from user+IP exceeded" in by[mb.address].error
    assert "after 3 attempts" in by[mb.address].error
    assert by[other.address].verified


def test_a_strict_provider_one_session_per_member_still_copies_and_verifies(imap_view, sandbox_env, make_mailbox,
                                                                            plan_for, strict) -> None:
    """60 messages make the engine want a second target session for read-back; the provider refuses it and the
    verification reads back on the one session instead."""
    mb = make_mailbox(messages=60)
    strict("target", 1)
    strict("source", 1)
    m = copy_mailboxes(plan_for(), [mb]).mailboxes[0]
    assert m.verified and m.copied == 60, m.as_row()
    assert imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)) == \
        imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))


def test_max_connections_is_one_cap_for_the_whole_process(imap_view, sandbox_env, make_mailbox, plan_for) -> None:
    """Two copies at once in one process (two flow runs, or a copy and a verification) each sized to the cap
    would open twice the sessions; the kernel's count of connections to the target never exceeds the plan's."""
    boxes = [make_mailbox(messages=25, rng_seed=i) for i in range(4)]
    base = plan_for(mailboxes_in_parallel=2)
    plan = base.model_copy(update={"target": base.target.model_copy(update={"max_connections": 2})})
    port = plan.target.imap.port
    assert established_connections(port) == 0
    session_cap(plan.target).reset_peak()
    with peak_connections(port) as peak, ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda pair: copy_mailboxes(plan, pair), [boxes[:2], boxes[2:]]))
    assert all(m.verified for r in reports for m in r.mailboxes), [m.as_row() for r in reports for m in r.mailboxes]
    assert 1 <= peak[0] <= 2, peak[0]
    assert session_cap(plan.target).peak <= 2 and session_cap(plan.target).in_use == 0


def test_rate_limits_hold_the_copy_to_the_providers_pace(sandbox_env, make_mailbox, plan_for) -> None:
    """A lower bound only (a slow machine can only make it slower): 12 messages at 8 a second take ≥ 1.25 s."""
    mb = make_mailbox(messages=12)
    base = plan_for()
    plan = base.model_copy(update={"target": base.target.model_copy(update={"max_messages_per_s": 8.0})})
    started = time.monotonic()
    m = copy_mailboxes(plan, [mb]).mailboxes[0]
    assert m.verified and m.copied == 12
    assert time.monotonic() - started >= 12 / 8 - 0.25
