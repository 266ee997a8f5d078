"""The rehearsal (``make rehearsal``): the whole cutover day, twice, on the sandbox's real servers.

Scenario 1, GO: fresh sandbox, seed, readiness, TTL lowered, pre-stage, new mail arriving at the source during
the day, cutover → GO (every message verified on the target, MX on the target everywhere).
Scenario 2, NO-GO: fresh sandbox, same preparation, the target webmail goes down after the switch → the access
gate says NO-GO and pauses; mail reaches the target meanwhile; the operator (played here through the same call
as ``pec-cutover gate decide``) chooses rollback → MX back on the source and that mail copied back.

Both scenarios carry real mail that follows the MX: from before the switch until after GO (scenario 1) and across
the NO-GO and the rollback (scenario 2) a PEC message every half second is sent by SMTP to whichever provider the
sandbox's resolver names as MX at that moment (``cutover.sandbox._sender``). After the late-mail pass (scenario 1)
or the second rollback (scenario 2) every message sent is looked up by Message-ID and SHA-256 on the side that now
serves the domain: ``mail flow: sent N, on <provider> exactly once N, lost 0, duplicated 0``.

Both scenarios go through the production path: a long-running, locked Prefect server (``pec-cutover server start``), the
deployments of ``prefect.yaml`` (``prefect deploy --all``) and a process worker; readiness runs as a deployment
run, and scenario 2 ends with a second rollback started on demand as a deployment run (as from the UI).
Runs are recorded in that server's SQLite database under ``.sandbox/prefect`` (kept across rehearsals).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
REHEARSAL_PLAN = REPO / "inventory" / "rehearsal" / "plan.yaml"
PREFECT_HOME = REPO / ".sandbox" / "prefect"
MESSAGES_PER_MAILBOX = 60
POOL = "pec-cutover"
STREAM_INTERVAL_S = 0.5  # the mail that follows the MX: one PEC message every half second, by SMTP

# Before Prefect is imported: keep the rehearsal's run history with the sandbox, and no telemetry.
os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from checks.dns import dns_status, render_status  # noqa: E402
from cutover.dnschange import set_ttl  # noqa: E402
from cutover.errors import CutoverError  # noqa: E402
from cutover.inventory import Inventory, load_inventory  # noqa: E402
from cutover.operators import current_code  # noqa: E402
from cutover.mailsync import copy_mailboxes  # noqa: E402
from cutover.plan import Plan, load_plan  # noqa: E402
from cutover.sandbox import Sandbox, seed  # noqa: E402
from cutover.sandbox._prefect import PrefectStack  # noqa: E402
from cutover.sandbox._sender import (MailStream, MxSender, load_mx_listeners, pec_stream_messages, prove,  # noqa: E402
                                     summarise)
from cutover.sandbox.pec_messages import Signer  # noqa: E402
from cutover.sandbox._users import write_secret_file  # noqa: E402
from cutover.sandbox._webhook import WebhookReceiver  # noqa: E402

console = Console()
timings: list[tuple[str, str, float]] = []
stack: PrefectStack | None = None  # the day's server, locked as the plan says; made by production_path()
# The ops channel's stand-in; its log lives beside the run history (kept across scenarios).
receiver = WebhookReceiver(port=int(os.environ.get("REHEARSAL_WEBHOOK_PORT", "10480")),
                           log=PREFECT_HOME / "webhook" / "received.jsonl")


@contextlib.contextmanager
def step(scenario: str, name: str) -> Iterator[None]:
    """Time one rehearsal step and print it as it starts."""
    console.rule(f"[bold]{scenario}[/bold] · {name}")
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings.append((scenario, name, time.monotonic() - t0))


def fresh_sandbox(plan: Plan, inventory: Inventory) -> Sandbox:
    """Stop our servers and wipe the sandbox state (not the Prefect history), then start and seed again."""
    box = Sandbox(plan)
    box.down()
    state = plan.sandbox.state_dir
    if state.exists():
        for child in state.iterdir():
            if child.resolve() != PREFECT_HOME.resolve():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    if stack is not None and stack.auth and plan.prefect.auth:  # the running server keeps its auth string
        write_secret_file(Path(plan.secret_ref(plan.prefect.auth).target), stack.auth)
    box.up()
    for hook in plan.notify.webhooks:  # the plan's webhook URLs point at the local receiver
        write_secret_file(Path(plan.secret_ref(hook.url).target), receiver.url(f"ok/{hook.name}"))
    box.ensure_users(inventory.mailboxes)
    report = seed(plan, inventory.mailboxes, MESSAGES_PER_MAILBOX, big_attachments=1, sandbox=box)
    console.print(f"seeded {report.messages} PEC messages ({report.bytes / 1e6:.0f} MB) into {len(inventory)} "
                  f"mailboxes on {plan.source.name}")
    _status(box)
    return box


def production_path(plan: Plan) -> None:
    """The long-running server the runbook sets up: server (locked), work pool, `prefect deploy --all`, a worker."""
    global stack
    stack = PrefectStack(home=PREFECT_HOME, port=int(os.environ.get("REHEARSAL_PREFECT_PORT", plan.prefect.port)),
                         plan_path=REHEARSAL_PLAN)
    with step("set-up", "Prefect server (basic auth), work pool, deploy --all, worker (the production path)"):
        Sandbox(plan).up()  # generates the server's auth string and the operators' secrets on a first run
        receiver.log.unlink(missing_ok=True)
        receiver.start()
        stack.start_server()
        os.environ["PREFECT_API_URL"] = stack.api_url  # the in-process runs below report to the same server
        os.environ["PREFECT_API_AUTH_STRING"] = stack.auth or ""
        stack.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")  # kept across rehearsals
        stack.cli("--no-prompt", "deploy", "--all")
        stack.start_worker(POOL, "rehearsal-worker")
        console.print(f"Prefect server {stack.api_url} (database under {PREFECT_HOME}); `prefect deploy --all` "
                      f"registered readiness, prestage, cutover, rollback; worker on pool {POOL}")
        refused_401(stack.unauthenticated())


def refused_401(answers: list[tuple[str, int, int]]) -> None:
    """One line per request made without the auth string (or with a wrong one): refused means 401 from the auth
    check; the one change sent without a CSRF token meets CSRF protection first (403). Anything else fails the
    rehearsal."""
    bad = []
    for what, status, refused in answers:
        kind = "unauthenticated request" if refused == 401 else "change without a CSRF token"
        if status == refused:
            console.print(f"prefect api: {kind} refused ({status}): {what}")
        else:
            console.print(f"[red]prefect api: {kind} NOT refused ({status}, wanted {refused}): {what}[/red]")
            bad.append(what)
    if bad:
        raise CutoverError(f"the Prefect server did not refuse requests without credentials: {', '.join(bad)}")


def deployment_run(name: str, **parameters: str) -> str:
    """`prefect deployment run NAME -p ...`, picked up by the worker; the run's report, once it completed."""
    console.print(f"prefect deployment run '{name}' " + " ".join(
        f"-p {k}='{'******' if k.endswith('code') else v}'" for k, v in parameters.items()))
    run_id = stack.run_deployment(name, parameters)
    run = stack.wait_final(run_id, timeout=600)
    console.print(f"deployment run {run.name}: {run.state_name}")
    if run.state_type != "COMPLETED":
        raise CutoverError(f"deployment run {name} ended {run.state_name}: {run.message}")
    reports = [a.get("data") or "" for a in stack.artifacts(run_id) if (a.get("key") or "").endswith("-report")]
    return reports[0] if reports else ""


