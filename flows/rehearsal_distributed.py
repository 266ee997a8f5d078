"""The distributed rehearsal (``make rehearsal-distributed``): the day of ``make rehearsal``, copied by two workers.

The same scenarios as :mod:`flows.rehearsal` (GO; NO-GO → rollback, with the mail that follows the MX), on a sandbox
of its own (``.sandbox-distributed/``, ports 14000+, so it never clashes with ``make rehearsal``'s 10000+) whose
plan is distributed: the ledger in the sandbox's PostgreSQL (``ledger: {url: file:...}``), the Prefect server on
that PostgreSQL too, a process work pool with ``prefect deploy --all`` (copy-chunk included) and two
``prefect worker start`` processes standing for two machines. Every copy of the day (the pre-stages, the final
delta, the late-mail pass, the rollback's copy back) is split into chunks run on
whichever worker is free. At the end: ``worker <name>: <N> mailboxes`` per worker and each scenario's verdict.

Options: ``--scenarios go`` (or ``nogo``) plays one scenario only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / ".sandbox-distributed"
STATE = BASE / "state"
PREFECT_HOME = STATE / "prefect"
BASE_PORT = int(os.environ.get("REHEARSAL_DISTRIBUTED_BASE_PORT", "14000"))
PREFECT_PORT = BASE_PORT + 420
WEBHOOK_PORT = BASE_PORT + 480
POSTGRES_PORT = BASE_PORT + 432
WORKERS = ["worker-1", "worker-2"]
MAILBOXES = 8

os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["REHEARSAL_WEBHOOK_PORT"] = str(WEBHOOK_PORT)  # read by flows.rehearsal at import

from cutover.errors import CutoverError  # noqa: E402
from cutover.inventory import Inventory, load_inventory  # noqa: E402
from cutover.plan import Plan, load_plan  # noqa: E402
from cutover.sandbox import Sandbox, seed, write_environment  # noqa: E402
from cutover.sandbox._distributed import DistributedDay, distributed_plan_text, write_ledger_secret  # noqa: E402
from cutover.sandbox._users import write_secret_file  # noqa: E402
from cutover.sandbox._webhook import WebhookReceiver  # noqa: E402
from flows import rehearsal  # noqa: E402

console = rehearsal.console
PLAN_PATH = BASE / "plan.yaml"
day: DistributedDay | None = None

# What the committed rehearsal plan adds to a generated sandbox plan: the locked server, an operator, the ops channel.
_DAY_SECTIONS = f"""
prefect:
  host: 127.0.0.1
  port: {PREFECT_PORT}
  auth: "file:state/secrets/prefect-auth"
operators:
  - {{name: Rehearsal Operator, totp_secret: "file:state/secrets/operator-rehearsal.totp"}}
notify:
  webhooks:
    - {{name: ops-chat, url: "file:state/secrets/webhook-ops-chat.url"}}
"""


def write_plan() -> Path:
    """The distributed environment: a generated sandbox plan with the rehearsal's sections, made distributed."""
    env = write_environment(BASE, base_port=BASE_PORT, mailboxes=MAILBOXES, state_dir="state", surroundings=True)
    text = env.plan.read_text() + _DAY_SECTIONS
    env.plan.write_text(distributed_plan_text(text, postgres_port=POSTGRES_PORT, chunk_mailboxes=2,
                                              stale_after_s=20.0, pending_after_s=120.0, poll_s=1.0))
    return env.plan


def fresh_sandbox(plan: Plan, inventory: Inventory) -> Sandbox:
    """As the rehearsal's, but the sandbox's PostgreSQL keeps running (the Prefect server's database is on it):
    the other servers are stopped and their state wiped, the ledger database emptied."""
    box = Sandbox(plan)
    box.down([s for s in box.services if s != "postgres"])
    for child in STATE.iterdir():
        if child.name != "postgres" and child.resolve() != PREFECT_HOME.resolve():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    if rehearsal.stack is not None and rehearsal.stack.auth and plan.prefect.auth:
        write_secret_file(Path(plan.secret_ref(plan.prefect.auth).target), rehearsal.stack.auth)
    box.up()
    _empty_ledger(box)
    write_ledger_secret(box)
    for hook in plan.notify.webhooks:
        write_secret_file(Path(plan.secret_ref(hook.url).target), rehearsal.receiver.url(f"ok/{hook.name}"))
    box.ensure_users(inventory.mailboxes)
    report = seed(plan, inventory.mailboxes, rehearsal.MESSAGES_PER_MAILBOX, big_attachments=1, sandbox=box)
    console.print(f"seeded {report.messages} PEC messages ({report.bytes / 1e6:.0f} MB) into {len(inventory)} "
                  f"mailboxes on {plan.source.name}; ledger: PostgreSQL {box.postgres.url('ledger').split('@')[1]}")
    rehearsal._status(box)
    return box


