"""The flow commands of the CLI: gate decisions refused clearly, history read from Prefect's API."""

from __future__ import annotations

import uuid

from typer.testing import CliRunner

from cutover.cli import app, load_plugins

load_plugins()
runner = CliRunner()


def test_gate_decide_needs_exactly_one_action(open_plan):
    result = runner.invoke(app, ["gate", "decide", str(uuid.uuid4()), "--operator", "Ops", "--reason", "x",
                                 "--plan", open_plan])
    assert result.exit_code == 2 and "exactly one of --rollback, --continue, --retry" in result.output


def test_gate_decide_unknown_run_is_a_clear_error(prefect_db, open_plan):
    run_id = str(uuid.uuid4())
    result = runner.invoke(app, ["gate", "decide", run_id, "--rollback", "--operator", "Ops", "--reason", "why",
                                 "--plan", open_plan])
    assert result.exit_code == 2, result.output
    assert f"no run with id {run_id}" in result.output and "Traceback" not in result.output


def test_gate_decide_form_rules_named(open_plan):
    result = runner.invoke(app, ["gate", "decide", str(uuid.uuid4()), "--continue", "--operator", "x", "--reason", "y",
                                 "--plan", open_plan])
    assert result.exit_code == 2
    assert "decision not sent" in result.output and "operator" in result.output and "reason" in result.output


def _flow_runs() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {str(r.id) for r in client.read_flow_runs(limit=200)}


def test_run_with_a_broken_plan_is_one_line_and_records_no_run(prefect_db, tmp_path):
    (tmp_path / "plan.yaml").write_text("name: x\n")
    before = _flow_runs()
    for flow in ("readiness", "prestage", "cutover"):
        result = runner.invoke(app, ["run", flow, "--plan", str(tmp_path / "plan.yaml")], terminal_width=400)
        assert result.exit_code == 2 and "required field is missing" in result.output, result.output
        assert "Traceback" not in result.output
        assert result.output.strip().splitlines()[0].startswith("error:"), result.output
    assert _flow_runs() == before, "a run was recorded for a plan that never loaded"


def test_gate_decide_bad_run_id(open_plan):
    result = runner.invoke(app, ["gate", "decide", "not-a-uuid", "--continue", "--operator", "Ops", "--reason", "why",
                                 "--plan", open_plan])
    assert result.exit_code == 2 and "cannot resume not-a-uuid" in result.output


def test_history_lists_runs_with_state(prefect_db, tmp_path, open_plan):
    import pytest

    from cutover.errors import PlanError
    from flows.readiness import readiness

    with pytest.raises(PlanError):
        readiness(plan_path=str(tmp_path / "missing-plan.yaml"))  # a real run that fails
    result = CliRunner().invoke(app, ["history", "--limit", "50", "--plan", open_plan], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert any("readiness" in line and "Failed" in line for line in result.output.splitlines()), result.output