def prepare(plan: Plan, inventory: Inventory, scenario: str) -> Sandbox:
    from flows.prestage import prestage

    with step(scenario, "sandbox up + seed"):
        box = fresh_sandbox(plan, inventory)
    with step(scenario, "readiness (T-7 days), as a deployment run on the worker"):
        report = deployment_run("readiness/readiness", plan_path=str(REHEARSAL_PLAN))
        console.print(next((line for line in report.splitlines() if line.startswith("**Verdict")), report[-300:]))
    with step(scenario, "lower MX TTL (T-2 days, compressed to the old TTL)"):
        change = set_ttl(plan, "cutover")
        console.print(f"MX TTL {plan.dns.ttl.normal}s → {plan.dns.ttl.cutover}s (serial {change.serial_before} → "
                      f"{change.serial_after}); waiting {plan.dns.ttl.normal}s so no cache holds the old TTL")
        time.sleep(plan.dns.ttl.normal + 0.5)
    with step(scenario, "pre-stage copy (T-1 day)"):
        console.print(prestage(plan_path=str(REHEARSAL_PLAN)))
    return box


def scenario_go(plan: Plan, inventory: Inventory) -> str:
    from flows.cutover_day import cutover

    from flows.prestage import prestage

    scenario = "scenario 1: GO"
    box = prepare(plan, inventory, scenario)
    stream = start_mail_stream(box, inventory, "go")
    try:
        with step(scenario, "new mail arrives at the source during the day"):
            for m in inventory.mailboxes[:3]:
                box.deliver("source", m.address, _mail(f"morning-{m.local_part}", m.address))
            console.print("3 new PEC messages delivered to aruba (IMAP APPEND), and the stream by the MX goes on")
        with step(scenario, "cutover flow"):
            result = cutover(plan_path=str(REHEARSAL_PLAN), operator="rehearsal")
            _phases(result)
    finally:
        deliveries = stop_mail_stream(stream, plan, "GO")
    with step(scenario, "late-mail pass after GO (pre-stage again, as the runbook asks)"):
        console.print(prestage(plan_path=str(REHEARSAL_PLAN)))
    with step(scenario, "independent verification"):
        check = copy_mailboxes(plan, inventory.mailboxes, verify_only=True)
        console.print(f"verify-only pass: {check.verified_count}/{len(inventory)} mailboxes identical "
                      f"({check.total_messages} messages, SHA-256 on both sides)")
        console.print(render_status(dns_status(plan, "target"), title="DNS: MX on InfoCert everywhere?"))
        flow_line, flow_ok = mail_flow(box, "target", deliveries)
    ok = result["verdict"] == "GO" and check.ok and flow_ok
    return f"{result['verdict']}; verified {check.verified_count}/{len(inventory)}; {flow_line}" + \
        ("" if ok else " (UNEXPECTED)")


