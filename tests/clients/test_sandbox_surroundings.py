"""The sandbox's real parts around the mailboxes: each provider's submission service (Dovecot submission over
implicit TLS, verified) relaying to the sandbox MTA, which delivers by LMTP into the mailbox; the clients' Postfix
relay as an instance of its own; the reader as a sandbox service."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest

from cutover.sandbox._process import pid_matches

ACCOUNT = "protocollo@pec.fnofi.it"


def _message(marker: str) -> bytes:
    return (f"From: {ACCOUNT}\r\nTo: {ACCOUNT}\r\nSubject: submission test\r\nMessage-ID: {marker}\r\n\r\n"
            "corpo del messaggio\r\n").encode()


def test_each_providers_submission_takes_its_login_and_delivers_into_the_mailbox(clients_env) -> None:
    env = clients_env
    context = ssl.create_default_context(cafile=str(env.sandbox.ca_file))  # verified: localhost is in the cert
    for side, login in (("source", ACCOUNT), ("target", "ic-0012345")):
        provider = env.plan.provider(side)
        user, password = env.sandbox.client_login(side, "protocollo")
        assert user == login
        marker = f"<{uuid.uuid4().hex}@test>"
        with smtplib.SMTP_SSL(provider.smtp.host, provider.smtp.port, context=context, timeout=30) as smtp:
            smtp.login(user, password)
            smtp.mail(ACCOUNT)
            smtp.rcpt(ACCOUNT)
            code, reply = smtp.data(_message(marker))
        assert code == 250 and reply.decode().startswith(f"2.0.0 Ok: queued as {provider.name.upper()}")
        client = env.sandbox.admin_session(side, ACCOUNT)
        try:
            client.select_folder("INBOX", readonly=True)
            [uid] = client.search(["HEADER", "Message-ID", marker])
            body = client.fetch([uid], ["BODY.PEEK[TEXT]"])[uid][b"BODY[TEXT]"]
        finally:
            client.logout()
        assert body == b"corpo del messaggio\r\n"
    # The other provider's password is refused: the login is per provider (once: a refusal costs seconds).
    with smtplib.SMTP_SSL(provider.smtp.host, provider.smtp.port, context=context, timeout=30) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(user, env.sandbox.client_login("source", "protocollo")[1])


def test_the_relay_is_a_postfix_instance_of_its_own(clients_env) -> None:
    env = clients_env
    relay = env.sandbox.relay_dir
    [status] = env.sandbox.status(["relay"])
    assert status.running and status.port == env.plan.sandbox.relay_port
    assert pid_matches(status.pid, "/usr/lib/postfix/sbin/master", relay)
    values = subprocess.run(["postconf", "-c", str(relay), "-h", "inet_interfaces", "queue_directory",
                             "maillog_file"], capture_output=True, text=True, check=True).stdout.split()
    assert values == ["127.0.0.1", str(relay / "queue"), str(relay / "maillog")]
    system = Path("/etc/postfix/main.cf")  # the system's Postfix is never configured by the sandbox
    assert not system.exists() or str(env.sandbox.state_dir) not in system.read_text()
    [reader] = env.sandbox.status(["reader"])
    assert reader.running and reader.port is None
