"""``pec-cutover doctor``: which Prefect server, plan, ledger and freeze marker this shell would use, and
whether each is reachable. Findings are data (a failed one is an answer, not a crash); the CLI renders them.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import httpx

from cutover import freeze
from cutover.errors import CutoverError
from cutover.plan import Plan, load_plan


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
    found.append(_server(plan, env, timeout))
    found.append(_ledger(plan))
    found.append(_freeze(plan))
    return found


def _server(plan: Plan, env: Mapping[str, str], timeout: float) -> Finding:
    url = env.get("PREFECT_API_URL", "")
    if not url:
        return Finding("Prefect server (PREFECT_API_URL)", "(unset)", False,
                       f"runs would go to a temporary local server, not the day's: export PREFECT_API_URL={plan.prefect.api_url}")
    auth = None
    if plan.prefect.auth:
        try:
            user, _, password = plan.secret(plan.prefect.auth).reveal().partition(":")
            auth = (user, password)
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


def _ledger(plan: Plan) -> Finding:
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
