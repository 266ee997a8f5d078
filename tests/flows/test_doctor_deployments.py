"""Issue 16 (5): `prefect.yaml` cannot disagree with the plan, and `pec-cutover doctor` says so. On a real, locked
`pec-cutover server start` (its own process and database): no deployments yet; `pec-cutover serve --plan P` (every
deployment defaults to P, the cutover scheduled at the window start: all agree); the window moved after scheduling
(the scheduled run no longer agrees); `prefect deploy --all` from the checkout's prefect.yaml (its default plan is the
example one, not P). Each through `diagnose` and the installed command, as an operator runs it."""

from __future__ import annotations

import subprocess
from datetime import timedelta

from cutover.doctor import DEPLOYMENTS, diagnose
from cutover.plan import load_plan
from cutover.sandbox._prefect import BIN, PrefectStack

from .test_deployments_run import POOL, _wait_for_runs, locked_day, set_window, stack  # noqa: F401 (fixtures)


def _deployments(stack: PrefectStack, plan_path):
    found = {f.what: f for f in diagnose(plan_path, stack.env, timeout=10)}
    return found["deployments"], found


def _doctor_cli(stack: PrefectStack, plan_path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pec-cutover"), "doctor", "--plan", str(plan_path)], env=stack.env,
                          capture_output=True, text=True, timeout=120)


def test_doctor_says_whether_the_deployments_agree_with_the_plan(stack: PrefectStack, locked_day) -> None:
    day, _totp = locked_day
    none, found = _deployments(stack, day.plan_path)
    assert none.ok and none.value == "(none on this server)", none
    assert all(f.ok for f in found.values()), found          # the locked server answers with the plan's auth
    assert found["PREFECT_HOME"].value == str(stack.home)

    # `pec-cutover serve --plan P`: the four deployments default to P, the cutover is scheduled at the window start.
    stack.start_serve(day.plan_path)
    for name in DEPLOYMENTS:
        stack.wait_deployment(f"{name}/{name}")
    scheduled = _wait_for_runs(stack, "cutover/cutover")
    agree, _ = _deployments(stack, day.plan_path)
    start = load_plan(day.plan_path).window.start
    assert agree.ok, agree
    assert f"the cutover scheduled at the window start {start.isoformat()} (run {scheduled[0].id})" in agree.detail
    shown = _doctor_cli(stack, day.plan_path)
    assert shown.returncode == 0 and "this shell is set up for the day" in shown.stdout, shown.stdout + shown.stderr

    # The change board moves the window by a day after the run was scheduled: the run would start on the old date.
    original = day.plan_path.read_text()
    set_window(day.plan_path, start + timedelta(days=1))
    moved, _ = _deployments(stack, day.plan_path)
    assert not moved.ok and f"cutover run {scheduled[0].id} is scheduled at" in moved.detail, moved
    assert "cancel it in the UI, then `pec-cutover schedule --plan P`" in moved.detail
    shown = _doctor_cli(stack, day.plan_path)
    assert shown.returncode == 1 and "1 problem(s): deployments" in shown.stdout, shown.stdout + shown.stderr
    assert "Traceback" not in shown.stderr
    day.plan_path.write_text(original)

    # `prefect deploy --all` from the checkout: prefect.yaml's default plan_path is the example plan, not P.
    stack.cli("work-pool", "create", POOL, "--type", "process")
    stack.cli("--no-prompt", "deploy", "--all")
    other, _ = _deployments(stack, day.plan_path)
    assert not other.ok, other
    assert "rollback → inventory/example-production/plan.yaml" in other.detail
    assert "set the plan_path values in prefect.yaml (definitions: plan, and the rollback's) to P" in other.detail
