"""A long-running Prefect server and its workers, started the way the runbook tells an operator to.

The production path of the day: ``prefect server start``, a process work pool, ``prefect deploy --all`` from
``prefect.yaml`` (or ``pec-cutover serve``), ``prefect worker start``, and runs started with
``prefect deployment run``. The rehearsal and the tests drive exactly those commands through
:class:`PrefectStack`; nothing here imports Prefect (it runs the ``prefect`` console script of this Python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cutover.errors import SandboxError
from cutover.plan import Plan, load_plan
from cutover.prefect_server import auth_string
from cutover.sandbox._process import has_exited, port_open, spawn, stop_pid, tail, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SERVER_START_TIMEOUT_S = 120.0  # a cold start runs the database migrations: ~15 s idle, much more on a loaded CI


@dataclass(frozen=True)
class FlowRunView:
    """A flow run as the API shows it (ids and names only: parameters stay on the server)."""

    id: str
    name: str
    state_type: str
    state_name: str
    message: str
    expected_start: datetime | None
    started: datetime | None


@dataclass
class PrefectStack:
    """A Prefect server on ``127.0.0.1:port`` with its database under ``home``, plus the processes started
    against it (workers, ``pec-cutover serve``). ``stop()`` ends them all. With a ``plan`` whose ``prefect.auth``
    is set, the server is locked as ``pec-cutover server start`` locks it and every client carries the string."""

    home: Path
    port: int
    plan_path: Path | None = None
    pec_cutover_home: Path = REPO
    extra_env: dict[str, str] = field(default_factory=dict)
    # Only the server's environment (its database URL holds a password: workers and clients never need it).
    server_env: dict[str, str] = field(default_factory=dict, repr=False)
    _pids: list[tuple[int, str, Path]] = field(default_factory=list, repr=False)
    _auth: str | None = field(default=None, init=False, repr=False)

    @property
    def plan(self) -> Plan | None:
        return load_plan(self.plan_path) if self.plan_path is not None else None

    @property
    def auth(self) -> str | None:
        """The plan's auth string, resolved once: the server keeps the one it started with."""
        if self._auth is None and self.plan_path is not None:
            self._auth = auth_string(load_plan(self.plan_path))
        return self._auth

    def _prefect_argv(self, *args: str) -> list[str]:
        """``prefect ARGS``; with a plan, as the runbook has it: ``pec-cutover prefect --plan P -- ARGS`` (the
        wrapper puts the plan's auth string in the environment of ``prefect``, never on its command line)."""
        if self.plan_path is None:
            return [str(BIN / "prefect"), *args]
        return [str(BIN / "pec-cutover"), "prefect", "--plan", str(self.plan_path), "--", *args]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        """What an operator's shell sets for the day (see the runbook), for every command run against the server."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {**keep,
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                "PEC_CUTOVER_HOME": str(self.pec_cutover_home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "LC_ALL": "C.UTF-8",
                "LANG": "C.UTF-8",
                # Workers and served deployments poll for scheduled runs; the default 10-15 s wastes a rehearsal.
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                **self.extra_env}

    # --- processes -------------------------------------------------------------------------------------------
    def start_server(self) -> None:
        """``prefect server start`` on 127.0.0.1 (its database under ``home``); returns once the API is healthy."""
        if port_open(self.port):
            raise SandboxError(f"cannot start a Prefect server on 127.0.0.1:{self.port}: the port is taken "
                               "(another Prefect server? stop it or pick another port)")
        self.home.mkdir(parents=True, exist_ok=True)
        if self.plan_path is not None:  # the runbook's command; it refuses to start unlocked
            argv = [str(BIN / "pec-cutover"), "server", "start", "--plan", str(self.plan_path), "--host", "127.0.0.1",
                    "--port", str(self.port)]
        else:
            argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        pid = self._spawn("server", argv, env={**self.env, **self.server_env})
        log = self.home / "server.log"
        if not wait_until(lambda: self._healthy() or has_exited(pid), timeout=SERVER_START_TIMEOUT_S, interval=0.5) \
                or has_exited(pid):
            self.stop()
            raise SandboxError(f"the Prefect server did not become healthy on {self.api_url}: {tail(log)}")

    def start_worker(self, pool: str, name: str, cwd: Path | None = None, limit: int | None = None) -> int:
        """``prefect worker start --pool POOL`` (a process worker: each flow run in its own subprocess), started in
        ``cwd`` (the checkout by default; a service may start elsewhere: prefect.yaml's pull step moves every run to
        ``PEC_CUTOVER_HOME``)."""
        extra = ["--limit", str(limit)] if limit else []  # flow runs at once on this worker
        return self._spawn(f"worker-{name}", self._prefect_argv("worker", "start", "--pool", pool, *extra, "--name",
                                                                name), cwd=cwd)

    def start_serve(self, plan_path: Path) -> None:
        """``pec-cutover serve --plan P``: the four deployments served from one process."""
        self._spawn("serve", [str(BIN / "pec-cutover"), "serve", "--plan", str(plan_path)])

    def stop(self) -> None:
        """Stop every process started here, newest first (workers before the server)."""
        while self._pids:
            pid, program, marker = self._pids.pop()
            stop_pid(pid, program, marker, timeout=15.0)

    def _spawn(self, label: str, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
        log = self.home / f"{label}.log"
        pid = spawn(argv, log_file=log, pid_file=self.home / f"{label}.pid", env=env or self.env,
                    cwd=cwd or self.pec_cutover_home)
        # pid_matches() needs a program and a string of its command line: the last argument is unique here.
        # `pec-cutover server start` and `pec-cutover prefect` exec `prefect`: that is the name to recognise.
        program = "prefect" if argv[1:2] in (["server"], ["prefect"]) else Path(argv[0]).name
        self._pids.append((pid, program, Path(argv[-1])))
        return pid

    # --- commands --------------------------------------------------------------------------------------------
    def cli(self, *args: str, program: str = "prefect", timeout: float = 180.0) -> str:
        """Run ``prefect ARGS`` (or another console script of this Python) as an operator would; its output.

        A non-zero exit raises :class:`SandboxError` with the command's last lines.
        """
        argv = self._prefect_argv(*args) if program == "prefect" else [str(BIN / program), *args]
        proc = subprocess.run(argv, env=self.env, cwd=self.pec_cutover_home, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            last = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
            raise SandboxError(f"`{program} {' '.join(args)}` failed (exit {proc.returncode}): {last}")
        return proc.stdout

    def run_deployment(self, name: str, parameters: dict[str, str] | None = None, *extra: str) -> str:
        """``prefect deployment run NAME -p k=v ...``: the new flow run's id."""
        args = ["deployment", "run", name]
        for key, value in (parameters or {}).items():
            args += ["-p", f"{key}={value}"]
        out = self.cli(*args, *extra)
        for line in out.splitlines():
            if "UUID:" in line:
                return line.split("UUID:", 1)[1].strip()
        raise SandboxError(f"`prefect deployment run {name}` printed no run id: {out.strip()[-300:]}")

    def run_from_ui(self, name: str, parameters: dict[str, str]) -> str:
        """What the UI's **Run** (custom run) sends for deployment ``flow/deployment``: one authenticated POST to
        ``/deployments/{id}/create_flow_run`` with the form's values as typed (strings); the new run's id."""
        flow_name, _, dep_name = name.partition("/")
        deployment = self._api("GET", f"/deployments/name/{flow_name}/{dep_name}")
        run = self._api("POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
        return run["id"]

    # --- the API, read only ----------------------------------------------------------------------------------
    def flow_run(self, run_id: str) -> FlowRunView:
        data = self._api("GET", f"/flow_runs/{run_id}")
        state = data.get("state") or {}
        return FlowRunView(data["id"], data["name"], state.get("type", ""), state.get("name", ""),
                           state.get("message") or "", _when(data.get("expected_start_time")),
                           _when(data.get("start_time")))

    def flow_runs(self, deployment: str) -> list[FlowRunView]:
        """Every run of deployment ``flow/deployment``, oldest first."""
        flow_name, _, dep_name = deployment.partition("/")
        dep = self._api("GET", f"/deployments/name/{flow_name}/{dep_name}")
        runs = self._api("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}},
                                                        "sort": "EXPECTED_START_TIME_ASC"})
        return [self.flow_run(r["id"]) for r in runs]

    def wait_deployment(self, deployment: str, timeout: float = 90.0) -> None:
        """Wait until ``flow/deployment`` is registered (``serve`` registers its deployments as it starts)."""
        flow_name, _, dep_name = deployment.partition("/")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._api("GET", f"/deployments/name/{flow_name}/{dep_name}")
                return
            except SandboxError:
                if time.monotonic() > deadline:
                    raise SandboxError(f"deployment {deployment} not registered on {self.api_url} after {timeout:.0f} s: "
                                       f"{tail(self.home / 'serve.log')}") from None
                time.sleep(1.0)

    def wait_final(self, run_id: str, timeout: float = 300.0) -> FlowRunView:
        """Poll a flow run until it reaches a final state (or raise after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run.state_type in FINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise SandboxError(f"flow run {run_id} ({run.name}) still {run.state_name} after {timeout:.0f} s")
            time.sleep(1.0)

    def artifacts(self, run_id: str) -> list[dict]:
        """The artifacts a flow run left (key, type, data)."""
        return self._api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})

    def unauthenticated(self, paused_run: str | None = None) -> list[tuple[str, int, int]]:
        """What the API answers a caller without the auth string, one request per check: (what was tried, the HTTP
        status, the status that means refused). Reads and the CSRF token are plain GETs. A change (read runs
        through the filter, create a rollback run, resume a paused run) is sent with a valid CSRF token borrowed
        from an authenticated client, so that the auth check itself must answer (401); one change without any
        token shows CSRF protection answering first (403). A wrong password is tried too."""
        base = self.api_url
        rollback = self._api("GET", "/deployments/name/rollback/rollback")
        borrowed = self._csrf_headers("borrowed-by-an-intruder")
        resume = {"run_input": {"action": "continue", "operator": "intruder", "code": "123456", "reason": "no auth"}}
        tries: list[tuple[str, str, str, dict | None, dict, tuple | None, int]] = [
            ("read the rollback deployment", "GET", "/deployments/name/rollback/rollback", None, {}, None, 401),
            ("read the rollback deployment with a wrong password", "GET", "/deployments/name/rollback/rollback",
             None, {}, (self.auth.split(":", 1)[0] if self.auth else "pec-cutover", "wrong-password"), 401),
            ("get a CSRF token", "GET", "/csrf-token?client=intruder", None, {}, None, 401),
            ("read flow runs (with a borrowed CSRF token)", "POST", "/flow_runs/filter", {"limit": 5}, borrowed,
             None, 401),
            ("create a rollback run (with a borrowed CSRF token)", "POST",
             f"/deployments/{rollback['id']}/create_flow_run", {}, borrowed, None, 401),
            ("create a rollback run without a CSRF token", "POST", f"/deployments/{rollback['id']}/create_flow_run",
             {}, {}, None, 403)]
        if paused_run:
            tries += [("read the paused run", "GET", f"/flow_runs/{paused_run}", None, {}, None, 401),
                      ("resume the paused run (with a borrowed CSRF token)", "POST", f"/flow_runs/{paused_run}/resume",
                       resume, borrowed, None, 401)]
        out = []
        for what, method, path, body, headers, auth, refused in tries:
            answer = httpx.request(method, f"{base}{path}", json=body, headers=headers, auth=auth, timeout=30.0)
            out.append((what, answer.status_code, refused))
        return out

    def _csrf_headers(self, client: str) -> dict[str, str]:
        """The CSRF headers of an authenticated client (none when the server has no CSRF protection)."""
        auth = tuple(self.auth.split(":", 1)) if self.auth else None
        token = httpx.get(f"{self.api_url}/csrf-token", params={"client": client}, auth=auth, timeout=30.0)
        if token.status_code != 200:
            return {}
        return {"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": client}

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _api(self, method: str, path: str, body: dict | None = None):
        auth = tuple(self.auth.split(":", 1)) if self.auth else None
        headers = {"Content-Type": "application/json"}
        if method != "GET":  # the server's CSRF protection: a token per client, from the (authenticated) API
            headers.update(self._csrf_headers("pec-cutover-sandbox"))
        # Like Prefect's own client: a busy server (its SQLite locked) answers 503/502/429 before it commits
        # anything, and the request is sent again after a pause.
        for pause in (1.0, 2.0, 4.0, 8.0, None):
            response = httpx.request(method, f"{self.api_url}{path}",
                                     content=json.dumps(body) if body is not None else None,
                                     headers=headers, timeout=30.0, auth=auth)
            if response.status_code not in (429, 502, 503) or pause is None:
                break
            time.sleep(pause)
        if response.status_code >= 400:
            raise SandboxError(f"Prefect API {method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
