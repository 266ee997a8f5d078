"""The evidence bundle an auditor keeps: every run's report and gate decisions, per-mailbox tables, the ledger's
per-message proof, the DNS journal, and a manifest with the SHA-256 of every file.

Plain files (markdown, CSV, JSON) a reader needs no tool for; ``MANIFEST.sha256`` is in ``sha256sum`` format, so
``sha256sum -c MANIFEST.sha256`` re-checks it anywhere. Nothing secret goes in: plans hold references, the ledger
holds sizes, digests and UIDs, reports and artifacts are already searched for secrets by the tests.
Prefect is read (lazily) only by :func:`prefect_runs`; the rest runs without it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from cutover.errors import CutoverError, LedgerError, MailboxError
from cutover.plan import Plan

MANIFEST = "MANIFEST.sha256"
FLOW_NAMES = ("readiness", "prestage", "cutover", "rollback")


class EvidenceError(CutoverError):
    """The bundle cannot be written or read (not a finding about its content: those are in the result)."""


@dataclass(frozen=True)
class Artifact:
    key: str
    type: str
    description: str
    data: Any


@dataclass(frozen=True)
class RunRecord:
    """One flow run from Prefect's history with its artifacts (reports, gate decisions, tables)."""

    id: str
    flow: str
    name: str
    state: str
    start: str
    end: str
    artifacts: list[Artifact] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: int
    runs: int
    messages: int


@dataclass
class VerifyResult:
    files: int = 0
    problems: list[str] = field(default_factory=list)
    sampled: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# ----- export -----------------------------------------------------------------------------------

def export(plan: Plan, out: Path, runs: Iterable[RunRecord] = ()) -> ExportResult:
    """Write the bundle into ``out`` (must not exist or be empty) and its manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EvidenceError(f"{out} is not empty: export into a new directory (a bundle is never overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        runs = list(runs)
        _write_json(out / "plan-summary.json", dict(plan.summary()) | {"exported_at": _now()})
        _export_runs(out / "runs", runs)
        if plan.reports_dir is not None and plan.reports_dir.is_dir():
            for src in sorted(plan.reports_dir.iterdir()):
                if src.is_file() and src.suffix in (".md", ".csv"):
                    (out / "reports").mkdir(exist_ok=True)
                    shutil.copyfile(src, out / "reports" / src.name)
        messages = _export_ledger(plan, out / "ledger")
        _export_dns(plan, out / "dns")
        (out / "README.txt").write_text(_README.format(domain=plan.domain, manifest=MANIFEST), encoding="utf-8")
        files = write_manifest(out)
    except OSError as exc:
        raise EvidenceError(f"cannot write the evidence bundle in {out}: {exc.strerror or exc}") from None
    return ExportResult(out, files, len(runs), messages)


def _export_runs(directory: Path, runs: list[RunRecord]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "index.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run id", "flow", "name", "state", "start", "end", "artifacts"])
        for run in runs:
            writer.writerow([run.id, run.flow, run.name, run.state, run.start, run.end, len(run.artifacts)])
    for run in runs:
        folder = directory / f"{run.flow}-{run.id}"
        folder.mkdir()
        for n, art in enumerate(run.artifacts, 1):
            name = f"{n:02d}-{art.key or art.type}"
            if art.type == "markdown":
                (folder / f"{name}.md").write_text(str(art.data), encoding="utf-8")
            else:
                data = json.loads(art.data) if isinstance(art.data, str) and art.type == "table" else art.data
                _write_json(folder / f"{name}.json", {"type": art.type, "description": art.description, "data": data})


_LEDGER_QUERIES = {
    "messages.csv": ("SELECT address, direction, src_folder, src_uidvalidity, src_uid, tgt_folder, tgt_uidvalidity, "
                     "tgt_uid, size, sha256, state, verified, at AS copied_at, {verified_at} AS verified_at "
                     "FROM messages ORDER BY address, direction, src_folder, src_uid"),
    "folders.csv": ("SELECT address, direction, src_folder, src_uidvalidity, tgt_folder, tgt_uidvalidity, highest_uid, "
                    "updated FROM folders ORDER BY address, direction, src_folder"),
    "events.csv": "SELECT address, direction, folder, kind, detail, at FROM events ORDER BY rowid",
}
_TIME_COLUMNS = {"copied_at", "verified_at", "updated", "at"}


def _export_shared_ledger(plan: Plan, directory: Path) -> int:
    """The same CSV files from a PostgreSQL ledger (``ledger: {url: ...}``)."""
    from cutover.ledger import open_ledger

    directory.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(plan)
    try:
        count = 0
        for name in _LEDGER_QUERIES:
            header, rows = ledger.export(name.removesuffix(".csv"))
            written = _write_ledger_csv(directory / name, header, rows)
            count += written if name == "messages.csv" else 0
        return count
    finally:
        ledger.close()


def _write_ledger_csv(path: Path, header: list[str], rows) -> int:
    """One ledger table as CSV (times in UTC ISO 8601); the number of rows written."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_iso(v) if h in _TIME_COLUMNS else v for h, v in zip(header, row)])
            count += 1
    return count