def scenario_nogo(plan: Plan, inventory: Inventory) -> str:
    from flows.cutover_day import cutover
    from flows.history import decide_gate
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    scenario = "scenario 2: NO-GO → rollback"
    box = prepare(plan, inventory, scenario)
    member = inventory.mailboxes[0]
    out: dict = {}
    stream = start_mail_stream(box, inventory, "nogo")
    try:
        with step(scenario, "cutover flow until the access gate pauses (webmail down)"):
            box.stop_service("webmail")
            console.print("InfoCert webmail stopped: the access gate will say NO-GO and, with on_nogo: ask, pause")
            thread = threading.Thread(target=lambda: out.update(result=_catch(lambda: cutover(
                plan_path=str(REHEARSAL_PLAN), operator="rehearsal"))), daemon=True)
            thread.start()
            run_id = None
            with get_client(sync_client=True) as client:
                while run_id is None and thread.is_alive():
                    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
                    run_id = str(runs[0].id) if runs else None
                    time.sleep(0.5)
            if run_id is None:
                raise CutoverError(f"the cutover did not pause at a gate: {out.get('result')}")
            console.print(f"run {run_id} is paused at the access gate")
            refused_401(stack.unauthenticated(paused_run=run_id))
        with step(scenario, "mail reaches InfoCert while the run is paused"):
            box.deliver("target", member.address, _mail("arrived-at-infocert", member.address))
            console.print(f"1 PEC message delivered to {member.address} on infocert after the MX switch")
        with step(scenario, "operator decides: rollback (as `pec-cutover gate decide`, with a one-time code)"):
            operator = plan.operators[0]
            code = current_code(plan.secret(operator.totp_secret).reveal())
            wrong = decide_gate(run_id, "continue", "Somebody Else", "not an operator", "123456")
            console.print(f"a decision by someone the plan does not name: {wrong}")
            if "unknown operator" not in wrong:
                raise CutoverError(f"a decision by an unknown operator was not refused: {wrong}")
            console.print(f"pec-cutover gate decide {run_id} --rollback --operator '{operator.name}' --code ****** "
                          "--reason 'InfoCert webmail down after the switch'")
            console.print(decide_gate(run_id, "rollback", operator.name, "InfoCert webmail down after the switch", code))
            thread.join(600)
            result = out.get("result")
            if isinstance(result, BaseException):
                raise result
            _phases(result)
        deliveries = stop_mail_stream(stream, plan, "the rollback")
        with step(scenario, "independent verification"):
            back = _count_message(box, member.address, "<arrived-at-infocert@pec.rehearsal>")
            console.print(render_status(dns_status(plan, "source"), title="DNS: MX back on Aruba everywhere?"))
            console.print(f"the message that reached InfoCert is on aruba {back} time(s) (expected 1)")
        with step(scenario, "a second rollback started on demand, as a deployment run (as from the UI)"):
            operator = plan.operators[0]
            report = deployment_run("rollback/rollback", plan_path=str(REHEARSAL_PLAN),
                                    reason="second pass while resolvers converge back", operator=operator.name,
                                    operator_code=current_code(plan.secret(operator.totp_secret).reveal()))
            console.print(next((line for line in report.splitlines() if line.startswith("**Verdict")), report[-300:]))
            again = _count_message(box, member.address, "<arrived-at-infocert@pec.rehearsal>")
            console.print(f"after the second rollback the message is on aruba {again} time(s) (expected 1)")
            flow_line, flow_ok = mail_flow(box, "source", deliveries)
    finally:
        stream.stop()  # already stopped after the rollback, unless a step failed before
    box.start_service("webmail")
    ok = result["verdict"] == "ROLLED-BACK" and back == 1 and again == 1 and flow_ok
    return f"{result['verdict']}; mail copied back: {back}; after a second rollback by deployment: {again}; " \
        f"{flow_line}" + ("" if ok else " (UNEXPECTED)")


