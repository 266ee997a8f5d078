"""The rollback deadline (issue 11, point 7): plan ``rollback_until``, else the MX switch to the target (as the DNS
journal recorded it) + 7 days; after it a rollback needs an override with a reason. Table-driven on a real journal
file; the CLI refuses in one line before any run starts (no server needed for that refusal)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cutover.cli import app, load_plugins
from cutover.dnschange import append_journal, switched_to_target_at
from cutover.errors import PlanError, RollbackDeadlineError
from cutover.plan import load_plan
from cutover.rollback_deadline import check_rollback_deadline, require_rollback_allowed
from cutover.sandbox import write_environment

load_plugins()
NOW = datetime(2026, 12, 20, 12, 0, tzinfo=timezone.utc)


def _plan(tmp_path: Path, extra: str = ""):
    env = write_environment(tmp_path / "env", base_port=29100, mailboxes=1)
    if extra:
        env.plan.write_text(env.plan.read_text() + extra)
    return env.plan, load_plan(env.plan)


def _switch(plan, to: str, when: datetime, changed: bool = True) -> None:
    append_journal(plan, {"action": "switch_mx", "to": to, "provider": plan.provider(to).name, "changed": changed,
                          "serial": 1}, when=when)


@pytest.mark.parametrize("switches, passed, deadline", [
    ([], False, None),                                                    # never switched: no deadline
    ([("target", 6, True)], False, NOW + timedelta(days=1)),              # 6 days ago: one day left
    ([("target", 8, True)], True, NOW - timedelta(days=1)),               # 8 days ago: passed
    ([("target", 8, True), ("target", 2, False)], True, NOW - timedelta(days=1)),  # an idempotent re-run keeps the clock
    ([("target", 8, True), ("source", 7.5, True)], False, None),          # back on the source since: no deadline
    ([("target", 20, True), ("source", 19, True), ("target", 3, True)], False, NOW + timedelta(days=4)),  # switched again
])
def test_deadline_from_the_journaled_switch(tmp_path, switches, passed, deadline) -> None:
    _, plan = _plan(tmp_path)
    for to, days_ago, changed in switches:
        _switch(plan, to, NOW - timedelta(days=days_ago), changed)
    decision = check_rollback_deadline(plan, now=NOW)
    assert (decision.passed, decision.deadline, decision.allowed) == (passed, deadline, not passed)
    if passed:
        with pytest.raises(RollbackDeadlineError, match=r"rollback refused: rollback deadline .* passed .*--override"):
            require_rollback_allowed(plan, now=NOW)
        overridden = require_rollback_allowed(plan, now=NOW, override_reason="Aruba confirmed the domain is active")
        assert overridden.allowed and "by override: Aruba confirmed" in overridden.describe()
    else:
        assert require_rollback_allowed(plan, now=NOW, override_reason="not needed").override_reason == ""


def test_switch_mx_is_what_starts_the_clock(tmp_path) -> None:
    """switched_to_target_at reads what switch_mx journals (its entry shape is asserted against the real call in
    tests/dns/test_rollback_deadline_dns.py)."""
    _, plan = _plan(tmp_path)
    assert switched_to_target_at(plan) is None
    _switch(plan, "target", NOW - timedelta(hours=1))
    assert switched_to_target_at(plan) == NOW - timedelta(hours=1)


def test_plan_rollback_until_wins_and_is_read_in_the_plan_timezone(tmp_path) -> None:
    _, plan = _plan(tmp_path, "rollback_until: 2099-12-18T09:00:00\n")
    assert plan.rollback_until == datetime(2099, 12, 18, 8, 0, tzinfo=timezone.utc)  # Europe/Rome, winter
    _switch(plan, "target", NOW - timedelta(days=30))  # the plan's date, not the switch + 7 days
    decision = check_rollback_deadline(plan, now=NOW)
    assert decision.allowed and decision.deadline == plan.rollback_until and "plan rollback_until" in decision.describe()
    assert not check_rollback_deadline(plan, now=datetime(2100, 1, 1, tzinfo=timezone.utc)).allowed
    assert ("rollback until", plan.rollback_until.isoformat()) in plan.summary()


def test_rollback_until_before_the_window_end_is_a_plan_error(tmp_path) -> None:
    path, _ = _plan(tmp_path)
    path.write_text(path.read_text() + "rollback_until: 2020-01-01T00:00:00\n")
    with pytest.raises(PlanError, match=r"line \d+: rollback_until: .* not after the window end"):
        load_plan(path)


def test_cli_rollback_after_the_deadline_refused_in_one_line_before_any_run(tmp_path) -> None:
    path, plan = _plan(tmp_path)
    _switch(plan, "target", datetime.now(timezone.utc) - timedelta(days=8))
    result = CliRunner().invoke(app, ["run", "rollback", "--plan", str(path), "--reason", "InfoCert down"],
                                terminal_width=400)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: rollback refused: rollback deadline") and "--override REASON" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_cli_dns_switch_back_after_the_deadline_refused(tmp_path) -> None:
    path, plan = _plan(tmp_path)
    _switch(plan, "target", datetime.now(timezone.utc) - timedelta(days=9))
    for argv in (["dns", "switch", "--to", "source"], ["dns", "switch", "--to", "source", "--emergency", "down"]):
        result = CliRunner().invoke(app, [*argv, "--plan", str(path)], terminal_width=400)
        assert result.exit_code == 2 and "rollback refused" in result.output, result.output
        assert "Traceback" not in result.output
