"""Notifications reach the ops channel: a gate that pauses, GO, a rollback's start and end, a failed run; each
delivery retried and recorded in the run's report (never the URL). The receiver is the sandbox's own webhook
server (a real HTTP server on 127.0.0.1); the flows run on the sandbox's real servers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from cutover.dnschange import set_ttl
from cutover.notify import notify
from cutover.plan import load_plan
from cutover.sandbox._users import write_secret_file
from cutover.sandbox._webhook import WebhookReceiver
from flows.cutover_day import cutover
from flows.history import decide_gate

from .conftest import Day, run_in_thread, wait_paused, wait_ttl_low_long_enough
from .test_cutover_day import artifact_exists
from .test_deployments_run import free_port


@pytest.fixture
def receiver(tmp_path):
    hook = WebhookReceiver(port=free_port(), log=tmp_path / "webhook" / "received.jsonl")
    hook.start()
    yield hook
    hook.stop()


def with_webhooks(plan_path: Path, secrets: Path, urls: dict[str, str]) -> None:
    """Add notify.webhooks to a plan; each URL in a mode-600 file (a webhook URL is a secret)."""
    data = yaml.safe_load(plan_path.read_text())
    hooks = []
    for name, url in urls.items():
        write_secret_file(secrets / f"{name}.url", url)
        hooks.append({"name": name, "url": f"file:{secrets / f'{name}.url'}"})
    data["notify"] = {"webhooks": hooks, "attempts": 3}
    plan_path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_deliveries_are_retried_and_reported_without_the_url(receiver, tmp_path):
    plan_path = tmp_path / "plan.yaml"
    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "inventory" / "rehearsal" / "plan.yaml").read_text())
    data["inventory"] = str(repo / "inventory" / "rehearsal" / "mailboxes.csv")
    plan_path.write_text(yaml.safe_dump(data))
    with_webhooks(plan_path, tmp_path / "s", {"chat": receiver.url("ok/chat"), "flaky": receiver.url("flaky/2/pager"),
                                              "dead": receiver.url("down/old")})
    plan = load_plan(plan_path)
    out = {d.webhook: d for d in notify(plan, "go", "GO", {"verdict": "GO"}, sleep=lambda s: None)}
    assert (out["chat"].ok, out["chat"].attempts) == (True, 1)
    assert (out["flaky"].ok, out["flaky"].attempts) == (True, 3)           # two 503s, then delivered
    assert (out["dead"].ok, out["dead"].attempts, out["dead"].detail) == (False, 3, "HTTP 503")
    got = receiver.received()
    assert [r["status"] for r in got if r["path"] == "/flaky/2/pager"] == [503, 503, 200]
    assert got[0]["body"]["text"] == "GO" and got[0]["body"]["domain"] == "pec.fnofi.it"
    assert all(str(receiver.port) not in d.line() for d in out.values())  # the URL is never in a report line
    assert notify(plan.model_copy(update={"notify": plan.notify.model_copy(update={"events": ["go"]})}),
                  "gate-paused", "x") == []                               # only the events the plan wants


def test_the_day_tells_the_channel(receiver, day_factory, tmp_path):
    day: Day = day_factory(mailboxes=2, messages=6)
    with_webhooks(day.plan_path, tmp_path / "hook-secrets", {"ops-chat": receiver.url("ok/ops-chat")})

    go = cutover(plan_path=str(day.plan_path), operator="Test Ops")
    assert go["verdict"] == "GO"

    set_ttl(load_plan(day.plan_path), "cutover")   # a second attempt: the TTL lowered again
    wait_ttl_low_long_enough(day.plan)   # the pre-flight's own answer, not a guessed sleep
    day.box.stop_service("webmail")
    try:
        from flows.rollback import rollback
        rollback(plan_path=str(day.plan_path), reason="back before the second attempt", operator="Test Ops")
        set_ttl(load_plan(day.plan_path), "cutover")
        wait_ttl_low_long_enough(day.plan)
        thread, out = run_in_thread(lambda: cutover(plan_path=str(day.plan_path), operator="Test Ops"))
        run_id = wait_paused(day.plan_path)
        paused = [r["body"] for r in receiver.received() if r["body"]["event"] == "gate-paused"]
        assert len(paused) == 1 and paused[0]["run_id"] == run_id and paused[0]["gate"] == "access"
        assert f"pec-cutover gate decide {run_id} --rollback|--continue|--retry" in paused[0]["command"]
        assert "webmail" in paused[0]["failing"]
        decide_gate(run_id, "rollback", "Maria Verdi", "webmail down after the switch")
        thread.join(300)
        assert out["result"]["verdict"] == "ROLLED-BACK"
    finally:
        day.box.start_service("webmail")
    events = [r["body"]["event"] for r in receiver.received()]
    assert events == ["go", "rollback-started", "rollback-ended", "gate-paused", "rollback-started", "rollback-ended"]
    assert all(r["status"] == 200 for r in receiver.received())
    report = next(p for p in sorted(day.plan.reports_dir.glob("cutover-report-*.md"), key=lambda p: p.stat().st_mtime)
                  if "RolledBack" in p.read_text() or "ROLLED BACK" in p.read_text())
    text = report.read_text()
    assert "## Notifications" in text and "notification gate-paused → ops-chat: sent after 1 attempt(s)" in text
    assert str(receiver.port) not in text
