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
        assert sys.modules[module].__file__ == str(REPO / (module.replace(".", "/") + ".py"))
        names.add(deployment["name"])
        if deployment["name"] == "copy-chunk":  # started by the copy itself, every parameter given by the parent
            assert isinstance(flow, Flow) and flow.name == "copy chunk" and "parameters" not in deployment
            continue
        assert isinstance(flow, Flow) and flow.name == deployment["name"]
        assert "plan_path" in deployment["parameters"]
    assert names == {"readiness", "prestage", "cutover", "rollback", "copy-chunk"}


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


# What a worker's flow-run process does with an entrypoint (after prefect.yaml's pull step put it in the checkout),
# then every module of this repository that got loaded, and the name it was loaded under.
_LOAD_AS_A_WORKER = """
import json, sys
from pathlib import Path
from prefect.flows import load_flow_from_entrypoint
repo = Path.cwd().resolve()
for entrypoint in sys.argv[1:]:
    load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
loaded = []
for name, module in list(sys.modules.items()):
    path = Path(getattr(module, "__file__", None) or "/").resolve()
    if path.is_relative_to(repo) and path.parts[len(repo.parts)] in ("cutover", "checks", "flows"):
        loaded.append([name, str(path.relative_to(repo))])
print(json.dumps(loaded))
"""


def _modules_loaded_by(home: Path, *entrypoints: str) -> list[tuple[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_AS_A_WORKER, *entrypoints], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [tuple(pair) for pair in yaml.safe_load(proc.stdout.strip().splitlines()[-1])]


def _two_names(loaded: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Modules loaded under a name that is not their path's (flows/readiness.py as `readiness`): a second copy."""
    def canonical(path: str) -> str:
        return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return [(name, path) for name, path in loaded if name != canonical(path)]


def test_every_module_a_deployment_loads_has_one_name(tmp_path):
    entrypoints = [d["entrypoint"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]]
    loaded = _modules_loaded_by(tmp_path, *entrypoints)
    assert {"flows.readiness", "flows.prestage", "flows.cutover_day", "flows.rollback", "cutover.plan"} <= \
        {name for name, _ in loaded}
    assert _two_names(loaded) == []
    # The check sees the old failure: a flow file loaded as a script is a second module beside flows.readiness.
    assert ("readiness", "flows/readiness.py") in _two_names(_modules_loaded_by(tmp_path, "flows/readiness.py:readiness"))
