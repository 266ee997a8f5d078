"""Canary IMAP logins on the sandbox's target Dovecot (verified TLS), and the endpoint pre-flight."""

from __future__ import annotations

import socket
import threading

from checks.imap import canary_logins, endpoints_reachable
from cutover.results import CheckResult


def target_inbox_count(sandbox_env, address: str) -> int:
    client = sandbox_env.sandbox.admin_session("target", address)
    try:
        return int(client.select_folder("INBOX", readonly=True)[b"EXISTS"])
    finally:
        client.logout()


def test_canaries_log_in_and_see_the_target_inbox(sandbox_env) -> None:
    canaries = sandbox_env.inventory.canaries
    assert len(canaries) >= 2
    results = canary_logins(sandbox_env.plan, sandbox_env.inventory)
    assert [r.target for r in results] == [c.address for c in canaries]
    assert all(r.ok for r in results), [r.as_row() for r in results]
    for r in results:
        assert r.data["folders"] >= 1
        assert r.data["inbox"] == target_inbox_count(sandbox_env, r.target)


def test_one_canary_with_a_wrong_password_is_an_auth_failure_others_pass(sandbox_env, tools) -> None:
    box, canaries = sandbox_env.sandbox, sandbox_env.inventory.canaries
    broken = canaries[0].address
    box.set_password("target", broken, "not-the-password-in-the-inventory")
    try:
        results = canary_logins(sandbox_env.plan, sandbox_env.inventory)
    finally:
            box.ensure_users(sandbox_env.inventory.mailboxes)
    by_address = {r.target: r for r in results}
    assert not by_address[broken].ok and by_address[broken].reason == "auth-failure"
    assert "2FA" not in by_address[broken].detail and "User ID" in by_address[broken].detail  # target: no 2FA hint
    assert all(r.ok for a, r in by_address.items() if a != broken)
    text = repr(results) + "".join(str(r.as_row()) for r in results)
    assert not any(secret in text for secret in tools.secret_values(sandbox_env.plan))
    assert all(r.ok for r in canary_logins(sandbox_env.plan, sandbox_env.inventory))  # restored


def test_inbox_is_compared_with_the_ledger(sandbox_env, tmp_path) -> None:
    """Canaries of this test's own, copied with the real engine into a real SQLite ledger; then a verified
    message disappears from one target INBOX and the canary check says so."""
    import uuid

    from cutover.inventory import Inventory, Mailbox
    from cutover.ledger import Ledger
    from cutover.mailsync import copy_mailboxes
    from cutover.sandbox import seed
    from cutover.secrets import SecretRef

    box, plan = sandbox_env.sandbox, sandbox_env.plan
    canaries = []
    for i in range(2):
        local = f"canary{uuid.uuid4().hex[:8]}"
        canaries.append(Mailbox(f"{local}@{plan.domain}", SecretRef("file", str(tmp_path / "aruba" / local)),
                                SecretRef("file", str(tmp_path / "infocert" / local)), canary=True))
    box.ensure_users(canaries)
    seed(plan, canaries, 6, big_attachments=0, sandbox=box)
    plan = plan.model_copy(update={"ledger": tmp_path / "ledger.sqlite"})
    assert copy_mailboxes(plan, canaries).ok
    ledger = Ledger(plan.ledger)
    inventory = Inventory(path=tmp_path / "mailboxes.csv", mailboxes=tuple(canaries))
    try:
        results = canary_logins(plan, inventory, ledger=ledger)
        assert all(r.ok for r in results), [r.as_row() for r in results]
        assert [r.data["inbox"] for r in results] == [ledger.verified_count(m.address, "INBOX") for m in canaries]
        assert all(r.data["inbox"] >= 1 for r in results)

        client = box.admin_session("target", canaries[0].address)  # a verified message vanishes from the target
        try:
            client.select_folder("INBOX")
            client.delete_messages(client.search("ALL")[:1])
            client.expunge()
        finally:
            client.logout()
        by_address = {r.target: r for r in canary_logins(plan, inventory, ledger=ledger)}
        assert not by_address[canaries[0].address].ok and by_address[canaries[0].address].reason == "mismatch"
        assert "1 verified message(s) not in the target INBOX" in by_address[canaries[0].address].detail
        assert by_address[canaries[1].address].ok
    finally:
        ledger.close()


def test_target_down_is_refused(sandbox_env, tools) -> None:
    try:
        sandbox_env.sandbox.stop_service("infocert")
        results = canary_logins(sandbox_env.plan, sandbox_env.inventory)
        pre = endpoints_reachable(sandbox_env.plan)
    finally:
        tools.start_service(sandbox_env.sandbox, "infocert")
    assert results and all(r.reason == "refused" for r in results)
    # the target's IMAP and SMTP submission are the same Dovecot: both refused
    assert [(r.target.split()[0], r.ok, r.reason) for r in pre] == [("aruba", True, ""), ("infocert", False, "refused"),
                                                                    ("infocert", False, "refused")]
    assert all(r.ok for r in endpoints_reachable(sandbox_env.plan))


def test_untrusted_certificate_is_a_tls_failure(sandbox_env) -> None:
    # The system CA store does not trust the sandbox CA: verification must fail, never be skipped.
    plan = sandbox_env.plan
    plan = plan.model_copy(update={"target": plan.target.model_copy(update={"ca_bundle": None})})
    results = canary_logins(plan, sandbox_env.inventory)
    assert results and all(r.reason == "tls-failure" for r in results)
    assert "certificate" in results[0].observed


def test_server_that_never_answers_is_a_timeout(sandbox_env) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        stop = threading.Event()
        accepted: list[socket.socket] = []

        def accept() -> None:  # accept and say nothing
            silent.settimeout(0.2)
            while not stop.is_set():
                try:
                    accepted.append(silent.accept()[0])
                except OSError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            plan = sandbox_env.plan
            imap = plan.target.imap.model_copy(update={"port": silent.getsockname()[1]})
            plan = plan.model_copy(update={"target": plan.target.model_copy(update={"imap": imap, "timeout_s": 0.5})})
            results: list[CheckResult] = canary_logins(plan, sandbox_env.inventory)
        finally:
            stop.set()
            thread.join()
            for conn in accepted:
                conn.close()
    assert results and all(r.reason == "timeout" for r in results), [r.as_row() for r in results]
