"""The sandbox Dovecots answer over verified TLS, hold the seeded mail, and honour master users and quotas."""

from __future__ import annotations

import ssl

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from cutover.sandbox import ADMIN_USER


def _ctx(cafile) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def _connect(sandbox_env, side: str, cafile=None) -> IMAPClient:
    provider = sandbox_env.plan.provider(side)
    return IMAPClient(provider.imap.host, port=provider.imap.port, ssl=True,
                      ssl_context=_ctx(cafile or provider.ca_bundle), timeout=10)


@pytest.mark.parametrize("side", ["source", "target"])
def test_member_logs_in_over_verified_tls(sandbox_env, side: str) -> None:
    mailbox = sandbox_env.inventory.mailboxes[0]
    client = _connect(sandbox_env, side)
    try:
        assert client.login(mailbox.login(side), mailbox.password(side).reveal()) == b"Logged in"
        caps = client.capabilities()
        for cap in (b"QUOTA", b"UIDPLUS", b"MULTIAPPEND", b"LITERAL+"):
            assert cap in caps
    finally:
        client.logout()


def test_login_with_a_foreign_ca_fails(sandbox_env, tmp_path) -> None:
    from cutover.sandbox import SandboxCA

    other = SandboxCA(tmp_path / "other-ca")
    other.ensure()
    with pytest.raises(ssl.SSLCertVerificationError):
        _connect(sandbox_env, "source", cafile=other.ca_cert_path)


def test_wrong_password_is_refused(sandbox_env) -> None:
    client = _connect(sandbox_env, "source")
    try:
        with pytest.raises(LoginError):
            client.login(sandbox_env.inventory.mailboxes[0].address, "not-the-password")
    finally:
        client.shutdown()


def test_seeded_counts_per_folder_match_the_report(sandbox_env) -> None:
    for mailbox in sandbox_env.inventory.mailboxes[:3]:
        seeded = sandbox_env.seed_report.get(mailbox.address)
        assert seeded.messages == 30 and seeded.bytes > 3_000_000  # one big attachment each
        client = _connect(sandbox_env, "source")
        try:
            client.login(mailbox.address, mailbox.password("source").reveal())
            names = {name for _flags, _sep, name in client.list_folders()}
            for folder, count in seeded.folders.items():
                assert folder in names
                assert client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] == count, folder
        finally:
            client.logout()


def test_seeding_twice_does_not_duplicate(sandbox_env) -> None:
    from cutover.sandbox import seed

    again = seed(sandbox_env.plan, sandbox_env.inventory.mailboxes[:2], 30, big_attachments=1,
                 sandbox=sandbox_env.sandbox)
    assert all(m.skipped for m in again.mailboxes)
    mailbox = sandbox_env.inventory.mailboxes[0]
    client = _connect(sandbox_env, "source")
    try:
        client.login(mailbox.address, mailbox.password("source").reveal())
        assert client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == \
            sandbox_env.seed_report.get(mailbox.address).folders["INBOX"]
    finally:
        client.logout()


def test_master_user_logs_in_as_member_with_sasl_plain_authzid(sandbox_env) -> None:
    mailbox = sandbox_env.inventory.mailboxes[1]
    admin_secret = (sandbox_env.sandbox.state_dir / "secrets" / "sandbox-admin").read_text().strip()
    client = _connect(sandbox_env, "source")
    try:
        client.plain_login(ADMIN_USER, admin_secret, authorization_identity=mailbox.address)
        assert client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == \
            sandbox_env.seed_report.get(mailbox.address).folders["INBOX"]
    finally:
        client.logout()
    client = _connect(sandbox_env, "source")
    try:
        with pytest.raises(LoginError):
            client.plain_login(ADMIN_USER, "wrong", authorization_identity=mailbox.address)
    finally:
        client.shutdown()


