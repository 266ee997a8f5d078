"""Pre-stage copy (days before, repeatable): every mailbox copied and verified, incrementally."""

from __future__ import annotations

from prefect import flow

from cutover import freeze
from cutover.errors import VerificationFailed
from cutover.inventory import load_inventory
from cutover.plan import load_plan
from cutover.report import RunReport
from flows._artifacts import announce, publish_report, run_name_of
from flows._copy import copy_all

DEFAULT_PLAN = "inventory/rehearsal/plan.yaml"


@flow(name="prestage", flow_run_name=run_name_of("prestage"), persist_result=False)
def prestage(plan_path: str = DEFAULT_PLAN, mailboxes: list[str] | None = None) -> dict:
    plan = load_plan(plan_path)
    inventory = load_inventory(plan)
    selected = inventory.select(mailboxes)
    freeze.ensure_not_frozen(plan, "pre-stage copy")
    report = RunReport(f"Pre-stage copy of {len(selected)} mailboxes ({plan.source.name} → {plan.target.name})")
    with report.phase("copy and verify") as phase:
        copy = copy_all(plan_path, plan, list(selected), direction="forward", label="prestage")
        phase.lines.append(f"{copy.verified_count}/{len(copy.mailboxes)} mailboxes verified, "
                           f"{copy.total_messages} messages, {copy.total_bytes / 1e6:.1f} MB in {copy.seconds:.1f} s")
        phase.sections.append(copy.markdown())
        if not copy.ok:
            phase.status = "failed"
    report.verdict = "all mailboxes verified" if copy.ok else f"{copy.unverified_count} mailboxes NOT verified"
    if not copy.ok:
        announce(plan, report, "run-failed", f"pec-cutover: pre-stage copy of {plan.domain}: {report.verdict}",
                 verdict=report.verdict)
    publish_report(plan, report, "prestage-report")
    if not copy.ok:
        failed = [m for m in copy.mailboxes if not m.verified]
        raise VerificationFailed(", ".join(m.address for m in failed[:10]),
                                 f"{len(failed)} mailbox(es) not verified; see the prestage report")
    out = {"verified": copy.verified_count, "messages": copy.total_messages, "bytes": copy.total_bytes}
    if workers := getattr(copy, "workers", None):  # copied on a work pool's workers: mailboxes per worker
        out["workers"] = workers
    return out
