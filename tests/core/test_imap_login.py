"""Logins through cutover.imap against the sandbox's real Dovecot: passwords with non-ASCII characters work,
and a failed login never shows any part of the password."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutover.errors import AuthFailed
from cutover.imap import session

ITALIAN_PASSWORD = "Perché-è-così-àù-2026"


def test_non_ascii_password_logs_in(sandbox_env):
    """The member's own session opens with the UTF-8 password; the old one and an ASCII-folded one are refused."""
    import dataclasses
    import uuid

    from cutover.secrets import SecretRef

    box, plan = sandbox_env.sandbox, sandbox_env.plan
    mailbox = sandbox_env.inventory.mailboxes[-1]
    secret_file = Path(mailbox.target_secret.target)
    old = secret_file.read_text().strip()
    marker = f"<nonascii-{uuid.uuid4().hex}@pec.test>"
    box.deliver("target", mailbox.address, f"From: a@pec.it\r\nMessage-ID: {marker}\r\nSubject: x\r\n\r\nx\r\n".encode())
    box.set_password("target", mailbox.address, ITALIAN_PASSWORD, update_secret=True)
    try:
        with session(plan, "target", mailbox) as client:
            exists = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
            own = client.search(["HEADER", "Message-ID", marker])
        admin = box.admin_session("target", mailbox.address)
        try:
            assert exists == admin.select_folder("INBOX", readonly=True)[b"EXISTS"] >= 1  # this member's INBOX
        finally:
            admin.logout()
        assert len(own) == 1
        for wrong in (old, "Perche-e-cosi-au-2026"):  # the server now holds exactly the UTF-8 password
            other = secret_file.with_name(secret_file.name + ".wrong")
            other.write_text(wrong)
            other.chmod(0o600)
            with pytest.raises(AuthFailed):
                with session(plan, "target", dataclasses.replace(mailbox, target_secret=SecretRef("file", str(other)))):
                    pass
    finally:
        box.set_password("target", mailbox.address, old, update_secret=True)
        secret_file.with_name(secret_file.name + ".wrong").unlink(missing_ok=True)


def test_wrong_non_ascii_password_is_auth_failure_without_the_password(sandbox_env):
    box, plan = sandbox_env.sandbox, sandbox_env.plan
    mailbox = sandbox_env.inventory.mailboxes[-1]
    secret_file = Path(mailbox.target_secret.target)
    old = secret_file.read_text().strip()
    secret_file.write_text(ITALIAN_PASSWORD)  # the inventory's secret no longer matches the server
    try:
        with pytest.raises(AuthFailed) as exc:
            with session(plan, "target", mailbox):
                pass
        text = str(exc.value)
        assert "2FA" not in text and "User ID" in text and mailbox.address in text  # 2FA exists on the source only
        assert not any(ch in text for ch in "èàùé") and ITALIAN_PASSWORD not in text
    finally:
        secret_file.write_text(old)