def _export_ledger(plan: Plan, directory: Path) -> int:
    """The ledger's per-message proof as CSV (times in UTC ISO 8601); the number of message rows."""
    if plan.ledger_url:
        return _export_shared_ledger(plan, directory)
    if not plan.ledger.is_file():
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(f"file:{plan.ledger}?mode=ro", uri=True)
        try:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
            count = 0
            for name, sql in _LEDGER_QUERIES.items():
                cursor = conn.execute(sql.format(verified_at="verified_at" if "verified_at" in columns else "NULL"))
                written = _write_ledger_csv(directory / name, [d[0] for d in cursor.description], cursor)
                count += written if name == "messages.csv" else 0
            return count
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger {plan.ledger}: cannot be read for the evidence bundle ({exc})") from None


def _export_dns(plan: Plan, directory: Path) -> None:
    from cutover.dnschange import journal_path, read_zone  # the DNS evidence: journal, and what is served now

    directory.mkdir(parents=True, exist_ok=True)
    if journal_path(plan).is_file():
        shutil.copyfile(journal_path(plan), directory / "dns-journal.jsonl")
    try:
        zone = read_zone(plan)
        now = {"mx": [f"{p} {h}" for p, h in zone.mx], "mx_ttl": zone.mx_ttl, "serial": zone.serial}
    except CutoverError as exc:
        now = {"error": str(exc)}
    _write_json(directory / "served-at-export.json", {"zone": plan.dns.zone, "primary": str(plan.dns.primary),
                                                      "asked_at": _now(), **now})


def write_manifest(directory: Path) -> int:
    """``MANIFEST.sha256`` over every other file (sorted, POSIX paths); the number of files listed."""
    files = _files(directory)
    (directory / MANIFEST).write_text("".join(f"{_sha256(directory / f)}  {f}\n" for f in files), encoding="utf-8")
    return len(files)


# ----- verify -----------------------------------------------------------------------------------

def verify(directory: Path) -> VerifyResult:
    """Re-check the manifest: every listed file present with its SHA-256, no file unlisted."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise EvidenceError(f"{directory} has no {MANIFEST}: not an evidence bundle (or the manifest was removed)")
    result = VerifyResult()
    listed: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            result.problems.append(f"{MANIFEST} line {n}: not '<sha256>  <path>'")
            continue
        listed[name] = digest
    for name, digest in listed.items():
        path = directory / name
        if not path.is_file():
            result.problems.append(f"{name}: listed in the manifest, missing")
        elif _sha256(path) != digest:
            result.problems.append(f"{name}: SHA-256 differs from the manifest (changed after export)")
    result.problems += [f"{name}: not in the manifest (added after export)" for name in _files(directory)
                        if name not in listed]
    result.files = len(listed)
    return result


def sample_target(plan: Plan, directory: Path, result: VerifyResult, *, sample: int = 20, seed: int | None = None) -> None:
    """Fetch ``sample`` recorded messages from the target (the plan's credentials) and compare their SHA-256
    with the bundle's ledger; every difference becomes a problem of ``result``."""
    from cutover.imap import session
    from cutover.inventory import load_inventory

    path = Path(directory) / "ledger" / "messages.csv"
    if not path.is_file():
        result.problems.append("ledger/messages.csv: absent, nothing to sample")
        return
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["direction"] == "forward" and r["state"] in ("copied", "matched")
                and r["verified"] == "1" and r["tgt_uid"]]
    chosen = random.Random(seed).sample(rows, min(sample, len(rows)))
    inventory = load_inventory(plan)
    by_address: dict[str, list[dict[str, str]]] = {}
    for row in chosen:
        by_address.setdefault(row["address"], []).append(row)
    for address, picked in sorted(by_address.items()):
        try:
            with session(plan, "target", inventory.get(address)) as client:
                for row in picked:
                    where = f"{address} {row['tgt_folder']} UID {row['tgt_uid']}"
                    status = client.select_folder(row["tgt_folder"], readonly=True)
                    if str(status.get(b"UIDVALIDITY")) != row["tgt_uidvalidity"]:
                        result.problems.append(f"{where}: folder UIDVALIDITY is {status.get(b'UIDVALIDITY')}, "
                                               f"recorded {row['tgt_uidvalidity']}")
                        continue
                    data = client.fetch([int(row["tgt_uid"])], ["BODY.PEEK[]"]).get(int(row["tgt_uid"]))
                    if data is None or b"BODY[]" not in data:
                        result.problems.append(f"{where}: not on the target")
                    elif hashlib.sha256(data[b"BODY[]"]).hexdigest() != row["sha256"]:
                        result.problems.append(f"{where}: SHA-256 differs from the recorded digest")
                    result.sampled += 1
        except (MailboxError, CutoverError) as exc:
            result.problems.append(f"{address}: cannot sample on the target ({exc})")


