"""Results of a copy as data: per mailbox, for the whole run, and progress events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


Status = Literal["verified", "failed", "dry-run", "not-verified"]


@dataclass
class FolderReport:
    """One source folder and where it went."""

    source: str
    target: str
    messages: int = 0
    bytes: int = 0
    copied: int = 0
    skipped: int = 0
    missing: int = 0
    verified: bool = False
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0  # extra copies of source messages on the target (never verified)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (source UID, the server's words): skipped
    approved: int = 0  # skipped messages an operator approved leaving behind (not counted missing)
    folder_refused: bool = False  # the target would not create the folder: every message is missing
    flags_repaired: int = 0  # copies this tool made whose flags differed from the source's: set again by STORE
    dates_differ: int = 0  # copies this tool made whose INTERNALDATE differs from the source's (STORE cannot fix)
    mapping_changed: bool = False  # its mapping would change since the first copy: not copied until ``--remap``
    late: int = 0  # after the switch: messages copied that reached the source after it (above the source mark)
    before_switch: int = 0  # after the switch: messages copied that were there before it (the final delta's)
    gone: int = 0  # copies this tool made that the member has since deleted or moved on that side (not missing)


@dataclass
class MailboxReport:
    """What happened to one mailbox. ``verified`` means every source message has an identical target twin."""

    address: str
    status: Status = "failed"
    folders: int = 0
    messages: int = 0
    bytes: int = 0
    copied: int = 0
    skipped: int = 0
    missing: int = 0
    verified: bool = False
    reason: str = ""
    error: str = ""
    seconds: float = 0.0
    direction: str = "forward"
    folder_reports: list[FolderReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0  # extra copies of source messages on the target (never verified)
    logins: dict[str, str] = field(default_factory=dict)  # {side: login} where it is not the address
    refused: int = 0  # "N skipped": messages the target permanently refused this run (missing unless approved)
    approved: int = 0  # skipped messages an operator approved (``copy approve-skipped``): not missing
    approvals: list[str] = field(default_factory=list)  # "operator: reason" of each approval, for every report
    late: int = 0  # after the switch: messages that reached the source after it, copied in this run
    flags_repaired: int = 0  # copies this tool made whose flags differed from the source's: set again by STORE
    dates_differ: int = 0  # copies this tool made whose INTERNALDATE differs from the source's
    before_switch: int = 0  # after the switch: messages from before it copied in this run (the final delta's)
    gone: int = 0  # copies the member deleted or moved since (after the switch they are theirs: not missing)
    after_switch: bool = False  # a switch mark to the target was in the ledger: copied once is never copied again
    source_name: str = ""  # the provider read (for "late mail: N messages that reached <source> after the switch")

    def as_row(self) -> dict[str, Any]:
        return {
            "mailbox": self.address,
            "login": ", ".join(f"{side}: {login}" for side, login in self.logins.items()),
            "status": self.status,
            "folders": self.folders,
            "messages": self.messages,
            "MB": round(self.bytes / 1e6, 1),
            "copied": self.copied,
            "skipped": self.skipped,
            "missing": self.missing,
            "refused": self.refused,
            "approved skipped": self.approved,
            "verified": "yes" if self.verified else "NO",
            "reason": self.reason,
            "error": self.error,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class CopyReport:
    """Every mailbox of one run."""

    mailboxes: list[MailboxReport] = field(default_factory=list)
    seconds: float = 0.0
    direction: str = "forward"
    dry_run: bool = False
    verify_only: bool = False

    @property
    def verified_count(self) -> int:
        return sum(1 for m in self.mailboxes if m.verified)

    @property
    def unverified_count(self) -> int:
        return len(self.mailboxes) - self.verified_count

    @property
    def missing_messages(self) -> int:
        return sum(m.missing for m in self.mailboxes)

    @property
    def total_messages(self) -> int:
        return sum(m.messages for m in self.mailboxes)

    @property
    def total_bytes(self) -> int:
        return sum(m.bytes for m in self.mailboxes)

    @property
    def copied_messages(self) -> int:
        return sum(m.copied for m in self.mailboxes)

    def late_mail(self) -> str | None:
        """``late mail: N messages that reached <source> after the switch`` for a forward run after the switch."""
        after = [m for m in self.mailboxes if m.after_switch]
        if self.direction != "forward" or not after:
            return None
        late = sum(m.late for m in after)
        before = sum(m.before_switch for m in after)
        gone = sum(m.gone for m in after)
        line = f"late mail: {late} messages that reached {after[0].source_name or 'the source'} after the switch"
        if before:
            line += f"; {before} from before the switch copied now"
        if gone:
            line += f"; {gone} copies deleted or moved by members on the target, not copied again"
        return line

    @property
    def ok(self) -> bool:
        return bool(self.mailboxes) and all(m.verified for m in self.mailboxes)

    def rows(self) -> list[dict[str, Any]]:
        return [m.as_row() for m in self.mailboxes]

    def markdown(self, *, attention_limit: int = 50) -> str:
        """Totals and the mailboxes that need attention (at most ``attention_limit`` lines): a report that stays
        readable at any size. Every mailbox is in the per-mailbox table artifact (:meth:`rows`)."""
        mode = "dry run" if self.dry_run else "verification only" if self.verify_only else "copy"
        rate = self.total_bytes / 1e6 / self.seconds if self.seconds else 0.0
        failed = [m for m in self.mailboxes if not m.verified]
        lines = [
            f"## Mail {mode} ({self.direction})",
            "",
            f"- mailboxes: {len(self.mailboxes)}, verified {self.verified_count}, not verified {self.unverified_count}",
            f"- messages: {self.total_messages} ({self.total_bytes / 1e6:.1f} MB), copied {self.copied_messages}, "
            f"missing {self.missing_messages}, {sum(m.refused for m in self.mailboxes)} skipped (refused by the "
            f"target), {sum(m.approved for m in self.mailboxes)} skipped and approved",
            *([f"- {self.late_mail()}"] if self.late_mail() else []),
            f"- time: {self.seconds:.1f} s ({rate:.1f} MB/s)",
            f"- result: {'every mailbox verified' if self.ok else 'NOT all mailboxes verified'}",
        ]
        if failed:
            lines.append("")
            lines.append(f"Needs attention ({len(failed)}):")
            lines += [f"- `{m.address}`{_logins(m)}: {m.status}, {m.reason or 'missing messages'}: {m.error}"
                      for m in failed[:attention_limit]]
            if len(failed) > attention_limit:
                lines.append(f"- ... and {len(failed) - attention_limit} more: see the per-mailbox table")
        approved = [m for m in self.mailboxes if m.approvals]
        if approved:
            lines += ["", "Skipped messages approved by an operator:"]
            lines += [f"- `{m.address}`: {m.approved} skipped; " + "; ".join(m.approvals) for m in approved]
        return "\n".join(lines) + "\n"


def _logins(m: MailboxReport) -> str:
    return f" (logs in as {', '.join(f'{v} on the {k}' for k, v in m.logins.items())})" if m.logins else ""


@dataclass(frozen=True)
class ProgressEvent:
    """Where a run stands; sent often (after every batch and every mailbox)."""

    mailboxes_done: int
    mailboxes_total: int
    messages_done: int
    bytes_done: int
    current: str = ""
    waiting_s: float = 0.0  # > 0: ``current`` backs off this long after a "slow down" answer (``detail``)
    detail: str = ""
