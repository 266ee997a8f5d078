"""Who may switch the domain: a locked Prefect server and decisions by named operators (one-time codes).

The integration test runs a real ``prefect server start`` locked as ``pec-cutover server start`` locks it (basic
auth from the plan, CSRF on), a process worker, and a cutover deployment paused at a gate on the sandbox's real
servers. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cutover.errors import OperatorError, ServerLockError
from cutover.operators import current_code, identify, new_secret
from cutover.plan import load_plan
from cutover.prefect_server import server_environment
from cutover.sandbox._prefect import BIN, PrefectStack
from cutover.sandbox._process import port_open
from cutover.sandbox._users import write_secret_file

from .conftest import Day
from .test_cutover_day import mx_everywhere
from .test_deployments_run import free_port

REPO = Path(__file__).resolve().parents[2]
OPERATOR = "Maria Verdi"


def lock(plan_path: Path, secrets_dir: Path) -> tuple[str, str]:
    """Add prefect.auth and one operator to a plan; their secrets in mode-600 files. Returns (auth, totp)."""
    auth, totp = f"pec-cutover:{new_secret()}", new_secret()
    write_secret_file(secrets_dir / "prefect-auth", auth)
    write_secret_file(secrets_dir / "maria.totp", totp)
    data = yaml.safe_load(plan_path.read_text())
    data["prefect"] = {"auth": f"file:{secrets_dir / 'prefect-auth'}"}
    data["operators"] = [{"name": OPERATOR, "totp_secret": f"file:{secrets_dir / 'maria.totp'}"}]
    plan_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return auth, totp


# --- the lock and the identities, without a server ---------------------------------------------------------------

@pytest.fixture
def locked_plan(tmp_path):
    data = yaml.safe_load((REPO / "inventory" / "rehearsal" / "plan.yaml").read_text())
    data.pop("prefect"), data.pop("operators")
    data["inventory"] = str(REPO / "inventory" / "rehearsal" / "mailboxes.csv")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    unlocked = load_plan(path)
    auth, totp = lock(path, tmp_path / "secrets")
    return unlocked, load_plan(path), auth, totp


def test_server_refuses_to_start_unlocked_or_exposed(locked_plan):
    unlocked, locked, auth, _ = locked_plan
    with pytest.raises(ServerLockError, match="sets no prefect.auth"):
        server_environment(unlocked)
    with pytest.raises(ServerLockError, match="refusing to listen on 0.0.0.0 without authentication"):
        server_environment(unlocked, host="0.0.0.0", allow_no_auth=True)
    argv, env = server_environment(unlocked, allow_no_auth=True)
    assert "PREFECT_SERVER_API_AUTH_STRING" not in env and argv[-3:] == ["127.0.0.1", "--port", "4200"]
    argv, env = server_environment(locked, host="0.0.0.0")
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == auth and env["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    assert auth not in " ".join(argv)


def test_server_start_cli_refuses_in_one_line(tmp_path):
    data = yaml.safe_load((REPO / "inventory" / "rehearsal" / "plan.yaml").read_text())
    data.pop("prefect"), data.pop("operators")
    data["inventory"] = str(REPO / "inventory" / "rehearsal" / "mailboxes.csv")
    (tmp_path / "open.yaml").write_text(yaml.safe_dump(data))
    for args, words in [([], "sets no prefect.auth"),
                        (["--host", "0.0.0.0", "--no-auth"], "refusing to listen on 0.0.0.0 without authentication")]:
        proc = subprocess.run([str(BIN / "pec-cutover"), "server", "start", "--plan", str(tmp_path / "open.yaml"), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def test_the_production_template_locks_its_server_and_names_operators():
    """The plan an operator starts from: prefect.auth a file: reference, loopback, named operators with their own
    TOTP secret files; `server start` with the secret not created yet says so in one line and never starts open."""
    plan = load_plan(REPO / "inventory" / "example-production" / "plan.yaml")
    assert plan.prefect.auth and plan.prefect.auth.startswith("file:") and plan.prefect.host == "127.0.0.1"
    assert len(plan.operators) >= 2 and all(o.totp_secret.startswith("file:") for o in plan.operators)
    assert len({o.totp_secret for o in plan.operators}) == len(plan.operators)  # each their own secret
    proc = subprocess.run([str(BIN / "pec-cutover"), "server", "start", "--plan",
                           str(REPO / "inventory" / "example-production" / "plan.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "/etc/pec-cutover/prefect-auth does not exist" in proc.stderr, proc.stderr


@pytest.mark.parametrize("who,code,error", [
    (OPERATOR, "now", None),
    ("maria verdi", "now", None),                       # names compare case-insensitively
    ("Somebody Else", "now", "unknown operator 'Somebody Else'"),
    (OPERATOR, "", "a one-time code"),
    (OPERATOR, "000000", "wrong or expired"),
    (OPERATOR, "old", "wrong or expired"),              # a code from five minutes ago
])
def test_operator_identity(locked_plan, who, code, error):
    _, plan, _, totp = locked_plan
    code = {"now": current_code(totp), "old": current_code(totp, now=time.time() - 300)}.get(code, code)
    if code == "000000" and current_code(totp) == "000000":
        code = "000001"
    if error is None:
        assert identify(plan, who, code).verified and identify(plan, who, code).name == OPERATOR
    else:
        with pytest.raises(OperatorError, match=error) as exc:
            identify(plan, who, code)
        assert totp not in str(exc.value)


def test_without_operators_the_name_is_recorded_unverified(locked_plan):
    unlocked, *_ = locked_plan
    who = identify(unlocked, "Luca Neri", None)
    assert not who.verified and "not verified" in str(who)


# --- a locked server, a paused cutover ---------------------------------------------------------------------------

def test_locked_server_refuses_strangers_and_only_a_named_operator_decides(tmp_path, day_factory):
    day: Day = day_factory()
    PRINTED.clear()
    auth, totp = lock(day.plan_path, tmp_path / "control-secrets")
    plan = load_plan(day.plan_path)
    stack = PrefectStack(home=tmp_path / "prefect-home", port=free_port(), plan_path=day.plan_path)
    stack.start_server()
    try:
        stack.cli("work-pool", "create", "pec-cutover", "--type", "process")
        stack.cli("--no-prompt", "deploy", "--all")
        stack.start_worker("pec-cutover", "locked-worker")
        day.box.stop_service("webmail")  # the access gate will say NO-GO and, with on_nogo: ask, pause
        run = stack.run_deployment("cutover/cutover", {"plan_path": str(day.plan_path), "operator": OPERATOR})
        _wait_state(stack, run, "Paused")

        # Strangers: every request refused, and nothing changed.
        answers = {what: (status, refused) for what, status, refused in stack.unauthenticated(paused_run=run)}
        assert {what for what, (_, refused) in answers.items() if refused == 401} >= {
            "read the rollback deployment", "read the rollback deployment with a wrong password", "get a CSRF token",
            "read flow runs (with a borrowed CSRF token)", "create a rollback run (with a borrowed CSRF token)",
            "read the paused run", "resume the paused run (with a borrowed CSRF token)"}
        assert answers["create a rollback run without a CSRF token"] == (403, 403)
        assert all(status == refused for status, refused in answers.values()), answers
        # The same requests with the auth string are answered: the 401s above are the lock, not a broken path.
        assert stack.flow_run(run).state_name == "Paused"
        assert stack._api("POST", "/flow_runs/filter", {"limit": 5})
        time.sleep(3)
        assert stack.flow_run(run).state_name == "Paused" and stack.flow_runs("rollback/rollback") == []

        # The CLI takes the auth string from the plan: with it, history works; a shell without the plan cannot.
        # (Every command here, the server, the worker and `prefect deploy` included, ran as the runbook has it:
        # `pec-cutover server start --plan P`, `pec-cutover prefect --plan P -- ...`; no auth in the environment.)
        bare = stack.env
        assert "PREFECT_API_AUTH_STRING" not in bare
        ok = _pec(bare, "history", "--plan", str(day.plan_path))
        assert ok.returncode == 0 and run in ok.stdout.replace("\n", "")
        refused = _pec(bare, "history", "--plan", str(REPO / "nonexistent.yaml"))
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr

        # An unknown operator is refused by the CLI before anything is sent.
        before = _decisions(stack, run)
        out = _pec(bare, "gate", "decide", run, "--continue", "--operator", "Somebody Else", "--code", "123456",
                   "--reason", "I am not on the list", "--plan", str(day.plan_path))
        assert out.returncode == 2 and "unknown operator 'Somebody Else'" in out.stderr and "Traceback" not in out.stderr
        time.sleep(3)
        assert stack.flow_run(run).state_name == "Paused" and _decisions(stack, run) == before

        # A wrong code sent straight to the API (with the auth string) reaches the flow, which refuses it.
        wrong = "000000" if current_code(totp) != "000000" else "000001"
        stack.cli("api", "POST", f"/flow_runs/{run}/resume", "--data", json.dumps(
            {"run_input": {"action": "continue", "operator": OPERATOR, "code": wrong, "reason": "guessing"}}))
        refusal = _wait_for(lambda: [d for k, d in _decisions(stack, run).items() if "-refused-" in k])
        assert "wrong or expired one-time code" in refusal[0]
        _wait_state(stack, run, "Paused")

        # The named operator with the code of the moment decides: rollback; recorded with the verified name.
        out = _pec(bare, "gate", "decide", run, "--rollback", "--operator", OPERATOR, "--code", current_code(totp),
                   "--reason", "webmail down after the switch", "--plan", str(day.plan_path))
        assert out.returncode == 0 and "accepted" in out.stdout, out.stdout + out.stderr
        final = stack.wait_final(run, timeout=300)
        # The run list says what happened: a named state, and the domain and direction in the run's name.
        assert (final.state_type, final.state_name) == ("COMPLETED", "RolledBackToSource")
        assert final.name == "cutover pec.fnofi.it aruba→infocert"
        assert any(f"rollback by {OPERATOR}: webmail down" in d for d in _decisions(stack, run).values())
        assert mx_everywhere(day, "source")

        # A rollback started by hand needs the operator's code too.
        started = _pec(bare, "run", "rollback", "--plan", str(day.plan_path), "--reason", "again",
                       "--operator", OPERATOR, "--code", "12")
        assert started.returncode == 2 and "wrong or expired" in started.stderr
    finally:
        stack.stop()
        day.box.start_service("webmail")
    assert not port_open(stack.port), "the Prefect server outlived stop()"

    # Neither the auth string nor the operator's secret anywhere the run history or its files keep: the server's
    # database and logs, the worker's log, the reports, ansible-runner's artifacts, what the commands printed.
    from cutover.ansible_bridge import private_data_dir

    assert len(PRINTED) >= 5 and any("accepted" in p for p in PRINTED)
    for needle in (auth.split(":", 1)[1], totp):
        assert not any(needle in printed for printed in PRINTED), "a secret in a command's output"
        for path in [*stack.home.rglob("*"), *(day.plan.reports_dir or tmp_path).rglob("*"),
                     *private_data_dir(plan).rglob("*")]:
            if path.is_file():
                assert needle.encode() not in path.read_bytes(), f"a secret is in {path}"


PRINTED: list[str] = []  # what every pec-cutover command of the test printed (searched for secrets at the end)


def _pec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "pec-cutover"), *args], env={**env, "COLUMNS": "200"}, capture_output=True,
                          text=True, timeout=180, cwd=REPO)
    PRINTED.append(proc.stdout + proc.stderr)
    return proc


def _decisions(stack: PrefectStack, run: str) -> dict[str, str]:
    return {a["key"]: a.get("description") or "" for a in stack.artifacts(run)
            if (a.get("key") or "").startswith("gate-") and ("-decision" in a["key"] or "-refused-" in a["key"])}


def _wait_state(stack: PrefectStack, run: str, state: str, timeout: float = 180) -> None:
    _wait_for(lambda: stack.flow_run(run).state_name == state, timeout,
              f"run {run} not {state} (it is {stack.flow_run(run).state_name})")


def _wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout} s")
