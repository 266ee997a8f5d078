"""``pec-cutover doctor``: which Prefect server, plan, ledger and freeze marker this shell would use, and
whether each is reachable; and whether the deployments on that server agree with the plan (their default
``plan_path``, the scheduled cutover run at the plan's window start). Findings are data (a failed one is an answer,
not a crash); the CLI renders them. The server is read over its REST API (no Prefect import here).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping

import httpx

from cutover import freeze
from cutover.errors import CutoverError
from cutover.plan import Plan, load_plan

DEPLOYMENTS = ("readiness", "prestage", "cutover", "rollback")  # flow/deployment names (prefect.yaml, serve)


@dataclass(frozen=True)
class Finding:
    what: str
    value: str
    ok: bool
    detail: str = ""


def diagnose(plan_path: Path, env: Mapping[str, str] | None = None, *, timeout: float = 3.0) -> list[Finding]:
    env = os.environ if env is None else env
    home = env.get("PEC_CUTOVER_HOME", "")
    found = [Finding("PEC_CUTOVER_HOME", home or "(unset)", True,
                     "a worker starts runs there; relative plan paths of deployments resolve against it" if home else
                     "unset: fine for `pec-cutover run`; a worker needs it (prefect.yaml's pull step)")]
    if home and not Path(home, "prefect.yaml").is_file():
        found[-1] = Finding("PEC_CUTOVER_HOME", home, False, "no prefect.yaml there: not the pec-cutover checkout")
    try:
        plan = load_plan(plan_path)
    except CutoverError as exc:
        return [*found, Finding("plan", str(plan_path), False, str(exc))]
    found.append(Finding("plan", str(Path(plan_path).resolve()), True, f"{plan.name}: {plan.domain}, window "
                         f"{plan.window.start.isoformat()} → {plan.window.end.isoformat()}"))
    found.append(_prefect_home(env))
    server = _server(plan, env, timeout)
    found.append(server)
    if server.ok:
        found.append(_deployments(plan, Path(plan_path), env, timeout))
    found.append(_ledger(plan))
    found.append(_freeze(plan))
    return found


def _prefect_home(env: Mapping[str, str]) -> Finding:
    given = env.get("PREFECT_HOME", "")
    path = Path(given).expanduser() if given else Path.home() / ".prefect"
    shown = str(path) if given else f"(unset: Prefect's default {path})"
    use = "the database of a server started from this shell (`pec-cutover server start`) and of runs without PREFECT_API_URL"
    writable = os.access(path if path.exists() else _existing_parent(path), os.W_OK)
    return Finding("PREFECT_HOME", shown, writable, use if writable else f"not writable by this user ({use})")


def _auth(plan: Plan) -> tuple[str, str] | None:
    if not plan.prefect.auth:
        return None
    user, _, password = plan.secret(plan.prefect.auth).reveal().partition(":")
    return user, password


def _server(plan: Plan, env: Mapping[str, str], timeout: float) -> Finding:
    url = env.get("PREFECT_API_URL", "")
    if not url:
        return Finding("Prefect server (PREFECT_API_URL)", "(unset)", False,
                       f"runs would go to a temporary local server, not the day's: export PREFECT_API_URL={plan.prefect.api_url}")
    try:
        auth = _auth(plan)
    except CutoverError as exc:
        return Finding("Prefect server (PREFECT_API_URL)", url, False, f"the plan's prefect.auth: {exc}")
    note = "" if url.rstrip("/") == plan.prefect.api_url else f" (the plan's server is {plan.prefect.api_url})"
    try:
        response = httpx.get(url.rstrip("/") + "/health", auth=auth, timeout=timeout)
    except httpx.HTTPError as exc:
        return Finding("Prefect server (PREFECT_API_URL)", url, False, f"unreachable: {type(exc).__name__}{note}; "
                       "start it with `pec-cutover server start --plan P` (in tmux)")
    if response.status_code == 401:
        return Finding("Prefect server (PREFECT_API_URL)", url, False, f"refuses this plan's auth string (401){note}")
    ok = response.status_code == 200
    return Finding("Prefect server (PREFECT_API_URL)", url, ok,
                   (f"healthy{note}" if ok else f"answered HTTP {response.status_code}{note}")
                   + ("" if plan.prefect.auth else "; not locked (no prefect.auth in the plan)"))


def _deployments(plan: Plan, plan_path: Path, env: Mapping[str, str], timeout: float) -> Finding:
    """The four deployments on the day's server: does each default to this plan (what the UI's Run button uses),
    and is the cutover scheduled once, at this plan's window start, for this plan (prefect.yaml holds no date)."""
    api = env["PREFECT_API_URL"].rstrip("/")
    home = env.get("PEC_CUTOVER_HOME", "")
    base = Path(home) if home else Path.cwd()   # a worker starts runs in PEC_CUTOVER_HOME (prefect.yaml's pull step)
    want = plan_path.resolve()
    try:
        auth = _auth(plan)
        with httpx.Client(base_url=api, auth=auth, timeout=timeout) as http:
            found = {}
            for name in DEPLOYMENTS:
                answer = http.get(f"/deployments/name/{name}/{name}")
                if answer.status_code != 404:
                    answer.raise_for_status()
                    found[name] = answer.json()
            runs = _scheduled(http, found["cutover"]["id"]) if "cutover" in found else []
    except (httpx.HTTPError, CutoverError, KeyError, ValueError) as exc:
        return Finding("deployments", api, False, f"cannot read them: {type(exc).__name__}: {exc}")
    if not found:
        return Finding("deployments", "(none on this server)", True, "fine for `pec-cutover run`; for the day: "
                       "`prefect deploy --all` then `pec-cutover schedule --plan P`, or `pec-cutover serve --plan P`")

    def same(given: object) -> bool:
        return isinstance(given, str) and bool(given) and \
            (Path(given) if Path(given).is_absolute() else base / given).resolve() == want

    problems = []
    other = {name: (d.get("parameters") or {}).get("plan_path") for name, d in found.items()
             if not same((d.get("parameters") or {}).get("plan_path"))}
    if other:
        listed = ", ".join(f"{name} → {given}" for name, given in other.items())
        problems.append(f"default plan_path is not this plan ({listed}): a run started from the UI without "
                        "plan_path=P would use another plan; set the plan_path values in prefect.yaml (definitions: "
                        "plan, and the rollback's) to P and `prefect deploy --all` again (or `pec-cutover serve --plan P`)")
    start = plan.window.start
    for run in runs:
        when = datetime.fromisoformat(str(run.get("expected_start_time")).replace("Z", "+00:00"))
        if not same((run.get("parameters") or {}).get("plan_path")):
            problems.append(f"cutover run {run['id']} is scheduled for plan_path {run['parameters'].get('plan_path')}, "
                            "not this plan: cancel it in the UI, then `pec-cutover schedule --plan P`")
        elif abs((when - start).total_seconds()) > 1:
            problems.append(f"cutover run {run['id']} is scheduled at {when.astimezone(start.tzinfo).isoformat()} but "
                            f"the plan's window starts {start.isoformat()}: cancel it in the UI, then "
                            "`pec-cutover schedule --plan P`")
    if len(runs) > 1:
        problems.append(f"{len(runs)} cutover runs are scheduled: cancel all but one in the UI")
    if problems:
        return Finding("deployments", ", ".join(found), False, "; ".join(problems))
    when = (f"the cutover scheduled at the window start {start.isoformat()} (run {runs[0]['id']})" if runs else
            "no cutover run scheduled yet (`pec-cutover schedule --plan P` at T-1, or `pec-cutover serve --plan P`)")
    return Finding("deployments", ", ".join(found), True, f"default to this plan; {when}")


