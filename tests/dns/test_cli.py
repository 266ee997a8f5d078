"""``pec-cutover dns`` against the DNS sandbox: status table, dry-run switch, TTL flags."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from checks.dns import resolver_mx

from cutover.cli import app


def test_status_prints_every_server_and_resolver(zone) -> None:
    # The resolver may still hold another test's target MX for up to the normal TTL.
    deadline = time.monotonic() + 3 * zone.plan.dns.ttl.normal
    while not resolver_mx(zone.plan, "source")[0].ok:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    result = CliRunner().invoke(app, ["dns", "status", "--plan", str(zone.environment.plan), "--expect", "source"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for word in ("ns1", "ns2", "unbound", "authoritative servers agree", "zone unsigned", "all 5 checks ok"):
        assert word in result.output


def test_status_exits_1_when_the_expected_mx_is_not_served(zone) -> None:
    result = CliRunner().invoke(app, ["dns", "status", "--plan", str(zone.environment.plan), "--expect", "target"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "mismatch" in result.output and "serves the source MX" in result.output


def test_switch_dry_run_shows_the_diff_and_changes_nothing(zone) -> None:
    before = zone.served()
    result = CliRunner().invoke(app, ["dns", "switch", "--to", "target", "--dry-run", "--plan",
                                      str(zone.environment.plan)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "+pec.fnofi.it. 10 IN MX 10 mx.cert.legalmail.it." in result.output
    assert zone.served() == before


def test_ttl_needs_exactly_one_direction(zone) -> None:
    from cutover.dnschange import read_journal

    before = zone.served()
    for flags in ([], ["--lower", "--restore"]):
        result = CliRunner().invoke(app, ["dns", "ttl", *flags, "--plan", str(zone.environment.plan)])
        assert result.exit_code == 2, result.output
        assert "give exactly one of --lower or --restore" in result.output, result.output
    assert zone.served() == before and read_journal(zone.plan) == []  # nothing changed, nothing journaled


def test_emergency_switch_back_during_a_cutover_freeze(zone) -> None:
    from cutover import freeze
    from cutover.dnschange import switch_mx

    plan = zone.plan
    switch_mx(plan, "target")
    freeze.acquire(plan, "cutover", "cut-stuck")
    try:
        args = ["dns", "switch", "--to", "source", "--plan", str(zone.environment.plan)]
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 2 and "refused: change freeze held by cutover run cut-stuck" in refused.output
        wrong_way = CliRunner().invoke(app, ["dns", "switch", "--to", "target", "--emergency", "x", "--plan",
                                             str(zone.environment.plan)])
        assert wrong_way.exit_code == 2 and "only switches back to the source" in wrong_way.output

        done = CliRunner().invoke(app, [*args, "--emergency", "Prefect down, InfoCert rejecting mail"])
        assert done.exit_code == 0, done.output
        assert zone.served()[0] == plan.source.mx_set          # the primary serves Aruba's MX again
        held = freeze.current(plan)
        assert held.sticky and "Prefect down" in held.note      # the freeze stays, saying why
        taken = freeze.acquire(plan, "rollback", "rb-after-emergency")  # the rollback flow can take it over
        assert "emergency-dns" in taken.took_over
    finally:
        freeze.marker_path(plan).unlink(missing_ok=True)
