"""SMTP submission logins against the sandbox's real Dovecot submission service on the target ("infocert"):
STARTTLS with the sandbox CA's certificate, AUTH PLAIN against the same passwd-file as IMAP. What the server saw
is read from its own log (a login line per canary, none when TLS failed)."""

from __future__ import annotations

import socket

from checks.smtp import smtp_logins


def server_logins(sandbox_env) -> list[str]:
    """The submission logins the target Dovecot logged so far ("Login: user=<...>" lines)."""
    log = sandbox_env.sandbox.dovecots["infocert"].paths.log
    return [line for line in log.read_text(errors="replace").splitlines() if "submission-login: Info: Login: user=<" in line]


def with_smtp(plan, **changes):
    return plan.model_copy(update={"target": plan.target.model_copy(update=changes)})


def test_no_smtp_in_the_plan_means_no_results(sandbox_env) -> None:
    assert smtp_logins(with_smtp(sandbox_env.plan, smtp=None), sandbox_env.inventory) == []


def test_auth_over_starttls_passes_and_sends_nothing(sandbox_env) -> None:
    plan = sandbox_env.plan
    assert plan.target.smtp.tls == "starttls" and plan.target.smtp.port == sandbox_env.environment.ports.infocert_submission
    before = len(server_logins(sandbox_env))
    results = smtp_logins(plan, sandbox_env.inventory)
    canaries = [m.address for m in sandbox_env.inventory.canaries]
    assert [r.target for r in results] == canaries
    assert all(r.ok for r in results), [r.as_row() for r in results]
    assert "STARTTLS" in results[0].expected
    new = server_logins(sandbox_env)[before:]
    # InfoCert-style user IDs, not addresses (Dovecot logs user names lowercased)
    logins = [m.login("target").lower() for m in sandbox_env.inventory.canaries]
    assert sorted(a for a in logins for line in new if f"user=<{a}>" in line and "method=PLAIN" in line and "TLS" in line) \
        == sorted(logins)


def test_wrong_password_is_an_auth_failure_and_not_shown(sandbox_env, tools) -> None:
    box, canaries = sandbox_env.sandbox, sandbox_env.inventory.canaries
    broken = canaries[0].address
    box.set_password("target", broken, "changed-by-the-member-on-infocert")  # the server's password, not ours
    try:
        results = smtp_logins(sandbox_env.plan, sandbox_env.inventory)
    finally:
        box.ensure_users(sandbox_env.inventory.mailboxes)
    by_address = {r.target: r for r in results}
    assert (by_address[broken].ok, by_address[broken].reason) == (False, "auth-failure")
    assert "535" in by_address[broken].observed and "2FA" in by_address[broken].detail
    assert all(r.ok for a, r in by_address.items() if a != broken)
    text = repr(results) + "".join(str(r.as_row()) for r in results)
    assert not any(secret in text for secret in tools.secret_values(sandbox_env.plan))
    assert all(r.ok for r in smtp_logins(sandbox_env.plan, sandbox_env.inventory))  # restored


def test_untrusted_certificate_is_a_tls_failure_before_any_credential(sandbox_env) -> None:
    # The system CA store does not trust the sandbox CA: verification must fail, never be skipped.
    before = len(server_logins(sandbox_env))
    results = smtp_logins(with_smtp(sandbox_env.plan, ca_bundle=None), sandbox_env.inventory)
    assert results and all(r.reason == "tls-failure" for r in results), [r.as_row() for r in results]
    assert "certificate" in results[0].observed
    assert server_logins(sandbox_env)[before:] == []  # no credentials went to a server we could not verify


def test_closed_port_is_refused(sandbox_env) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        smtp = sandbox_env.plan.target.smtp.model_copy(update={"port": port})
        results = smtp_logins(with_smtp(sandbox_env.plan, smtp=smtp), sandbox_env.inventory)
    assert results and all(r.reason == "refused" for r in results)