def start_mail_stream(box: Sandbox, inventory: Inventory, tag: str) -> MailStream:
    """Real mail by the MX: a PEC message every STREAM_INTERVAL_S to the members in turn, resolved through the
    sandbox's resolver before each one and delivered by SMTP to the MTA of the provider it names."""
    pair = box.ca.signer_pair()
    sender = MxSender(box.plan, load_mx_listeners(box.mx_listeners_file))
    log = PREFECT_HOME / "mailflow" / f"{tag}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    stream = MailStream(sender, pec_stream_messages(Signer.load(pair.cert, pair.key), seed=f"rehearsal-{tag}", tag=tag),
                        [m.address for m in inventory.mailboxes], interval_s=STREAM_INTERVAL_S, log=log)
    console.print(f"mail stream started: a PEC message every {STREAM_INTERVAL_S} s, sent by the MX that "
                  f"{box.plan.dns.resolvers[0]} answers at that moment (log: {log})")
    return stream.start()


def stop_mail_stream(stream: MailStream, plan: Plan, what: str) -> list:
    """Let the stream run one cutover TTL and a second past ``what``, then stop it."""
    time.sleep(plan.dns.ttl.cutover + 1)
    deliveries = stream.stop()
    console.print(f"mail stream stopped {plan.dns.ttl.cutover + 1} s after {what}: {len(deliveries)} sent "
                  f"({summarise(deliveries)})")
    return deliveries


