"""Issue 16 (3): the window has an end. The pure rules: how long a gate may pause, what the plan decides when
the window closes, which phases overran; and the plan fields with their errors (file, line, field)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import re
from pathlib import Path

import pytest

from cutover.errors import PlanError
from cutover.plan import PHASE_MINUTES, load_plan, parse_plan
from cutover.window import gate_deadline, pause_budget, phase_key, phase_timings, window_closed

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "inventory" / "rehearsal" / "plan.yaml"


def _plan(tmp_path: Path, window_extra: str = "", gates_timeout: int = 3600):
    # A fixed window (the rehearsal plan's is relative to today), so the rules are checked against known dates.
    text = re.sub(r"  start: .*\n  end: .*\n", "  start: 2026-01-01T00:00:00\n  end: 2027-12-31T23:59:00\n" + window_extra,
                  PLAN.read_text(), count=1)
    text = text.replace("pause_timeout_s: 3600", f"pause_timeout_s: {gates_timeout}")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    (tmp_path / "mailboxes.csv").write_text((PLAN.parent / "mailboxes.csv").read_text())
    return load_plan(path)


def test_a_pause_never_outlasts_the_window(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    end = plan.window.end
    assert gate_deadline(plan, started_inside=True) == end
    assert gate_deadline(plan, started_inside=False) is None          # started by override: timeout only
    far = pause_budget(plan, end, now=end - timedelta(hours=5))
    assert (far.timeout_s, far.window_closes) == (3600, False)
    near = pause_budget(plan, end, now=end - timedelta(minutes=10))
    assert (near.timeout_s, near.window_closes, near.closed_already) == (600, True, False)
    closed = pause_budget(plan, end, now=end + timedelta(seconds=1))
    assert closed.closed_already
    action, text = window_closed(plan, end)
    assert action == "rollback" and text.startswith("window closed (end 2027-12-31T23:59:00+01:00)")


def test_abort_at_and_the_continue_rule(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "  abort_at: 2027-12-31T22:00:00\n  on_close: continue\n")
    assert plan.window.abort_at == datetime(2027, 12, 31, 21, 0, tzinfo=timezone.utc)   # naive: plan's timezone
    assert gate_deadline(plan, started_inside=True) == plan.window.abort_at
    action, text = window_closed(plan, plan.window.abort_at)
    assert action == "proceed" and "abort_at" in text and "continue" in text


def test_bad_window_settings_name_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as err:
        _plan(tmp_path, "  abort_at: 2028-01-02T00:00:00\n")
    assert "window: abort_at" in str(err.value) and "inside the window" in str(err.value) and re.search(r"line \d+: window", str(err.value))
    with pytest.raises(PlanError) as err:
        _plan(tmp_path, "  phase_minutes: {dns: 10, lunch: 60}\n")
    assert "window.phase_minutes" in str(err.value) and "unknown phase(s) lunch" in str(err.value)
    with pytest.raises(PlanError, match="on_close"):
        _plan(tmp_path, "  on_close: shrug\n")


def test_phase_timings_sum_retries_and_flag_overruns(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "  phase_minutes: {dns: 1}\n")
    assert plan.window.phase_minutes == {**PHASE_MINUTES, "dns": 1}
    assert phase_key("DNS checks and gate (attempt 2)") == "dns" and phase_key("switch MX to infocert") == "switch"
    assert phase_key("gate decisions") is None
    timings = [("freeze", 30.0, "ok"), ("switch MX to infocert", 2.0, "ok"),
               ("DNS checks and gate (attempt 1)", 45.0, "retry"), ("DNS checks and gate (attempt 2)", 30.0, "ok")]
    found = {t.key: t for t in phase_timings(plan, timings)}
    assert list(found) == ["freeze", "switch", "dns"]
    assert found["dns"].overran and found["dns"].describe() == "OVERRUN dns: 1.2 min (expected ≤ 1)"
    assert not found["freeze"].overran
