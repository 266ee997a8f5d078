"""Real providers (issue 10): members log in to the target with an InfoCert-style User ID, not the address.

Every test makes its own member whose target user on the sandbox's Dovecot is named ``IC`` + 7 digits only:
a login with the address is refused there, so a pass proves the login name was used.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from checks.imap import canary_login
from checks.readiness import mailbox_readiness
from cutover.errors import AuthFailed
from cutover.imap import session
from cutover.inventory import Mailbox
from cutover.mailsync import copy_mailboxes
from cutover.sandbox import seed
from cutover.secrets import SecretRef


@pytest.fixture
def member_with_user_id(sandbox_env, tmp_path: Path):
    """``make(messages)``: a new member whose target login is an InfoCert-style User ID."""
    box, plan = sandbox_env.sandbox, sandbox_env.plan

    def make(messages: int = 6) -> Mailbox:
        local = f"ic{uuid.uuid4().hex[:10]}"
        user_id = f"IC{random.randrange(10**6, 10**7):07d}"
        secrets = tmp_path / "secrets"
        mb = Mailbox(f"{local}@{plan.domain}", SecretRef("file", str(secrets / "aruba" / local)),
                     SecretRef("file", str(secrets / "infocert" / local)), canary=True, target_login=user_id)
        box.ensure_users([mb])
        if messages:
            seed(plan, [mb], messages, big_attachments=0, rng_seed=11, sandbox=box)
        return mb

    return make


def test_the_target_knows_only_the_user_id(sandbox_env, member_with_user_id) -> None:
    mb = member_with_user_id(0)
    as_address = Mailbox(mb.address, mb.source_secret, mb.target_secret)  # the same member, no target_login
    with pytest.raises(AuthFailed) as exc:
        with session(sandbox_env.plan, "target", as_address):
            pass
    assert exc.value.reason == "bad-credentials" and "User ID" in str(exc.value) and "2FA" not in str(exc.value)
    with session(sandbox_env.plan, "target", mb) as client:
        assert client.folder_exists("INBOX")


def test_copy_reverse_readiness_and_canary_use_the_login_name(imap_view, sandbox_env, member_with_user_id,
                                                               plan_for) -> None:
    mb = member_with_user_id(8)
    plan = plan_for()
    report = copy_mailboxes(plan, [mb])
    m = report.mailboxes[0]
    assert m.verified and m.copied == 8, m.as_row()
    assert m.logins == {"target": mb.target_login} and any(mb.target_login in str(row) for row in report.rows())
    assert imap_view.digests(imap_view.snapshot(sandbox_env, "target", mb.address)) == \
        imap_view.digests(imap_view.snapshot(sandbox_env, "source", mb.address))

    # mail that reached the target after the switch goes back to the source, logged in by User ID
    sandbox_env.sandbox.deliver("target", mb.address, imap_view.message("dopo lo switch", "arrivata su InfoCert"))
    back = copy_mailboxes(plan, [mb], direction="reverse").mailboxes[0]
    assert back.verified and back.copied == 1, back.as_row()

    verdict = mailbox_readiness(plan, mb)
    assert verdict.ready and verdict.row()["target_login"] == mb.target_login, verdict.row()
    assert canary_login(plan, mb).ok


def test_master_user_mode_names_the_member_by_its_login(sandbox_env, member_with_user_id, plan_for) -> None:
    mb = member_with_user_id(4)
    report = copy_mailboxes(plan_for(master_side="target"), [mb]).mailboxes[0]
    assert report.verified and report.copied == 4, report.as_row()