def _scheduled(http: httpx.Client, deployment_id: str) -> list[dict]:
    """The cutover deployment's runs still to start (a POST: the locked server wants a CSRF token first)."""
    headers = {}
    token = http.get("/csrf-token", params={"client": "pec-cutover-doctor"})
    if token.status_code == 200:
        headers = {"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": "pec-cutover-doctor"}
    answer = http.post("/flow_runs/filter", headers=headers, json={
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING"]}}}, "sort": "EXPECTED_START_TIME_ASC"})
    answer.raise_for_status()
    return answer.json()


def _shared_ledger(plan: Plan) -> Finding:
    from cutover.ledger import open_ledger

    where = f"PostgreSQL ({plan.ledger_url})"
    try:
        ledger = open_ledger(plan)
    except CutoverError as exc:  # LedgerError / SecretError: one line, no password
        return Finding("ledger", where, False, str(exc))
    try:
        return Finding("ledger", ledger.where, True, f"{ledger.message_count()} messages recorded (forward)")
    except CutoverError as exc:
        return Finding("ledger", ledger.where, False, str(exc))
    finally:
        ledger.close()


def _ledger(plan: Plan) -> Finding:
    if plan.ledger_url:
        return _shared_ledger(plan)
    path = plan.ledger
    if not path.exists():
        writable = os.access(_existing_parent(path), os.W_OK)
        return Finding("ledger", str(path), writable, "not created yet (the first copy creates it)" if writable
                       else f"does not exist and {_existing_parent(path)} is not writable by this user")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            count = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Finding("ledger", str(path), False, f"not a readable ledger ({exc})")
    if not os.access(path, os.W_OK):
        return Finding("ledger", str(path), False, f"{count} messages recorded, but not writable by this user")
    return Finding("ledger", str(path), True, f"{count} messages recorded")


def _freeze(plan: Plan) -> Finding:
    path = freeze.marker_path(plan)
    holder = freeze.current(plan)
    if holder is None:
        ok = os.access(_existing_parent(path), os.W_OK)
        return Finding("freeze marker", str(path), ok, "free" if ok else "free, but its directory is not writable")
    if freeze.is_stale(holder):
        return Finding("freeze marker", str(path), False, f"STALE (its process is gone): {holder.describe()}; "
                       "a new run takes it over, or remove it after checking `pec-cutover dns status`")
    return Finding("freeze marker", str(path), False, f"held by {holder.describe()}: no new cutover, pre-stage or "
                   "DNS change by hand until it is lifted")


def _existing_parent(path: Path) -> Path:
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


__all__ = ["Finding", "diagnose"]
