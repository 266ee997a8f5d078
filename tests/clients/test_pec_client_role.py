"""The pec_client role (playbooks/pec_clients.yml) on the sandbox's real clients: the Postfix relay and the reader.

In order, on one sandbox (the clients start on the source, as before the day): check mode shows the change and makes
none; the switch to the target is proven by the bytes the target received (the relay's test message in the
account's INBOX) and by the reader's own poll; a second run changes nothing; a client whose login the target refuses
fails its check and the gate says NO-GO; the switch back (the rollback) restores every client. Secrets: mode-600
files only, never in the runner's artifacts, logs or the reports.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from checks.gates import Verdict, clients_gate
from cutover.ansible_bridge import private_data_dir
from cutover.clients import ClientsChange, switch_clients
from cutover.errors import ClientsError
from cutover.plan import Gates

ACCOUNT = "protocollo@pec.fnofi.it"
INFOCERT_USER = "ic-0012345"


def _files(env) -> dict[str, Path]:
    clients = env.sandbox.clients_dir
    return {"config": clients / "protocollo" / "pec.ini", "password": clients / "protocollo" / "pec.ini.secret",
            "main.cf": clients / "relay" / "main.cf", "sasl": clients / "relay" / "sasl_passwd",
            "sasl.db": clients / "relay" / "sasl_passwd.db"}


def _digests(env) -> dict[str, str]:
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in _files(env).items()}


def _postconf(env, key: str) -> str:
    return subprocess.run(["postconf", "-c", str(env.sandbox.relay_dir), "-h", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def _by_kind(change: ClientsChange) -> dict[str, object]:
    return {c.kind: c for c in change.clients}


def _in_inbox(env, side: str, message_id: str) -> int:
    client = env.sandbox.admin_session(side, ACCOUNT)
    try:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["HEADER", "Message-ID", message_id]))
    finally:
        client.logout()


def _assert_on(env, side: str, change: ClientsChange) -> None:
    """Every client uses ``side`` and was proven working there, by what the servers saw."""
    plan = env.plan
    provider = plan.provider(side)
    assert change.ok, change.markdown()
    relay, reader = _by_kind(change)["relay"], _by_kind(change)["reader"]
    assert relay.verified and reader.verified
    # The relay handed its test message to this provider's submission service, which queued it ...
    assert relay.provider_queue_id.startswith(provider.name.upper()), relay.evidence
    assert f"relayed to localhost[127.0.0.1]:{provider.smtp.port}" in relay.evidence
    # ... and the provider delivered it: the bytes are in the account's INBOX there.
    assert _in_inbox(env, side, relay.message_id) == 1
    assert _postconf(env, "relayhost") == f"[localhost]:{provider.smtp.port}"
    # The reader itself (the running service, not only the probe) polled this provider with its login.
    status = json.loads(env.sandbox.reader_status.read_text())
    assert status["ok"] and status["server"] == f"127.0.0.1:{provider.imap.port}"
    assert status["user"] == (INFOCERT_USER if side == "target" else ACCOUNT)
    assert status["config_sha256"] == hashlib.sha256(_files(env)["config"].read_bytes()).hexdigest()
    for key in ("config", "password", "sasl", "sasl.db"):  # logins and secrets readable by their owner only
        assert stat.S_IMODE(_files(env)[key].stat().st_mode) == 0o600, key


def test_check_mode_then_switch_idempotence_failure_and_rollback(clients_env, caplog, capfd) -> None:
    env = clients_env
    caplog.set_level("DEBUG")
    plan = env.plan
    target_port = plan.target.smtp.port
    before = _digests(env)

    # 1. Check mode: reachable, what would change, nothing changed, nothing verified.
    preview = switch_clients(plan, "target", dry_run=True)
    assert preview.dry_run and preview.ok and preview.changed and not preview.unreachable
    assert {c.client: (c.changed, c.verified) for c in preview.clients} == {
        "protocollo": (True, None), "postfix relay": (True, None)}
    diff = preview.diff.splitlines()
    for line in (f"-relayhost = [localhost]:{plan.source.smtp.port}", f"+relayhost = [localhost]:{target_port}",
                 f"+port = {plan.target.imap.port}", f"-user = {ACCOUNT}", f"+user = {INFOCERT_USER}"):
        assert line in diff, line
    assert any("password changed (not shown)" in line for line in diff)
    assert _digests(env) == before
    assert preview.summary() == "check mode: 2 clients reached, 2 would change to infocert"

    # 2. The switch, proven on the target.
    switched = switch_clients(plan, "target")
    _assert_on(env, "target", switched)
    assert switched.changed and switched.summary() == "2/2 clients switched to infocert and working"
    assert clients_gate(switched.results(), Gates()).verdict is Verdict.GO

    # 3. Idempotent: nothing changes, still proven.
    again = switch_clients(plan, "target")
    assert again.ok and not again.changed and again.diff == ""
    assert all(c.verified for c in again.clients)

    # 4. The target refuses the account's login (a password changed there): both clients fail their check.
    good_password = env.sandbox.client_login("target", "protocollo")[1]
    env.sandbox.set_password("target", INFOCERT_USER, "changed-by-the-member-42")
    try:
        failed = switch_clients(plan, "target")
        assert not failed.ok and failed.working == 0
        relay, reader = _by_kind(failed)["relay"], _by_kind(failed)["reader"]
        assert "SASL authentication failed" in relay.error and "535" in relay.error
        assert f"login refused by 127.0.0.1:{plan.target.imap.port} as {INFOCERT_USER}" in reader.error
        decision = clients_gate(failed.results(), Gates())
        assert decision.verdict is Verdict.NO_GO
        assert decision.failed_rules[0].rule == "every PEC client switched and working"
        assert "0/2 ok" in decision.failed_rules[0].observed

        # 5. The rollback: the same role with the source provider restores every client.
        back = switch_clients(plan, "source")
        _assert_on(env, "source", back)
        assert back.changed
    finally:
        env.sandbox.set_password("target", INFOCERT_USER, good_password)

    # Secrets: in mode-600 files only; never in the runner's artifacts, the reports, the logs or the output.
    reports = "".join(c.markdown() + json.dumps(c.to_dict()) for c in (preview, switched, again, failed, back))
    artifacts = [p for p in private_data_dir(plan).rglob("*") if p.is_file()]
    assert any(p.name == "command" for p in artifacts)
    out, err = capfd.readouterr()
    for secret in env.passwords():
        assert secret not in reports and secret not in caplog.text and secret not in out + err
        for path in artifacts:
            assert secret.encode() not in path.read_bytes(), f"a client password in {path}"


def test_a_missing_secret_is_one_clear_error_before_anything_runs(clients_env, tmp_path) -> None:
    plan = clients_env.plan
    account = plan.clients.accounts["protocollo"]
    gone = account.model_copy(update={"target": account.target.model_copy(update={"secret": "env:PEC_TEST_NO_SUCH"})})
    broken = plan.model_copy(update={"clients": plan.clients.model_copy(update={"accounts": {"protocollo": gone}})})
    with pytest.raises(ClientsError) as err:
        switch_clients(broken, "target")
    assert str(err.value).startswith("clients.accounts.protocollo.target.secret: ")
    assert "PEC_TEST_NO_SUCH" in str(err.value)


def test_check_mode_reaches_a_new_relay_and_reports_an_unreachable_host(clients_env, tmp_path) -> None:
    """Readiness days before: a relay the role never configured (no sasl_passwd yet) is reached and shows the
    change; a host Ansible cannot reach (SSH where nothing listens) is a result, not a crash."""
    plan = clients_env.plan
    fresh = tmp_path / "relay"
    fresh.mkdir()
    (fresh / "main.cf").write_text("compatibility_level = 3.6\nrelayhost = [smtps.pec.aruba.it]:465\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"pec_new": {"hosts": {
        "nuovo-relay": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                        "pec_client_relay": {"account": "protocollo", "config_directory": str(fresh),
                                             "listen": "127.0.0.1:1", "maillog": str(fresh / "maillog")}},
        "archivio": {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh",
                     "ansible_user": "nobody",
                     "pec_client_apps": [{"name": "archivio", "account": "protocollo",
                                          "config": str(tmp_path / "pec.ini")}]}}}}}}))
    new = plan.model_copy(update={"dns": plan.dns.model_copy(update={"ansible_inventory": inventory}),
                                  "clients": plan.clients.model_copy(update={"group": "pec_new"})})

    preview = switch_clients(new, "target", dry_run=True)
    [relay] = preview.clients
    assert relay.host == "nuovo-relay" and relay.changed and relay.ok and relay.verified is None
    assert "-relayhost = [smtps.pec.aruba.it]:465" in relay.diff.splitlines()
    assert f"+relayhost = [localhost]:{plan.target.smtp.port}" in relay.diff.splitlines()
    [unreachable] = [r for r in preview.results() if not r.ok]
    assert unreachable.target == "archivio" and unreachable.reason == "unreachable"
    assert not preview.ok and preview.summary().endswith("; 1 host(s) NOT reachable")
    assert sorted(p.name for p in fresh.iterdir()) == ["main.cf"]  # nothing written, not even the secret
    assert not (tmp_path / "pec.ini").exists()
