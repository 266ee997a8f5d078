"""A target without MULTIAPPEND and with a per-message size limit; duplicates are never verified."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from cutover.mailsync import _imapops as ops
from cutover.mailsync import copy_mailboxes


@pytest.fixture
def target_without_multiappend(sandbox_env):
    """``drop(capabilities)``: the target Dovecot announces these minus MULTIAPPEND (restored afterwards)."""
    box = sandbox_env.sandbox
    yield lambda caps: box.set_imap_capability("target", [c for c in caps if c.upper() != "MULTIAPPEND"])
    box.set_imap_capability("target", None)


def _capabilities(sandbox_env, address: str) -> list[str]:
    client = sandbox_env.sandbox.admin_session("target", address)
    try:
        return [c.decode() for c in client.capabilities()]
    finally:
        client.logout()


def test_too_large_third_message_without_multiappend_leaves_the_first_two_once(
        imap_view, sandbox_env, make_mailbox, plan_for, target_without_multiappend) -> None:
    mb = make_mailbox()
    box = sandbox_env.sandbox
    when = dt.datetime(2026, 2, 2, 10, 0, tzinfo=dt.timezone.utc)
    raw = [imap_view.message(f"m{i}", ("grande " * 4000) if i == 2 else f"corpo {i}") for i in range(5)]
    for r in raw:
        box.deliver("source", mb.address, r, internaldate=when)
    caps = _capabilities(sandbox_env, mb.address)
    assert "MULTIAPPEND" in caps
    box.set_max_message_size("target", mb.address, 10_000)
    try:
        target_without_multiappend(caps)
        assert "MULTIAPPEND" not in _capabilities(sandbox_env, mb.address)

        report = copy_mailboxes(plan_for(batch_messages=10), [mb])  # one batch; the 3rd message is refused
    finally:
        box.set_max_message_size("target", mb.address, None)

    m = report.mailboxes[0]
    assert (m.status, m.reason, m.copied, m.missing) == ("failed", "skipped", 4, 1), m.as_row()
    inbox = imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address))["INBOX"]
    source = imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))["INBOX"]
    big = [sha for sha in source if sha not in inbox]
    assert len(big) == 1 and sum(inbox.values()) == 4 and set(inbox.values()) == {1}  # each of the others once
    assert inbox + Counter({big[0]: 1}) == source


def test_a_duplicate_made_during_a_run_fails_the_mailbox(imap_view, sandbox_env, make_mailbox, plan_for,
                                                         monkeypatch) -> None:
    mb = make_mailbox(messages=6)
    plan = plan_for()
    real = ops.append_messages
    calls = []

    def append_twice(client, folder, messages, **kw):  # a bug that sends a batch twice, recording the second
        if not calls:
            calls.append(folder)
            real(client, folder, messages, **{**kw, "appended": None})
        return real(client, folder, messages, **kw)

    monkeypatch.setattr(ops, "append_messages", append_twice)
    first = copy_mailboxes(plan, [mb]).mailboxes[0]
    monkeypatch.setattr(ops, "append_messages", real)

    assert (first.status, first.reason, first.verified) == ("failed", "duplicates", False), first.as_row()
    assert first.duplicates >= 1 and "twice" in first.error
    again = copy_mailboxes(plan, [mb]).mailboxes[0]  # still there: still not verified
    assert (again.status, again.reason, again.duplicates) == ("failed", "duplicates", first.duplicates), again.as_row()
