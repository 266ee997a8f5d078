"""Issue 10, part 2, the cases test_throttling.py leaves: the bytes-per-second limit of a provider, and the plan's
sandbox option that makes a provider strict (``sandbox.max_userip_connections``, what the rehearsal plan sets for
its source). Real Dovecots; the outcome read back from them."""

from __future__ import annotations

import time

import pytest

from cutover.errors import Throttled
from cutover.imap import connect
from cutover.inventory import load_inventory
from cutover.mailsync import copy_mailboxes


def test_a_bytes_per_second_limit_holds_the_copy_to_the_providers_pace(imap_view, sandbox_env, make_mailbox,
                                                                      plan_for) -> None:
    """A lower bound only (a slow machine can only make it slower): 8 messages of ~50 kB at 200 kB/s take ≥ 2 s."""
    mb = make_mailbox()
    for i in range(8):
        sandbox_env.sandbox.deliver("source", mb.address, imap_view.message(f"allegato {i}", f"{i:02d}" * 25_000))
    base = plan_for()
    plan = base.model_copy(update={"target": base.target.model_copy(update={"max_bytes_per_s": 200_000.0})})
    started = time.monotonic()
    m = copy_mailboxes(plan, [mb]).mailboxes[0]
    elapsed = time.monotonic() - started
    assert m.verified and m.copied == 8 and m.bytes > 400_000, m.as_row()
    assert elapsed >= m.bytes / 200_000 - 0.25, (elapsed, m.bytes)
    assert imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)) == \
        imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))


def test_the_plans_strict_provider_option_limits_sessions_per_member(tmp_path, sandbox_starter) -> None:
    """``sandbox: {max_userip_connections: {source: 3}}`` (the rehearsal plan's setting): the source Dovecot lets a
    member open three sessions and answers the fourth with its per user+IP limit, classified throttled."""
    directory = tmp_path / "strict"
    directory.mkdir()

    def strict(text: str) -> str:
        return text.replace("\nsandbox:\n", "\nsandbox:\n  max_userip_connections: {source: 3}\n", 1)

    env, plan, box = sandbox_starter(directory, 1, edit_plan=strict, services=["aruba", "infocert"])
    try:
        assert plan.sandbox.max_userip_connections == {"source": 3}
        mb = load_inventory(plan).mailboxes[0]
        box.ensure_users([mb])
        held = [connect(plan, "source", mb) for _ in range(3)]
        try:
            with pytest.raises(Throttled) as exc:
                connect(plan, "source", mb)
            assert "mail_max_userip_connections=3" in str(exc.value)
            target = [connect(plan, "target", mb) for _ in range(4)]  # the target stays lenient
            for client in target:
                client.logout()
        finally:
            for client in held:
                client.logout()
    finally:
        box.down()
