"""prefect.yaml and `pec-cutover serve` describe deployable flows; the cutover is scheduled at the window start."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect import Flow

from cutover.plan import load_plan
from flows.deployments import window_schedule

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_entrypoints_are_flows():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        module, _, func = deployment["entrypoint"].partition(":")  # module-path entrypoints (flows.x:flow)
        flow = getattr(importlib.import_module(module), func)
        assert isinstance(flow, Flow) and flow.name == deployment["name"]
        assert "plan_path" in deployment["parameters"]
        names.add(deployment["name"])
    assert names == {"readiness", "prestage", "cutover", "rollback"}


def test_cutover_schedule_is_once_at_window_start():
    plan = load_plan(REPO / "inventory" / "example-production" / "plan.yaml")
    schedule = window_schedule(plan)
    assert schedule.rrule.startswith("DTSTART:20261212T200000") and "COUNT=1" in schedule.rrule
    assert schedule.timezone == "Europe/Rome"
