"""Readiness says what the day will meet (issue 10, part 5): per provider the capabilities and the copy's
workarounds, the session limit seen, the round trip; per member the login name and the quota headroom for what
is still to copy. Against the sandbox's Dovecots, one made strict, one unlike Dovecot."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from checks.providers import provider_profile
from checks.readiness import mailbox_readiness, readiness
from cutover.inventory import Inventory, Mailbox
from cutover.ledger import Ledger
from cutover.mailsync import copy_mailboxes
from cutover.sandbox import seed
from cutover.secrets import SecretRef


@pytest.fixture
def member(sandbox_env, tmp_path: Path):
    def make(messages: int = 0) -> Mailbox:
        local = f"rp{uuid.uuid4().hex[:10]}"
        mb = Mailbox(f"{local}@{sandbox_env.plan.domain}", SecretRef("file", str(tmp_path / "s" / "a" / local)),
                     SecretRef("file", str(tmp_path / "s" / "i" / local)), target_login=f"IC{uuid.uuid4().int % 10**7:07d}")
        sandbox_env.sandbox.ensure_users([mb])
        if messages:
            seed(sandbox_env.plan, [mb], messages, big_attachments=0, rng_seed=5, sandbox=sandbox_env.sandbox)
        return mb
    return make


def test_a_dovecot_like_provider_needs_no_workaround(sandbox_env, member) -> None:
    mb = member()
    profile = provider_profile(sandbox_env.plan, "target", mb)
    assert profile.ok and profile.probed_as == mb.target_login
    assert {"UIDPLUS", "MULTIAPPEND", "LITERAL+", "BINARY", "QUOTA"} <= set(profile.capabilities)
    assert profile.workarounds == () and profile.rtt_ms is not None and profile.rtt_ms > 0
    bound = sandbox_env.plan.target.max_connections + 2
    assert (profile.limit_seen, profile.sessions_opened, profile.bound) == (None, bound, bound)
    assert "workarounds: none needed" in "\n".join(profile.lines())


def test_the_limit_seen_and_the_workarounds_of_an_unfriendly_pair(sandbox_env, member, tmp_path) -> None:
    box = sandbox_env.sandbox
    mb = member(messages=3)
    probe = box.admin_session("target", mb.address)
    try:
        caps = [c.decode() for c in probe.capabilities()]
    finally:
        probe.logout()
    box.set_connection_limit("source", 3)
    box.set_imap_capability("target", [c for c in caps if c not in ("UIDPLUS", "LITERAL+")])
    box.set_namespace("target", "INBOX.", ".")
    try:
        report = readiness(sandbox_env.plan, Inventory(tmp_path / "x.csv", (mb,)))
    finally:
        box.set_connection_limit("source", None)
        box.set_imap_capability("target", None)
        box.set_namespace("target", "", "/")
    source, target = report.providers
    assert report.mailboxes[0].ready, report.rows()
    assert (source.side, source.limit_seen) == ("source", 3), source
    assert "Maximum number of connections from user+IP exceeded" in source.limit_said
    assert target.limit_seen is None and target.probed_as == mb.target_login
    text = "\n".join(target.workarounds)
    assert "no UIDPLUS" in text and "no LITERAL+" in text and "'INBOX.'" in text and "MULTIAPPEND" not in text
    md = report.markdown()
    assert "#### Providers" in md and "refused session 4" in md and "round trip" in md


def test_quota_headroom_is_for_what_is_still_to_copy(sandbox_env, member, tmp_path) -> None:
    box, plan = sandbox_env.sandbox, sandbox_env.plan.model_copy(update={"ledger": tmp_path / "ledger.sqlite"})
    mb = member(messages=6)
    assert copy_mailboxes(plan, [mb]).ok
    target_used = mailbox_readiness(plan, mb).target.used_kib
    box.set_quota("target", mb.address, (target_used + 40) * 1024)  # full but for 40 KiB
    ledger = Ledger(plan.ledger)
    try:
        blind = mailbox_readiness(plan, mb)  # without the ledger everything counts as still to copy
        seen = mailbox_readiness(plan, mb, copied_bytes=ledger.done_bytes(mb.address))
    finally:
        ledger.close()
        box.set_quota("target", mb.address, None)
    assert blind.status == "over-quota" and "still to copy" in blind.detail, blind.row()
    assert seen.status == "ready" and float(seen.row()["headroom_mb"]) > 0, seen.row()
    assert float(seen.row()["to_copy_mb"]) < 0.01