def _empty_ledger(box: Sandbox) -> None:
    import psycopg

    with psycopg.connect(box.postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS ledger WITH (FORCE)")
    box.postgres.create_database("ledger")


def production_path(plan: Plan) -> None:
    """Server on PostgreSQL (locked), work pool, `prefect deploy --all`, two workers."""
    global day
    with rehearsal.step("set-up", "sandbox PostgreSQL, Prefect server on it (basic auth), pool, deploy --all, "
                                  f"{len(WORKERS)} workers"):
        box = Sandbox(plan)
        box.up()  # the secrets (server auth, operators) and PostgreSQL, with its ledger and prefect databases
        write_ledger_secret(box)
        rehearsal.receiver.log.unlink(missing_ok=True)
        rehearsal.receiver.start()
        day = DistributedDay(box, PLAN_PATH, PREFECT_HOME, PREFECT_PORT, workers=list(WORKERS))
        stack = day.start(deployments=(), plan_path=PLAN_PATH)
        rehearsal.stack = stack
        os.environ["PREFECT_API_URL"] = stack.api_url
        os.environ["PREFECT_API_AUTH_STRING"] = stack.auth or ""
        console.print(f"Prefect server {stack.api_url} on PostgreSQL 127.0.0.1:{POSTGRES_PORT}/prefect; "
                      f"`prefect deploy --all` registered readiness, prestage, cutover, rollback, copy-chunk; "
                      f"workers {', '.join(WORKERS)} on pool {rehearsal.POOL}")
        rehearsal.refused_401(stack.unauthenticated())


def mailboxes_per_worker(since: float) -> Counter:
    """Mailbox copies each worker did since ``since`` (epoch s), from the ``*-workers`` artifacts of every fan-out."""
    from datetime import datetime

    found: Counter = Counter()
    for art in rehearsal.stack._api("POST", "/artifacts/filter", {"artifacts": {"type": {"any_": ["table"]}}}):
        key = art.get("key") or ""
        created = datetime.fromisoformat(art["created"].replace("Z", "+00:00")).timestamp()
        if not key.endswith("-workers") or created < since:
            continue
        data = art.get("data")
        for row in json.loads(data) if isinstance(data, str) else data or []:
            found[row["worker"]] += int(row["mailboxes"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", choices=["both", "go", "nogo"], default="both")
    args = parser.parse_args(argv)
    started, since = time.monotonic(), time.time()
    plan_path = write_plan()
    rehearsal.REHEARSAL_PLAN = plan_path  # the scenarios read the plan path from the module
    rehearsal.PREFECT_HOME = PREFECT_HOME
    rehearsal.receiver = WebhookReceiver(port=WEBHOOK_PORT, log=PREFECT_HOME / "webhook" / "received.jsonl")
    rehearsal.fresh_sandbox = fresh_sandbox
    verdicts: dict[str, str] = {}
    per_worker: Counter = Counter()
    try:
        plan = load_plan(plan_path)
        inventory = load_inventory(plan)
        console.print(f"distributed rehearsal of {plan.domain}: {len(inventory)} mailboxes, ledger and Prefect on "
                      f"PostgreSQL, {len(WORKERS)} workers")
        production_path(plan)
        scenarios = [("scenario 1: GO", rehearsal.scenario_go), ("scenario 2: NO-GO → rollback", rehearsal.scenario_nogo)]
        if args.scenarios != "both":
            scenarios = scenarios[:1] if args.scenarios == "go" else scenarios[1:]
        for name, scenario in scenarios:
            verdicts[name] = scenario(plan, inventory)
        per_worker = mailboxes_per_worker(since)
    except CutoverError as exc:
        console.print(f"[red]distributed rehearsal failed:[/red] {exc}")
        return 1
    finally:
        if day is not None:
            day.stop()
        rehearsal.receiver.stop()
    for scenario, name, seconds in rehearsal.timings:
        console.print(f"{scenario} · {name}: {seconds:.1f} s", soft_wrap=True)
    for worker in WORKERS:
        console.print(f"worker {worker}: {per_worker.get(worker, 0)} mailboxes")
    for scenario, verdict in verdicts.items():
        console.print(f"[bold]{scenario}[/bold]: {verdict}", soft_wrap=True)
    both_worked = all(per_worker.get(w, 0) > 0 for w in WORKERS)
    if not both_worked:
        console.print("[red]UNEXPECTED: a worker copied nothing[/red]")
    console.print(f"distributed rehearsal done in {time.monotonic() - started:.0f} s; the sandbox is still up "
                  f"(stop it: .venv/bin/pec-cutover sandbox down --plan {plan_path})")
    return 0 if both_worked and all("UNEXPECTED" not in v for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
