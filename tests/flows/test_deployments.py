"""prefect.yaml and `pec-cutover serve` describe deployable flows; the cutover is scheduled at the window start."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

from cutover.plan import load_plan
from flows.deployments import window_schedule

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_entrypoints_are_flows_loaded_by_module_path():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        # A flow file loaded as a script puts flows/ first on sys.path: flows/cutover.py once shadowed the
        # cutover package that way, and each flow module would exist under two names.
        assert ".py" not in deployment["entrypoint"], deployment["entrypoint"]
        flow = load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False)
        module, _, func = deployment["entrypoint"].partition(":")
        assert isinstance(flow, Flow) and flow.name == deployment["name"]
        assert sys.modules[module].__file__ == str(REPO / (module.replace(".", "/") + ".py"))
        assert "plan_path" in deployment["parameters"]
        names.add(deployment["name"])
    assert names == {"readiness", "prestage", "cutover", "rollback"}


def test_no_flow_file_shadows_a_package():
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} | {"prefect", "dns", "yaml"}
    assert packages >= {"cutover", "checks", "flows"}
    assert {f.stem for f in (REPO / "flows").glob("*.py")} & packages == set()


def test_cutover_schedule_is_once_at_window_start():
    plan = load_plan(REPO / "inventory" / "example-production" / "plan.yaml")
    schedule = window_schedule(plan)
    assert schedule.rrule.startswith("DTSTART:20261212T200000") and "COUNT=1" in schedule.rrule
    assert schedule.timezone == "Europe/Rome"


def test_cutover_schedule_is_in_the_plan_timezone_whatever_offset_the_window_has():
    plan = load_plan(REPO / "inventory" / "example-production" / "plan.yaml")
    start = plan.window.start.astimezone(timezone.utc)
    schedule = window_schedule(plan.model_copy(update={"window": plan.window.model_copy(update={"start": start})}))
    # 20:00 in Rome, written as 19:00Z: still DTSTART 20:00 in Europe/Rome.
    assert schedule.rrule.startswith("DTSTART:20261212T200000") and schedule.timezone == "Europe/Rome"


def test_schedule_with_no_server_is_one_clear_line(tmp_path):
    data = yaml.safe_load((REPO / "inventory" / "rehearsal" / "plan.yaml").read_text())
    data["window"] = {"start": "today+1d", "end": "today+2d"}
    data["inventory"] = str(REPO / "inventory" / "rehearsal" / "mailboxes.csv")
    data.pop("prefect")  # no auth string to resolve: this is about the server being absent
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    proc = subprocess.run([str(Path(sys.executable).parent / "pec-cutover"), "schedule", "--plan",
                           str(tmp_path / "plan.yaml")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot reach the Prefect server" in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