def mail_flow(box: Sandbox, side: str, deliveries: list) -> tuple[str, bool]:
    """The proof, by Message-ID and SHA-256, that every message sent is on ``side`` exactly once."""
    proof = prove(box, side, deliveries)
    console.print(proof.line() if proof.ok else f"[red]{proof.line()}[/red]", soft_wrap=True)
    for detail in proof.details:
        console.print(f"  {detail}", soft_wrap=True, markup=False)
    return proof.line(), proof.ok


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    try:
        plan = load_plan(REHEARSAL_PLAN)
        inventory = load_inventory(plan)
        console.print(f"rehearsal of {plan.domain}: {plan.source.name} → {plan.target.name}, {len(inventory)} mailboxes")
        production_path(plan)
        verdicts = {}
        for name, scenario in (("scenario 1: GO", scenario_go), ("scenario 2: NO-GO → rollback", scenario_nogo)):
            before = len(receiver.received())
            verdicts[name] = scenario(plan, inventory)
            got = receiver.received()[before:]
            sent = sum(1 for r in got if r["status"] == 200)
            console.print(f"notifications: {sent} sent, {len(got) - sent} failed "
                          f"({', '.join(r['body']['event'] for r in got) or 'none'})")
            verdicts[name] += f"; notifications: {sent} sent, {len(got) - sent} failed"
            if not got:
                verdicts[name] += " (UNEXPECTED: the ops channel heard nothing)"
        from cutover.evidence import prefect_runs
        runs = prefect_runs(REHEARSAL_PLAN, home=REPO)  # for the evidence bundle, before the server stops
    except CutoverError as exc:
        console.print(f"[red]rehearsal failed:[/red] {exc}")
        return 1
    finally:
        if stack is not None:
            stack.stop()
        receiver.stop()
    table = Table(title="rehearsal: wall time per step")
    for col in ("scenario", "step", "seconds"):
        table.add_column(col)
    for scenario, name, seconds in timings:
        table.add_row(scenario, name, f"{seconds:.1f}")
    console.print(table)
    for scenario, verdict in verdicts.items():
        console.print(f"[bold]{scenario}[/bold]: {verdict}")
    # Issue 16: the auditor's bundle of the whole rehearsal, exported and re-checked (runs read while the server is up).
    from cutover import evidence
    bundle = REPO / ".sandbox" / f"evidence-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        checked = evidence.verify(evidence.export(plan, bundle, runs).out)
    except CutoverError as exc:  # the bundle could not be written: one line, and the rehearsal fails
        console.print(f"[red]evidence: not exported: {exc}[/red]", soft_wrap=True)
        return 1
    console.print(f"evidence: {checked.files} files, manifest verified ({bundle})" if checked.ok else
                  f"[red]evidence: {checked.files} files, manifest NOT verified: {checked.problems}[/red]")
    console.print(f"rehearsal done in {time.monotonic() - started:.0f} s. The sandbox is still up "
                  f"(`.venv/bin/pec-cutover sandbox status`; stop it with `make sandbox-down`).")
    console.print("See the runs, reports and gate decisions:\n"
                  f"  PREFECT_HOME={PREFECT_HOME} .venv/bin/pec-cutover history\n"
                  f"  PREFECT_HOME={PREFECT_HOME} .venv/bin/pec-cutover server start   # then http://127.0.0.1:"
                  f"{stack.port if stack else 10420} (user:password in .sandbox/secrets/prefect-auth)")
    return 0 if checked.ok and all("UNEXPECTED" not in v for v in verdicts.values()) else 1


def _mail(marker: str, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "mittente@pec.example.it"
    msg["To"] = to
    msg["Subject"] = f"POSTA CERTIFICATA: {marker}"
    msg["Message-ID"] = f"<{marker}@pec.rehearsal>"
    msg.set_content(f"Messaggio di posta certificata arrivato durante la giornata di migrazione ({marker}).\n")
    return msg.as_bytes()


def _count_message(box: Sandbox, address: str, message_id: str) -> int:
    client = box.admin_session("source", address)
    try:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["HEADER", "Message-ID", message_id]))
    finally:
        client.logout()


def _catch(fn):
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - handed back to the main thread
        return exc


def _phases(result: dict) -> None:
    table = Table(title=f"cutover run: {result['verdict']}")
    for col in ("phase", "seconds", "status"):
        table.add_column(col)
    for name, seconds, status in result.get("report", []):
        table.add_row(name, str(seconds), status)
    console.print(table)
    for decision in result.get("decisions", []):
        console.print(f"gate: {decision}")
    # What moved with the MX (issue 18): after GO on the target, after a rollback back on the source.
    from cutover.clients import surroundings_line
    if moved := result.get("surroundings") or (result.get("rollback") or {}).get("surroundings"):
        console.print(surroundings_line(moved))


def _status(box: Sandbox) -> None:
    table = Table(title="sandbox")
    for col in ("service", "port", "pid", "state"):
        table.add_column(col)
    for s in box.status():
        table.add_row(s.name, str(s.port), str(s.pid or ""), "up" if s.running else "DOWN")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
