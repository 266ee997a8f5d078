"""Issue 16 (1): the TTL pre-flight waits the MX TTL the zone actually served, not the plan's ``ttl.normal``.

On the DNS sandbox (BIND primary + secondary, unbound): the zone serves 86400 s while the plan says 10 s.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from checks.dns import ttl_preflight
from cutover.dnschange import read_journal, set_ttl, ttl_low_since
from cutover.ttl import record_served_ttl, ttl_to_wait

SERVED = 86400


def test_preflight_waits_the_served_ttl_recorded_at_readiness_and_lowering(zone) -> None:
    plan = zone.plan
    zone.set_mx(plan.source.mx_set, SERVED)  # what a zone nobody touched for years serves
    assert plan.dns.ttl.normal < SERVED

    measured = record_served_ttl(plan, "readiness run test")           # T-14: readiness measures it
    assert measured.ttl == SERVED
    assert ttl_to_wait(plan).seconds == SERVED

    lowered = set_ttl(plan, "cutover")                                  # T-2: `dns ttl --lower`
    assert lowered.changed and zone.served()[1] == plan.dns.ttl.cutover
    assert read_journal(plan)[-1]["ttl_before"] == SERVED
    since = ttl_low_since(plan)
    assert since is not None

    # Past the configured TTL but not the served one: caches may still hold the old MX for a day.
    early = ttl_preflight(plan, now=since + timedelta(seconds=plan.dns.ttl.normal + 60))
    assert not early.ok and early.reason == "ttl-lowered-too-recently", early.as_row()
    assert f"{SERVED}s" in early.expected and "actually served" in early.expected
    late = ttl_preflight(plan, now=since + timedelta(seconds=SERVED + 1))
    assert late.ok, late.as_row()


def test_the_ttl_before_lowering_counts_without_a_readiness_measure(zone) -> None:
    plan = zone.plan
    zone.set_mx(plan.source.mx_set, 3 * plan.dns.ttl.normal)
    set_ttl(plan, "cutover")
    since = ttl_low_since(plan)
    assert ttl_to_wait(plan).seconds == 3 * plan.dns.ttl.normal
    assert not ttl_preflight(plan, now=since + timedelta(seconds=2 * plan.dns.ttl.normal)).ok
    assert ttl_preflight(plan, now=since + timedelta(seconds=3 * plan.dns.ttl.normal + 1)).ok


def test_a_restore_forgets_what_was_served_before_and_an_unreachable_primary_is_an_answer(zone) -> None:
    plan = zone.plan
    zone.set_mx(plan.source.mx_set, SERVED)
    record_served_ttl(plan, "readiness")
    set_ttl(plan, "normal")                                             # back to the plan's value
    assert ttl_to_wait(plan).seconds == plan.dns.ttl.normal
    dead = plan.model_copy(update={"dns": plan.dns.model_copy(update={
        "primary": plan.dns.primary.model_copy(update={"port": 9}), "timeout_s": 0.3})})
    missing = record_served_ttl(dead, "readiness")
    assert missing.ttl is None and ("did not answer" in missing.error or "unreachable" in missing.error), missing


def test_after_go_the_low_ttl_is_kept_until_restore_after_then_restored(zone) -> None:
    from datetime import timezone

    from cutover.ttl import keep_low_after_go, restore_due

    plan = zone.plan
    set_ttl(plan, "cutover")
    go = datetime(2026, 12, 13, 7, 0, tzinfo=timezone.utc)
    due = keep_low_after_go(plan, now=go)
    assert due == go + timedelta(days=7) and restore_due(plan) == due
    assert zone.served()[1] == plan.dns.ttl.cutover                    # still low: hypercare
    set_ttl(plan, "normal")                                             # T+7: `dns ttl --restore`
    assert zone.served()[1] == plan.dns.ttl.normal and restore_due(plan) is None
    at_go = plan.model_copy(update={"dns": plan.dns.model_copy(update={
        "ttl": plan.dns.ttl.model_copy(update={"restore_after": timedelta(0)})})})
    assert keep_low_after_go(at_go) is None                             # 0: the cutover restores it at GO


def test_the_cli_lowers_from_the_served_ttl_and_warns_on_a_restore_before_hypercare_ends(zone) -> None:
    """The runbook's commands: `dns ttl --lower` (T-2) journals what was served before, and `dns ttl --restore`
    (T+7) warns when run before ``ttl.restore_after`` is up, then restores all the same."""
    from datetime import timezone

    from typer.testing import CliRunner

    from cutover.cli import app
    from cutover.ttl import keep_low_after_go, restore_due

    plan, path = zone.plan, str(zone.environment.plan)
    zone.set_mx(plan.source.mx_set, SERVED)
    lowered = CliRunner().invoke(app, ["dns", "ttl", "--lower", "--plan", path], env={"COLUMNS": "200"})
    assert lowered.exit_code == 0, lowered.output
    assert zone.served()[1] == plan.dns.ttl.cutover
    assert ttl_to_wait(plan).seconds == SERVED                         # the pre-flight will wait what was served

    keep_low_after_go(plan)                                             # what a GO journals
    assert restore_due(plan) > datetime.now(timezone.utc) + timedelta(days=6)
    early = CliRunner().invoke(app, ["dns", "ttl", "--restore", "--plan", path], env={"COLUMNS": "200"})
    assert early.exit_code == 0, early.output
    assert "restoring before the end of hypercare" in early.output and "ttl.restore_after" in early.output
    assert zone.served()[1] == plan.dns.ttl.normal and restore_due(plan) is None
    again = CliRunner().invoke(app, ["dns", "ttl", "--restore", "--plan", path], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "hypercare" not in again.output, again.output
