"""Results as data: what every probe and check returns (rendered to tables and markdown at the edge)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """One probe's answer. An unhealthy target is ``ok=False`` with a reason, never an exception."""

    name: str
    ok: bool
    expected: str
    observed: str
    target: str = ""
    detail: str = ""
    reason: str = ""  # classification when not ok: auth-failure, tls-failure, timeout, refused, mismatch, ...
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "target": self.target,
            "ok": "yes" if self.ok else "NO",
            "expected": self.expected,
            "observed": self.observed,
            "reason": self.reason,
            "detail": self.detail,
            "seconds": round(self.duration_s, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured markdown table from rows of equal keys (pipes escaped)."""
    if not rows:
        return "_(none)_\n"
    keys = list(rows[0])
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"
