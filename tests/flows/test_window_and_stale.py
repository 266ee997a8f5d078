"""Issue 16 (3) and (4) on the sandbox's real servers through Prefect: a gate still waiting for a human when the
window closes is decided by the plan's rule (roll back), recorded "window closed", and the report names the
phases that overran; a paused run answered after a newer cutover holds the freeze refuses to act."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType

from cutover import freeze
from cutover.errors import FreezeError
from flows.cutover_day import cutover
from flows.history import decide_gate
from flows.prestage import prestage
from flows.rollback import rollback

from .conftest import run_in_thread, wait_paused
from .test_cutover_day import mx_everywhere
from .test_notifications import receiver, with_webhooks  # noqa: F401 (receiver: the sandbox's webhook server)

ABORT_AFTER_S = 45  # long enough for the switch and the final delta here; if the gate comes later, same rule


def _paused_runs() -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
    return {str(r.id) for r in runs}


def test_a_gate_waiting_when_the_window_closes_rolls_back_recorded_window_closed(day_factory, receiver, tmp_path):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    abort = now + timedelta(seconds=ABORT_AFTER_S)
    day = day_factory(on_nogo="ask", mailboxes=2, messages=6, window=(
        (now - timedelta(minutes=5)).isoformat(),
        f"{(now + timedelta(hours=2)).isoformat()}\n  abort_at: {abort.isoformat()}\n"
        "  phase_minutes: {freeze: 0.001}"))
    with_webhooks(day.plan_path, tmp_path / "hook-secrets", {"ops-chat": receiver.url("ok/ops-chat")})
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")   # the access gate says NO-GO and, with on_nogo: ask, waits for a human

    result = cutover(plan_path=str(day.plan_path), operator="Test Ops")   # nobody answers

    assert datetime.now(timezone.utc) >= abort, "the gate must not give up before abort_at"
    assert result["verdict"] == "ROLLED-BACK", result
    closed = [d for d in result["decisions"] if "window closed (abort_at" in d]
    assert closed and closed[0].startswith("access: NO-GO") and closed[0].endswith("rollback (plan window.on_close: rollback)")
    assert mx_everywhere(day, "source")
    assert freeze.current(day.plan) is None
    report = next(day.plan.reports_dir.glob("cutover-report-*.md")).read_text()
    assert "window closed (abort_at" in report
    assert "## phase durations (overrun" in report and "OVERRUN freeze:" in report
    assert "OVERRUN switch" not in report     # 5 min expected for the switch: not overrun here
    # The ops channel hears of the overrun too, and the delivery is in the report.
    overruns = [r["body"] for r in receiver.received() if r["body"]["event"] == "phase-overrun"]
    assert [o["phase"].split(":")[0] for o in overruns] == ["OVERRUN freeze"], overruns
    assert "phase overran: OVERRUN freeze:" in overruns[0]["text"]
    assert "notification phase-overrun → ops-chat: sent after 1 attempt(s)" in report
    day.box.start_service("webmail")


def test_a_stale_paused_run_answered_after_a_newer_cutover_refuses_to_act(day_factory):
    day = day_factory(on_nogo="ask", mailboxes=2, messages=6)
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")

    old_thread, old = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    old_id = wait_paused(day.plan_path)
    # The team rolls back by hand while the first run waits, then starts the cutover again.
    back = rollback(plan_path=str(day.plan_path), reason="webmail down: back, then try again", operator="Test Ops")
    assert back["verdict"] == "rolled-back" and mx_everywhere(day, "source")
    new_thread, new = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
    deadline = datetime.now(timezone.utc) + timedelta(seconds=300)
    while not (_paused_runs() - {old_id}) and datetime.now(timezone.utc) < deadline and new_thread.is_alive():
        new_thread.join(0.5)
    new_id = (_paused_runs() - {old_id}).pop()
    assert freeze.current(day.plan).run_id == new_id and mx_everywhere(day, "target")

    # Somebody answers the old run (its form is still open in a browser): it must change nothing.
    answer = decide_gate(old_id, "rollback", "Maria Verdi", "old tab still open")
    assert answer.startswith("refused: stale run " + old_id), answer
    old_thread.join(120)
    assert isinstance(old.get("error"), FreezeError) and "no longer decides anything" in str(old["error"])
    assert freeze.current(day.plan).run_id == new_id, "the newer run keeps the freeze"
    assert mx_everywhere(day, "target"), "the stale run did not roll the newer cutover back"
    report = next(r.read_text() for r in day.plan.reports_dir.glob("cutover-report-*.md") if old_id[:8] in r.name)
    assert "answer ignored: stale run" in report

    decide_gate(new_id, "rollback", "Maria Verdi", "webmail still down")   # the run in charge decides
    new_thread.join(180)
    assert new["result"]["verdict"] == "ROLLED-BACK", new
    assert mx_everywhere(day, "source") and freeze.current(day.plan) is None
    day.box.start_service("webmail")


def test_a_stale_paused_run_that_times_out_after_a_newer_cutover_acts_on_nothing(day_factory):
    """The other half of (4): nobody answers the old run; its pause times out (normally a rollback) after the team
    rolled back by hand and a newer cutover went through. It must stop without rolling the newer cutover back."""
    day = day_factory(on_nogo="ask", mailboxes=2, messages=6, pause_timeout_s=45)
    prestage(plan_path=str(day.plan_path))
    day.box.stop_service("webmail")
    try:
        old_thread, old = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
        old_id = wait_paused(day.plan_path)
        # At once (well within the 45 s pause): the rollback by hand takes the freeze over from the paused run.
        back = rollback(plan_path=str(day.plan_path), reason="webmail down: back, then try again", operator="Test Ops")
        assert back["verdict"] == "rolled-back" and mx_everywhere(day, "source")
    finally:
        day.box.start_service("webmail")
    again = cutover(plan_path=str(day.plan_path), operator="Test Ops")   # webmail fixed: the newer cutover
    assert again["verdict"] == "GO", again
    assert mx_everywhere(day, "target")

    old_thread.join(180)
    assert not old_thread.is_alive(), "the old run still waits past its pause timeout"
    assert isinstance(old.get("error"), FreezeError) and "no longer decides anything" in str(old["error"]), old
    assert "rolled" not in str(old.get("result", "")).lower()
    assert mx_everywhere(day, "target"), "the stale run's timeout rolled the newer cutover back"
    assert freeze.current(day.plan) is None, "the stale run took or left a freeze"
    report = next(r.read_text() for r in day.plan.reports_dir.glob("cutover-report-*.md") if old_id[:8] in r.name)
    assert "answer ignored: stale run" in report and "no decision within" not in report
