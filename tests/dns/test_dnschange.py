"""switch_mx / set_ttl through Ansible against the sandbox's real BIND: serials, check mode, idempotence, bad key."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cutover.ansible_bridge import private_data_dir
from cutover.dnschange import read_journal, set_ttl, switch_mx, ttl_low_since
from cutover.errors import DnsChangeError
from cutover.plan import DnsServer


def test_switch_to_target_and_back_moves_the_serial_on_primary_and_secondary(zone) -> None:
    plan = zone.plan
    ns1, ns2 = zone.ns1, zone.ns2
    _, _, start_serial = zone.served(ns1)

    there = switch_mx(plan, "target")
    assert there.ok and there.changed and not there.dry_run
    assert there.serial_before == start_serial and there.serial_after > start_serial
    assert "mx.cert.legalmail.it." in there.records_after and "mx.pec.aruba.it." in there.records_before
    assert "+pec.fnofi.it. 10 IN MX 10 mx.cert.legalmail.it." in there.diff
    zone.wait_secondary()
    for port in (ns1, ns2):
        assert zone.served(port)[0] == plan.target.mx_set
        assert zone.served(port)[2] == there.serial_after

    back = switch_mx(plan, "source")
    assert back.changed and back.serial_before == there.serial_after and back.serial_after > there.serial_after
    zone.wait_secondary()
    for port in (ns1, ns2):
        mx, ttl, serial = zone.served(port)
        assert mx == plan.source.mx_set and serial == back.serial_after
        assert ttl == plan.dns.ttl.normal  # the switch keeps the TTL it found


def test_dry_run_reports_the_change_and_leaves_the_zone_as_served(zone) -> None:
    plan = zone.plan
    before = zone.served()
    change = switch_mx(plan, "target", dry_run=True)
    assert change.dry_run and change.changed
    assert "+pec.fnofi.it. 10 IN MX 10 mx.cert.legalmail.it." in change.diff
    assert "-pec.fnofi.it. 10 IN MX 10 mx.pec.aruba.it." in change.diff
    assert zone.served() == before
    assert change.serial_after == change.serial_before == before[2]

    ttl_change = set_ttl(plan, "cutover", dry_run=True)
    assert ttl_change.changed and zone.served() == before
    assert read_journal(plan) == []  # a dry run is not a TTL change


def test_second_run_reports_no_change_and_keeps_the_serial(zone) -> None:
    plan = zone.plan
    first = switch_mx(plan, "target")
    second = switch_mx(plan, "target")
    assert first.changed and not second.changed
    assert second.serial_before == second.serial_after == first.serial_after
    assert second.diff == ""
    assert not switch_mx(plan, "target", dry_run=True).changed


def test_wrong_tsig_key_fails_with_the_servers_reason_and_zone_unchanged(zone, monkeypatch) -> None:
    plan = zone.plan
    monkeypatch.setenv("PEC_TEST_WRONG_TSIG", "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWtleS0xMjM0NTY=")
    bad = plan.model_copy(update={"dns": plan.dns.model_copy(
        update={"tsig": plan.dns.tsig.model_copy(update={"secret": "env:PEC_TEST_WRONG_TSIG"})})})
    before = zone.served()
    with pytest.raises(DnsChangeError) as err:
        switch_mx(bad, "target")
    text = str(err.value)
    assert "PeerBadSignature" in text and "TSIG key rejected" in text
    assert f"serial {before[2]} (unchanged)" in text
    assert zone.served() == before


def test_unreachable_primary_is_a_clear_error(zone) -> None:
    plan = zone.plan
    dead = DnsServer(name="ns1", host="127.0.0.1", port=1)
    gone = plan.model_copy(update={"dns": plan.dns.model_copy(update={"primary": dead, "timeout_s": 0.3})})
    with pytest.raises(DnsChangeError, match="did not answer|unreachable"):
        switch_mx(gone, "target")


def test_ttl_lower_and_restore_are_served_and_journaled(zone) -> None:
    plan = zone.plan
    lowered = set_ttl(plan, "cutover")
    assert lowered.changed and zone.served()[1] == plan.dns.ttl.cutover
    assert zone.served()[0] == plan.source.mx_set  # values untouched
    since = ttl_low_since(plan)
    assert since is not None and abs((datetime.now(timezone.utc) - since).total_seconds()) < 30
    again = set_ttl(plan, "cutover")
    assert not again.changed and ttl_low_since(plan) == since  # an idempotent rerun does not restart the clock

    restored = set_ttl(plan, "normal")
    assert restored.changed and zone.served()[1] == plan.dns.ttl.normal
    assert ttl_low_since(plan) is None
    assert [(e["level"], e["changed"]) for e in read_journal(plan)] == [("cutover", True), ("cutover", False),
                                                                       ("normal", True)]


def test_tsig_secret_never_lands_in_artifacts_env_or_logs(zone, caplog, capfd, tmp_path, monkeypatch) -> None:
    plan = zone.plan
    secret = plan.secret(plan.dns.tsig.secret).reveal()
    assert len(secret) > 20
    # A temporary directory of this test's own: other sessions' workspaces in /tmp come and go meanwhile.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    caplog.set_level("DEBUG")
    switch_mx(plan, "target", dry_run=True)
    switch_mx(plan, "target")
    set_ttl(plan, "cutover")

    pdd = private_data_dir(plan)
    files = [p for p in pdd.rglob("*") if p.is_file()]
    assert any(p.name == "command" for p in files) and any(p.name == "job_events" or "job_events" in str(p)
                                                           for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"TSIG secret found in {path}"
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err and secret not in caplog.text
    assert secret not in os.environ.values()
    assert list(tmp.iterdir()) == []  # the workspace with the secret vars file is gone


def test_env_secrets_never_land_in_runner_artifacts(zone, monkeypatch) -> None:
    """ansible-runner records the process environment; env: secret references put secrets there."""
    plan = zone.plan
    secret = plan.secret(plan.dns.tsig.secret).reveal()
    member_password = "Memb3r-Password-In-Env-42"
    monkeypatch.setenv("PEC_TEST_TSIG_SECRET", secret)
    monkeypatch.setenv("PEC_SRC_MARIO_ROSSI", member_password)
    env_plan = plan.model_copy(update={"dns": plan.dns.model_copy(update={
        "tsig": plan.dns.tsig.model_copy(update={"secret": "env:PEC_TEST_TSIG_SECRET"})})})

    switch_mx(env_plan, "target")   # a real change, authenticated with the key read from the environment
    switch_mx(env_plan, "source")

    files = [p for p in private_data_dir(plan).rglob("*") if p.is_file()]
    assert any(p.name == "command" for p in files)
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data, f"TSIG secret found in {path}"
        assert member_password.encode() not in data, f"an environment secret found in {path}"