# ----- Prefect's run history (lazy: cutover/ does not import Prefect at module level) ------------

def prefect_runs(plan_path: Path, home: Path | None = None) -> list[RunRecord]:
    """Every run of the four flows whose ``plan_path`` is this plan, with its artifacts, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName,
                                                FlowRunFilter, FlowRunFilterParentFlowRunId)
    from prefect.client.schemas.sorting import FlowRunSort

    want = Path(plan_path).resolve()
    base = home or Path(os.environ.get("PEC_CUTOVER_HOME") or Path.cwd())
    out: list[RunRecord] = []
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_NAMES))))}
        if not flows:
            return []
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_NAMES))),
                                     sort=FlowRunSort.START_TIME_ASC)
        for run in runs:
            given = (run.parameters or {}).get("plan_path")
            if not given or (Path(given) if Path(given).is_absolute() else base / given).resolve() != want:
                continue
            # The run's own artifacts and its subflows' (the copy's per-mailbox tables live in the "copy mailboxes"
            # subflow runs); a subflow that is one of the four flows (a gate's rollback) is a run of its own here.
            ids, todo = [run.id], [run.id]
            while todo:
                children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=todo)))
                todo = [c.id for c in children if c.flow_id not in flows and c.id not in ids]
                ids += todo
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
            out.append(RunRecord(
                id=str(run.id), flow=flows.get(run.flow_id, "?"), name=run.name, state=run.state_name or "?",
                start=run.start_time.isoformat() if run.start_time else "",
                end=run.end_time.isoformat() if run.end_time else "",
                artifacts=[Artifact(a.key or "", a.type or "", a.description or "", a.data)
                           for a in sorted(artifacts, key=lambda a: a.created or datetime.min.replace(tzinfo=timezone.utc))]))
    return out


# ----- helpers ----------------------------------------------------------------------------------

def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
                  and p.relative_to(directory).as_posix() != MANIFEST)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _iso(value: Any) -> Any:
    if isinstance(value, (int, float)) and value:
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_README = """Evidence bundle of the PEC migration of {domain}, written by `pec-cutover evidence export`.

plan-summary.json      the plan's key facts (no secret: plans hold references only)
runs/index.csv         every readiness, pre-stage, cutover and rollback run (Prefect's run history)
runs/<flow>-<run id>/  that run's artifacts: the markdown report, gate decisions (who, why), per-mailbox tables
reports/               the markdown reports and readiness CSVs as written to the plan's reports_dir
ledger/messages.csv    per message: address, folder, source and target UID, size, SHA-256, state, verified,
                       copied_at and verified_at (UTC)
ledger/folders.csv     per folder: UIDVALIDITY on both sides, highest copied UID
dns/dns-journal.jsonl  every TTL change and served-TTL measurement; dns/served-at-export.json: the MX served then
{manifest}        SHA-256 of every other file: check with `sha256sum -c {manifest}` or
                       `pec-cutover evidence verify DIR` (which can also sample messages on the target)
"""


__all__ = ["export", "verify", "sample_target", "prefect_runs", "write_manifest", "ExportResult", "VerifyResult",
           "RunRecord", "Artifact", "EvidenceError", "MANIFEST"]
