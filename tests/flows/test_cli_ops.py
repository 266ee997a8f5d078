"""The ops team's CLI at 80 columns and piped: run ids never cut, `history --json`, `gate decide` by prefix."""

from __future__ import annotations

import json
import os.path

import pytest
from typer.testing import CliRunner

from cutover.cli import app, load_plugins
from cutover.errors import PlanError

load_plugins()


@pytest.fixture
def runs(prefect_db, tmp_path, open_plan):
    """17 real readiness runs (failed at once): two of them share at least their first character."""
    from flows.readiness import readiness

    for _ in range(17):
        with pytest.raises(PlanError):
            readiness(plan_path=str(tmp_path / "missing-plan.yaml"))  # real runs, failed at once
    result = CliRunner().invoke(app, ["history", "--json", "--limit", "200", "--plan", open_plan])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    # gate decide resolves a prefix among every recent run (other tests' runs too), so a prefix is chosen among all
    return [r["id"] for r in listed if r["flow"] == "readiness"], [r["id"] for r in listed]


def test_history_at_80_columns_and_as_json_keep_whole_run_ids(runs, open_plan):
    narrow = CliRunner().invoke(app, ["history", "--limit", "200", "--plan", open_plan], terminal_width=80)
    assert narrow.exit_code == 0
    for run_id in runs[0]:
        assert run_id in narrow.output              # whole, on one line
    # The lines that carry ids fit 80 columns (a run's name and gates follow, indented, whole).
    assert all(len(line) <= 80 for line in narrow.output.splitlines() if not line.startswith("  ")), narrow.output
    data = json.loads(CliRunner().invoke(app, ["history", "--json", "--plan", open_plan]).output)
    assert {"id", "flow", "name", "state", "started", "seconds", "gates"} <= set(data[0])


def test_gate_decide_takes_a_unique_prefix_and_names_an_ambiguous_one(runs, open_plan):
    readiness_ids, every_id = runs
    first, second = next((a, b) for i, a in enumerate(readiness_ids) for b in readiness_ids[i + 1:] if a[0] == b[0])
    unique = next(first[:n] for n in range(1, 37) if sum(r.startswith(first[:n]) for r in every_id) == 1)
    out = CliRunner().invoke(app, ["gate", "decide", unique, "--continue", "--operator", "Test Ops", "--reason", "why",
                                   "--plan", open_plan])
    # The prefix found the (failed, not paused) run: Prefect refuses to resume it, by its whole id.
    assert out.exit_code == 2 and "Prefect refused to resume" in out.output and "Traceback" not in out.output
    common = os.path.commonprefix([first, second])
    out = CliRunner().invoke(app, ["gate", "decide", common, "--continue", "--operator", "Test Ops", "--reason", "why",
                                   "--plan", open_plan])
    assert out.exit_code == 2 and "is the start of" in out.output and "give more characters" in out.output
