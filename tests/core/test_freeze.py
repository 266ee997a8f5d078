"""The change freeze: window rules and the marker (one cutover or rollback at a time)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from cutover import freeze
from cutover.errors import FreezeError
from cutover.plan import load_plan

REHEARSAL = Path(__file__).resolve().parents[2] / "inventory" / "rehearsal" / "plan.yaml"


@pytest.fixture
def plan(tmp_path):
    data = yaml.safe_load(REHEARSAL.read_text())
    data["window"] = {"start": "2026-12-05T06:00:00", "end": "2026-12-05T10:00:00"}
    data["ledger"] = str(tmp_path / "state" / "ledger.sqlite")
    data["inventory"] = str(REHEARSAL.parent / "mailboxes.csv")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_plan(path)


@pytest.mark.parametrize("now,override,allowed,inside", [
    (datetime(2026, 12, 5, 5, 30, tzinfo=timezone.utc), None, True, True),       # 06:30 Rome
    (datetime(2026, 12, 5, 4, 59, tzinfo=timezone.utc), None, False, False),     # 05:59 Rome
    (datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc), None, False, False),      # 10:00 Rome: end is exclusive
    (datetime(2026, 12, 6, 5, 30, tzinfo=timezone.utc), "  ", False, False),      # blank reason is no reason
    (datetime(2026, 12, 6, 5, 30, tzinfo=timezone.utc), "CAB-1234 moved a day", True, False),
])
def test_window(plan, now, override, allowed, inside):
    decision = freeze.check_window(plan, now, override)
    assert (decision.allowed, decision.inside) == (allowed, inside)


def test_require_window_message_says_what_to_do(plan):
    with pytest.raises(FreezeError) as exc:
        freeze.require_window(plan, datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert "outside the window" in str(exc.value) and "--override-window" in str(exc.value)
    ok = freeze.require_window(plan, datetime(2026, 12, 1, tzinfo=timezone.utc), "rehearsal")
    assert "override: rehearsal" in ok.describe()


@pytest.mark.parametrize("minutes_before,waits", [(0.1, True), (2, True), (2.5, False), (60, False), (-5, False)])
def test_a_run_started_just_before_the_window_waits_for_it(plan, minutes_before, waits):
    # A worker submits a scheduled cutover a few seconds before the window start: it must wait, not refuse.
    slept: list[float] = []
    now = datetime(2026, 12, 5, 5, 0, tzinfo=timezone.utc) - timedelta(minutes=minutes_before)  # 06:00 Rome
    waited = freeze.wait_for_window(plan, now=now, sleep=slept.append)
    assert slept == ([minutes_before * 60] if waits else []) and waited == sum(slept)
    if waits:
        assert freeze.require_window(plan, now + timedelta(seconds=waited)).inside


def test_second_cutover_refused_while_first_holds(plan):
    freeze.acquire(plan, "cutover", "run-1")
    with pytest.raises(FreezeError, match="another cutover is running: cutover run run-1"):
        freeze.acquire(plan, "cutover", "run-2")
    with pytest.raises(FreezeError, match="pre-stage copy refused: change freeze held by cutover run run-1"):
        freeze.ensure_not_frozen(plan, "pre-stage copy")
    assert freeze.release(plan, "run-1")
    freeze.ensure_not_frozen(plan, "pre-stage copy")
    assert not freeze.marker_path(plan).exists()


def test_rollback_takes_over_a_cutover_but_not_another_rollback(plan):
    freeze.acquire(plan, "cutover", "cut-1")
    held = freeze.acquire(plan, "rollback", "rb-1")
    assert "took over from cutover run cut-1" in held.took_over
    assert not freeze.holds(plan, "cut-1") and freeze.holds(plan, "rb-1")
    assert not freeze.release(plan, "cut-1")  # the cutover can no longer lift the rollback's freeze
    with pytest.raises(FreezeError, match="another rollback is running"):
        freeze.acquire(plan, "rollback", "rb-2")
    assert freeze.release(plan, "rb-1")


def test_stale_marker_of_dead_process_is_taken(plan):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    freeze.acquire(plan, "cutover", "old")
    data = json.loads(freeze.marker_path(plan).read_text())
    data["pid"] = int(dead.stdout)
    freeze.marker_path(plan).write_text(json.dumps(data))
    held = freeze.acquire(plan, "cutover", "new")
    assert held.took_over.startswith("stale marker of cutover run old")


def test_unreadable_marker_counts_as_held(plan):
    freeze.marker_path(plan).parent.mkdir(parents=True, exist_ok=True)
    freeze.marker_path(plan).write_text("{not json")
    with pytest.raises(FreezeError):
        freeze.ensure_not_frozen(plan, "DNS change")


def test_dns_changes_by_hand_refused_during_freeze(plan, tmp_path):
    from typer.testing import CliRunner

    from cutover.cli import app

    freeze.acquire(plan, "cutover", "run-7")
    runner = CliRunner()
    for args in (["dns", "switch", "--to", "source"], ["dns", "ttl", "--restore"]):
        result = runner.invoke(app, [*args, "--plan", str(tmp_path / "plan.yaml")])
        assert result.exit_code == 2, result.output
        assert "refused: change freeze held by cutover run run-7" in result.output
        assert "Traceback" not in result.output


def test_copy_by_hand_refused_during_freeze(plan, tmp_path):
    from typer.testing import CliRunner

    from cutover.cli import app

    freeze.acquire(plan, "rollback", "rb-9")
    result = CliRunner().invoke(app, ["copy", "--plan", str(tmp_path / "plan.yaml")])
    assert result.exit_code == 2 and "copy forward by hand refused: change freeze held by rollback run rb-9" in result.output


def test_freeze_kept_after_a_failure_past_the_switch_until_a_rollback(plan):
    freeze.acquire(plan, "cutover", "cut-3")
    freeze.keep_after_failure(plan, "cut-3", "failed after the MX switch: roll back or investigate")
    data = json.loads(freeze.marker_path(plan).read_text())
    data["pid"] = 999_999_999  # its process is gone; a sticky marker is not stale for that
    freeze.marker_path(plan).write_text(json.dumps(data))
    with pytest.raises(FreezeError, match="failed after the MX switch"):
        freeze.acquire(plan, "cutover", "cut-4")
    with pytest.raises(FreezeError):
        freeze.ensure_not_frozen(plan, "pre-stage copy")
    held = freeze.acquire(plan, "rollback", "rb-3")
    assert "took over from cutover run cut-3" in held.took_over and not held.sticky
    assert freeze.release(plan, "rb-3")


def test_a_cutover_taken_over_by_a_rollback_must_stop(plan):
    freeze.acquire(plan, "cutover", "cut-5")
    freeze.require_held(plan, "cut-5")
    freeze.acquire(plan, "rollback", "rb-5")
    with pytest.raises(FreezeError, match="no longer holds the freeze .*rollback run rb-5"):
        freeze.require_held(plan, "cut-5")
