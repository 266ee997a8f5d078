"""A distributed day on one machine: the sandbox's PostgreSQL under a Prefect server and the shared ledger, a process
work pool and N workers standing for N machines (``make rehearsal-distributed``, tests/flows/test_fanout_kill.py).

Nothing here imports Prefect: the server and the workers are the ``prefect`` commands an operator runs
(:class:`cutover.sandbox._prefect.PrefectStack`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cutover.errors import SandboxError
from cutover.sandbox._prefect import PrefectStack
from cutover.sandbox._sandbox import Sandbox
from cutover.sandbox._users import write_secret_file

POOL = "pec-cutover"
LEDGER_SECRET = "ledger-url"  # under <sandbox state>/secrets: the URL holds the password


def distributed_plan_text(text: str, *, postgres_port: int, chunk_mailboxes: int, stale_after_s: float = 20.0,
                          pending_after_s: float = 120.0, poll_s: float = 1.0) -> str:
    """A sandbox plan (``write_environment``'s text) made distributed: the ledger in the sandbox's PostgreSQL (the
    URL in a mode-600 file the plan references), PostgreSQL started with the sandbox, the copy fanned out."""
    state = re.search(r"^  state_dir: (.+)$", text, re.M)
    if state is None or not re.search(r"^ledger: .+$", text, re.M) or not re.search(r"^copy:\n", text, re.M):
        raise SandboxError("not a sandbox plan (no sandbox.state_dir, ledger or copy section)")
    state_dir = state.group(1).strip()
    text = re.sub(r"^ledger: .+$", f'ledger: {{url: "file:{state_dir}/secrets/{LEDGER_SECRET}", '
                                   f'state_dir: "{state_dir}/state"}}', text, count=1, flags=re.M)
    text = re.sub(r"^(  state_dir: .+)$", rf"\1\n  postgres_port: {postgres_port}", text, count=1, flags=re.M)
    return re.sub(r"^copy:\n", f"copy:\n  fan_out: {{chunk_mailboxes: {chunk_mailboxes}, stale_after_s: "
                               f"{stale_after_s}, pending_after_s: {pending_after_s}, poll_s: {poll_s}}}\n", text, count=1, flags=re.M)


def write_ledger_secret(box: Sandbox) -> Path:
    """The ledger URL of the sandbox's PostgreSQL, where the distributed plan's reference points (mode 600)."""
    if box.postgres is None:
        raise SandboxError("the plan runs no sandbox postgres (sandbox.postgres_port)")
    path = Path(box.plan.sandbox.state_dir) / "secrets" / LEDGER_SECRET
    write_secret_file(path, box.postgres.url("ledger"))
    return path


@dataclass
class DistributedDay:
    """The Prefect server on the sandbox's PostgreSQL, the pool with its deployments, and the workers."""

    box: Sandbox
    plan_path: Path
    home: Path
    port: int
    workers: list[str] = field(default_factory=lambda: ["worker-1", "worker-2"])
    limit: int | None = 1  # chunk runs at once per worker (each copies in lanes): the chunks spread over workers
    stack: PrefectStack | None = None
    worker_pids: dict[str, int] = field(default_factory=dict)

    def start(self, deployments: tuple[str, ...] = ("copy-chunk",), plan_path: Path | None = None) -> PrefectStack:
        """Server (database: the sandbox's ``prefect``), ``work-pool create``, ``deploy`` of ``deployments``
        (``()`` for ``--all``), one worker per name. With ``plan_path`` the server is locked as that plan says
        (``pec-cutover server start --plan P``) and every command carries its auth string."""
        if self.box.postgres is None:
            raise SandboxError("the plan runs no sandbox postgres (sandbox.postgres_port)")
        self.stack = PrefectStack(home=self.home, port=self.port, plan_path=plan_path, server_env={
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.box.postgres.url("prefect", driver="postgresql+asyncpg")})
        self.stack.start_server()
        self.stack.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        names = [arg for name in deployments for arg in ("--name", name)] if deployments else ["--all"]
        self.stack.cli("--no-prompt", "deploy", *names)
        for name in self.workers:
            self.worker_pids[name] = self.stack.start_worker(POOL, name, limit=self.limit)
        return self.stack

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()


__all__ = ["DistributedDay", "distributed_plan_text", "write_ledger_secret", "POOL"]