def test_tiny_quota_is_visible_and_refuses_appends(sandbox_env) -> None:
    box = sandbox_env.sandbox
    mailbox = sandbox_env.inventory.mailboxes[2]
    box.set_quota("target", mailbox.address, 50 * 1024)
    try:
        client = _connect(sandbox_env, "target")
        try:
            client.login(mailbox.login("target"), mailbox.password("target").reveal())
            _roots, quotas = client.get_quota_root("INBOX")
            assert [(q.resource, q.limit) for q in quotas] == [("STORAGE", 50)]  # KiB
            with pytest.raises(IMAPClientError, match="(?i)quota"):
                client.append("INBOX", b"Subject: big\r\n\r\n" + b"x" * 80_000 + b"\r\n")
        finally:
            client.logout()
    finally:
        box.set_quota("target", mailbox.address, None)


def test_password_change_takes_effect_without_restart(sandbox_env) -> None:
    box = sandbox_env.sandbox
    mailbox = sandbox_env.inventory.mailboxes[3]
    old = mailbox.password("target").reveal()
    box.set_password("target", mailbox.address, "changed-mid-migration")
    try:
        client = _connect(sandbox_env, "target")
        try:
            with pytest.raises(LoginError):
                client.login(mailbox.login("target"), old)
        finally:
            client.shutdown()
        client = _connect(sandbox_env, "target")
        client.login(mailbox.login("target"), "changed-mid-migration")
        client.logout()
    finally:
        box.set_password("target", mailbox.address, old)


def test_deliver_appends_new_mail_with_flags_and_date(sandbox_env) -> None:
    import datetime as dt

    mailbox = sandbox_env.inventory.mailboxes[4]
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    raw = b"Subject: arrivata durante il cutover\r\nFrom: a@pec.example.it\r\n\r\nciao\r\n"
    uid = sandbox_env.sandbox.deliver("target", mailbox.address, raw, folder="Arrivi", flags=["\\Flagged"],
                                      internaldate=when)
    assert uid is not None
    client = _connect(sandbox_env, "target")
    try:
        client.login(mailbox.login("target"), mailbox.password("target").reveal())
        client.select_folder("Arrivi", readonly=True)
        data = client.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
        assert data[b"BODY[]"] == raw
        assert b"\\Flagged" in data[b"FLAGS"]
        assert data[b"INTERNALDATE"].astimezone(dt.timezone.utc) == when
    finally:
        client.logout()


def test_removed_user_cannot_log_in(sandbox_env) -> None:
    box = sandbox_env.sandbox
    mailbox = sandbox_env.inventory.mailboxes[7]
    assert box.remove_user("target", mailbox.address)
    try:
        client = _connect(sandbox_env, "target")
        try:
            with pytest.raises(LoginError):
                client.login(mailbox.login("target"), mailbox.password("target").reveal())
        finally:
            client.shutdown()
    finally:
        box.ensure_users([mailbox])


def test_plan_master_user_gets_a_secret_and_logs_in(tmp_path_factory, sandbox_starter) -> None:
    def master_mode(text: str) -> str:
        marker = "  auth: {mode: password}\n  ca_bundle: .sandbox/ca/ca.pem\n  max_connections: 8\n\ndns:"
        assert marker in text
        return text.replace(marker, "  auth: {mode: master, master_user: legalmail-admin, "
                                    "master_secret: \"file:.sandbox/secrets/infocert-master\"}\n"
                                    "  ca_bundle: .sandbox/ca/ca.pem\n  max_connections: 8\n\ndns:")

    env, plan, box = sandbox_starter(tmp_path_factory.mktemp("master"), 1, edit_plan=master_mode,
                                     services=["infocert"])
    try:
        from cutover.inventory import load_inventory

        mailbox = load_inventory(plan).mailboxes[0]
        box.ensure_users([mailbox])
        secret_file = env.state_dir / "secrets" / "infocert-master"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        client = IMAPClient("127.0.0.1", port=plan.target.imap.port, ssl=True, ssl_context=_ctx(box.ca_file))
        try:
            client.plain_login("legalmail-admin", plan.secret(plan.target.auth.master_secret).reveal(),
                               authorization_identity=mailbox.login("target"))
            assert client.folder_exists("INBOX")
        finally:
            client.logout()
        users_file = (env.state_dir / "dovecot" / "infocert" / "users").read_text()
        assert mailbox.password("target").reveal() not in users_file and "{SSHA512}" in users_file
    finally:
        box.down()
