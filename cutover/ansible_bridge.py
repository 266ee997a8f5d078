"""Run the project's playbooks through ansible-runner and return what happened as data.

One entry, :func:`run_playbook`. The TSIG secret never travels through extravars, the environment or the
command line (ansible-runner records all three under ``artifacts/``): it is written to a mode-600 vars file in
a private temporary directory outside the private data dir, loaded by the playbook with ``vars_files`` and
deleted after the run; tasks that touch it are ``no_log``. Results come from runner events, never stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cutover.errors import AnsibleError
from cutover.plan import Plan
from cutover.secrets import Secret

PLAYBOOK_DIR = Path(__file__).resolve().parent.parent / "playbooks"
REPORT_TASK = "pec-cutover report"  # the task in playbooks/tasks/update_rrsets.yml whose events carry the results
DATA_TASK = "pec-cutover data"  # tasks of other playbooks (roles/pec_client) whose ``msg`` is a result as data
KEEP_ARTIFACTS = 10
_ENV_FILES = ("extravars", "envvars", "cmdline", "passwords", "settings", "ssh_key")


@dataclass(frozen=True)
class TaskReport:
    """What one RRset update did, as reported by the playbook's report task (lines: ``name ttl IN type rdata``)."""

    record: str
    type: str
    changed: bool
    failed: bool
    dns_rc: str = ""
    reason: str = ""
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlaybookResult:
    """Outcome of one playbook run: runner status, per-RRset reports and failure reasons (from events)."""

    playbook: str
    status: str  # ansible-runner status: successful, failed, timeout, canceled
    rc: int
    check: bool
    changed: bool
    reports: list[TaskReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    artifacts_dir: Path | None = None
    duration_s: float = 0.0
    data: list[dict[str, Any]] = field(default_factory=list)  # ``msg`` of every "pec-cutover data" task, in order
    unreachable: list[str] = field(default_factory=list)  # "host: reason", when the caller tolerates them

    @property
    def ok(self) -> bool:
        return self.status == "successful" and not self.failures and not self.unreachable


def private_data_dir(plan: Plan) -> Path:
    """Where ansible-runner keeps its inputs and artifacts: ``<state dir>/ansible`` (state dir = the ledger's)."""
    return plan.ledger.parent / "ansible"


def run_playbook(
    plan: Plan,
    playbook: str,
    extravars: dict[str, Any],
    *,
    check: bool = False,
    diff: bool = True,
    secrets: dict[str, Secret | dict[str, Secret]] | None = None,
    playbook_dir: Path = PLAYBOOK_DIR,
    timeout_s: int = 300,
    tolerate_unreachable: bool = False,
) -> PlaybookResult:
    """Run ``playbook`` (a file in ``playbooks/``) against the plan's Ansible inventory and return its result.

    ``secrets`` (values, or mappings of name to value) are written to a private vars file whose path reaches the
    playbook as ``dns_secret_vars`` (and ``pec_secret_vars``); when ``None`` the plan's TSIG key is used (as
    ``dns_key_secret``). Raises :class:`AnsibleError` when Ansible could not run the playbook at all (missing
    executable, syntax error) or a host is unreachable, unless ``tolerate_unreachable`` (then they are listed in
    the result's ``unreachable``: one host down is a result, not a crash).
    """
    from ansible_runner.interface import init_runner  # imported here: slow to import, only DNS changes need it

    if secrets is None:
        secrets = {"dns_key_secret": plan.secret(plan.dns.tsig.secret)}
    if not (playbook_dir / playbook).is_file():
        raise AnsibleError(f"playbook {playbook} not found in {playbook_dir}")
    pdd = private_data_dir(plan)
    pdd.mkdir(parents=True, exist_ok=True)
    os.chmod(pdd, 0o700)
    # Without suppress_env_files the runner writes the first run's extravars, envvars and cmdline to env/ and
    # feeds them to every later run: a variable only an earlier playbook set (or its --check) would leak into
    # this one. Files left there by an earlier version are removed.
    for name in _ENV_FILES:
        (pdd / "env" / name).unlink(missing_ok=True)
    started = time.monotonic()
    with _secret_workspace(secrets) as (workdir, vars_file):
        cmdline = " ".join(x for x in ("--check" if check else "", "--diff" if diff else "") if x)
        try:
            # ansible_runner.run() = init_runner() + run(); split so the environment can be cut down first:
            # the runner copies os.environ and records it in artifacts/<id>/command, and env: secret references
            # mean passwords and the TSIG key may be in os.environ.
            runner = init_runner(
                private_data_dir=str(pdd),
                project_dir=str(playbook_dir),
                playbook=playbook,
                inventory=_inventory(plan),
                extravars={**extravars, "dns_secret_vars": str(vars_file), "pec_secret_vars": str(vars_file)},
                envvars=_envvars(workdir),
                cmdline=cmdline or None,
                rotate_artifacts=KEEP_ARTIFACTS,
                suppress_env_files=True,
                quiet=True,
                timeout=timeout_s,
            )
            runner.config.env = allowed_environment(runner.config.env, keep=_envvars(workdir))
            runner.run()
        except Exception as exc:  # ansible-runner raises ConfigurationError, OSError, ... before Ansible starts
            raise AnsibleError(f"ansible-runner could not start {playbook}: {type(exc).__name__}: {exc}") from None
        events = list(runner.events)
    reports, failures, unreachable, data = _read_events(events)
    result = PlaybookResult(
        playbook=playbook,
        status=runner.status,
        rc=runner.rc,
        check=check,
        changed=any(r.changed for r in reports) or any(_truthy(d.get("changed")) for d in data),
        reports=reports,
        failures=failures,
        artifacts_dir=Path(runner.config.artifact_dir),
        duration_s=time.monotonic() - started,
        data=data,
        unreachable=unreachable,
    )
    if unreachable and not tolerate_unreachable:
        raise AnsibleError(f"{playbook}: control host unreachable: {'; '.join(unreachable)}")
    if runner.status != "successful" and not failures and not unreachable:
        # Ansible stopped before any task reported (syntax error, missing vars file, rc 127): say where to look.
        raise AnsibleError(
            f"{playbook} did not run (status {runner.status}, rc {runner.rc}); see {runner.config.artifact_dir}/stdout"
        )
    return result


def _read_events(events: list[dict[str, Any]]) -> tuple[list[TaskReport], list[str], list[str], list[dict[str, Any]]]:
    reports: list[TaskReport] = []
    failures: list[str] = []
    unreachable: list[str] = []
    data_reports: list[dict[str, Any]] = []
    for ev in events:
        kind = ev.get("event")
        data = ev.get("event_data", {})
        res = data.get("res") or {}
        if kind == "runner_item_on_ok" and data.get("task") == REPORT_TASK:
            msg = res.get("msg") or {}
            reports.append(TaskReport(
                record=str(msg.get("record", "")),
                type=str(msg.get("type", "")),
                changed=_truthy(msg.get("changed")),
                failed=_truthy(msg.get("failed")),
                dns_rc=str(msg.get("dns_rc", "")),
                reason=str(msg.get("reason", "")),
                before=tuple(str(x) for x in msg.get("before") or ()),
                after=tuple(str(x) for x in msg.get("after") or ()),
            ))
        elif kind in ("runner_on_ok", "runner_item_on_ok") and data.get("task") == DATA_TASK:
            if isinstance(res.get("msg"), dict):
                data_reports.append({"host": data.get("host"), **res["msg"]})
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            host = f"{data.get('host')}: " if data.get("host") else ""
            failures.append(host + str(res.get("msg") or data.get("task") or "task failed"))
        elif kind == "runner_on_unreachable":
            unreachable.append(f"{data.get('host')}: {res.get('msg', '')}")
    return reports, failures, unreachable, data_reports


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def _inventory(plan: Plan) -> str | dict[str, Any]:
    if plan.dns.ansible_inventory is not None:
        if not plan.dns.ansible_inventory.is_file():
            raise AnsibleError(f"Ansible inventory {plan.dns.ansible_inventory} (dns.ansible_inventory) does not exist")
        return str(plan.dns.ansible_inventory)
    # No inventory named: run the updates from this machine, as the host named like the primary.
    return {"all": {"hosts": {plan.dns.primary.name: {"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable}}}}


# What Ansible needs from the environment; everything else (possibly env: secrets) stays out of it.
_ENV_ALLOWED_PREFIXES = ("ANSIBLE_", "AWX_", "RUNNER_", "LC_", "PYTHON")
_ENV_ALLOWED = {"PATH", "HOME", "LANG", "TMPDIR", "USER", "LOGNAME", "SHELL", "TZ", "VIRTUAL_ENV",
                "ORIGINAL_STDOUT_CALLBACK", "JOB_ID", "AD_HOC_COMMAND_ID", "PROJECT_UPDATE_ID", "INVENTORY_UPDATE_ID"}


def allowed_environment(env: dict[str, str], *, keep: dict[str, str]) -> dict[str, str]:
    """The runner's environment cut down to what Ansible needs, plus our own settings."""
    cut = {k: v for k, v in env.items() if k in _ENV_ALLOWED or k.startswith(_ENV_ALLOWED_PREFIXES)}
    cut.update(keep)
    return cut


def _envvars(workdir: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        "LC_ALL": "C.UTF-8",  # Ansible refuses to start without a UTF-8 locale
        "LANG": "C.UTF-8",
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")]),  # else rc 127
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_KEEP_REMOTE_FILES": "0",
        # Module payloads (and their arguments) through stdin, not temp files: fewer files, faster tasks.
        "ANSIBLE_PIPELINING": "1",
        # Module payloads carry their arguments (the secret): keep their temp files in the private workdir.
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(workdir / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }


def _revealed(value: Secret | dict[str, Secret]) -> str | dict[str, str]:
    return value.reveal() if isinstance(value, Secret) else {k: v.reveal() for k, v in value.items()}


@contextmanager
def _secret_workspace(secrets: dict[str, Secret | dict[str, Secret]]) -> Iterator[tuple[Path, Path]]:
    """A mode-700 temp dir with a mode-600 vars file holding ``secrets``; removed whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="pec-cutover-ansible-"))
    try:
        (workdir / "tmp").mkdir(mode=0o700)
        vars_file = workdir / "secret-vars.yml"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # JSON is YAML: quoting is exact whatever characters the secret holds.
            fh.write(json.dumps({name: _revealed(s) for name, s in secrets.items()}))
        yield workdir, vars_file
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["run_playbook", "PlaybookResult", "TaskReport", "private_data_dir", "PLAYBOOK_DIR"]
